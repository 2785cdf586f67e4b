package gbsnap

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// File names inside an export directory.
const (
	MetadataFilename = "snapshot.metadata"
	SnapshotSuffix   = ".gbsnap"
	// maxMetadataSize bounds what is read of an untrusted metadata file; a
	// real one is a few hundred bytes.
	maxMetadataSize = 1 << 20
)

// FlagFileHash is Dragonboat's flag-file checksum: the last 8 bytes of MD5.
func FlagFileHash(data []byte) []byte {
	s := md5.Sum(data)
	return s[8:]
}

func metaErr(format string, args ...any) error {
	return fmt.Errorf("%w: snapshot metadata: %s", ErrDamaged, fmt.Sprintf(format, args...))
}

// ParseMetadata checks and decodes the contents of a snapshot.metadata file.
func ParseMetadata(data []byte) (pb.Snapshot, error) {
	var ss pb.Snapshot
	if len(data) < 8 {
		return ss, metaErr("%d bytes, too short", len(data))
	}
	if !bytes.Equal(data[:8], FlagFileHash(data[8:])) {
		return ss, metaErr("checksum mismatch")
	}
	if err := ss.Unmarshal(data[8:]); err != nil {
		return pb.Snapshot{}, metaErr("does not decode: %v", err)
	}
	return ss, nil
}

// ReadMetadata reads and checks the snapshot.metadata file at path.
func ReadMetadata(path string) (pb.Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return pb.Snapshot{}, fmt.Errorf("keel/gbsnap: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxMetadataSize+1))
	if err != nil {
		return pb.Snapshot{}, fmt.Errorf("keel/gbsnap: read %s: %w", path, err)
	}
	if len(data) > maxMetadataSize {
		return pb.Snapshot{}, metaErr("more than %d bytes, too large for snapshot metadata", maxMetadataSize)
	}
	return ParseMetadata(data)
}

// WriteMetadata writes ss as a new flag file at path and fsyncs it.
func WriteMetadata(path string, ss *pb.Snapshot) error {
	data, err := ss.Marshal()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(FlagFileHash(data), data...)); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// CheckMetadata checks that ss describes the .gbsnap named gbsnapName
// (whose envelope is env and whose Keel stream is s) the way
// tools.ImportSnapshot and Keel's RecoverFromSnapshot need.
func CheckMetadata(ss pb.Snapshot, gbsnapName string, env Envelope, s Stream) error {
	var problem error
	switch {
	// Keel's index is the state machine's applied index at PrepareSnapshot;
	// Dragonboat's may be higher when the last entries never reach the state
	// machine (membership changes, a new leader's empty entry). It can never
	// be lower.
	case ss.Index < s.SnapshotIndex:
		problem = fmt.Errorf("index %d is below the stream's snapshot index %d", ss.Index, s.SnapshotIndex)
	case ss.ShardID != s.ShardID:
		problem = fmt.Errorf("shard %d, the stream's shard is %d", ss.ShardID, s.ShardID)
	case ss.FileSize != env.FileSize:
		problem = fmt.Errorf("file size %d, %s is %d bytes", ss.FileSize, filepath.Base(gbsnapName), env.FileSize)
	case !bytes.Equal(ss.Checksum, env.Checksum):
		problem = fmt.Errorf("checksum %x, the payload's is %x", ss.Checksum, env.Checksum)
	case ss.Type != pb.OnDiskStateMachine:
		problem = fmt.Errorf("state machine type %s, Keel's is %s", ss.Type, pb.OnDiskStateMachine)
	case ss.Dummy || ss.Witness:
		problem = errors.New("describes a dummy or witness snapshot, which holds no data")
	case ss.Term == 0:
		problem = errors.New("term is 0")
	case len(ss.Membership.Addresses) == 0:
		problem = errors.New("has no members")
	case len(ss.Files) > 0:
		problem = fmt.Errorf("lists %d external files; Keel writes none", len(ss.Files))
	case filepath.Base(ss.Filepath) != filepath.Base(gbsnapName):
		// tools.ImportSnapshot names the imported file after the metadata.
		problem = fmt.Errorf("names %s, the file is %s", filepath.Base(ss.Filepath), filepath.Base(gbsnapName))
	}
	if problem != nil {
		return metaErr("%v", problem)
	}
	return nil
}
