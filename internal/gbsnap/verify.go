package gbsnap

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Export is a verified export directory.
type Export struct {
	Dir      string
	Gbsnap   string // path of the .gbsnap file
	Metadata pb.Snapshot
	Envelope Envelope
	Stream   Stream
}

// VerifyGbsnap reads the .gbsnap in r (size bytes) to its end and checks
// the envelope (header, every block checksum, the tail, the payload
// checksum, the compression framing, the session table) and the Keel
// stream inside it.
func VerifyGbsnap(r io.ReaderAt, size int64) (Envelope, Stream, error) {
	er, err := OpenEnvelope(r, size)
	if err != nil {
		return Envelope{}, Stream{}, err
	}
	sessions, err := er.ReadSessions()
	if err != nil {
		return Envelope{}, Stream{}, err
	}
	s, err := VerifyStream(er.payload)
	if err != nil {
		// A stream that ends early, or whose bytes fail a check, may be a
		// symptom of a damaged block or a failing read under it: report
		// the cause.
		if er.blocks.ioErr != nil {
			return Envelope{}, Stream{}, er.blocks.ioErr
		}
		var inner error = err
		if !errors.Is(err, ErrDamaged) {
			inner = er.payloadErr("Keel stream", err)
		}
		return Envelope{}, Stream{}, inner
	}
	env, err := er.Finish()
	if err != nil {
		return Envelope{}, Stream{}, err
	}
	env.Sessions = sessions
	return env, s, nil
}

// VerifyExport verifies the export directory dir (snapshot-<index>/, the
// srcDir of tools.ImportSnapshot) end to end: it holds exactly one .gbsnap
// and a snapshot.metadata, the metadata decodes, VerifyGbsnap accepts the
// .gbsnap, and the metadata describes it (CheckMetadata). progress, when
// not nil, is told how many bytes of the .gbsnap each read took.
func VerifyExport(dir string, progress func(n int)) (Export, error) {
	exp := Export{Dir: dir}
	var err error
	if exp.Gbsnap, err = findGbsnap(dir); err != nil {
		return exp, err
	}
	metaPath := filepath.Join(dir, MetadataFilename)
	if exp.Metadata, err = ReadMetadata(metaPath); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return exp, fmt.Errorf("%w: %s: incomplete export: no %s", ErrDamaged, dir, MetadataFilename)
		}
		return exp, fmt.Errorf("%s: %w", metaPath, err)
	}
	if exp.Envelope, exp.Stream, err = VerifyFile(exp.Gbsnap, progress); err != nil {
		return exp, err
	}
	if err := CheckMetadata(exp.Metadata, exp.Gbsnap, exp.Envelope, exp.Stream); err != nil {
		return exp, fmt.Errorf("%s: %w", metaPath, err)
	}
	return exp, nil
}

// VerifyFile opens the .gbsnap at path and runs VerifyGbsnap over it;
// progress is as for VerifyExport. Errors name the file.
func VerifyFile(path string, progress func(n int)) (Envelope, Stream, error) {
	f, err := os.Open(path)
	if err != nil {
		return Envelope{}, Stream{}, fmt.Errorf("keel/gbsnap: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Envelope{}, Stream{}, fmt.Errorf("keel/gbsnap: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Envelope{}, Stream{}, fmt.Errorf("%w: %s is not a regular file", ErrDamaged, path)
	}
	var r io.ReaderAt = f
	if progress != nil {
		r = readerAtFunc(func(p []byte, off int64) (int, error) {
			n, err := f.ReadAt(p, off)
			progress(n)
			return n, err
		})
	}
	env, s, err := VerifyGbsnap(r, st.Size())
	if err != nil {
		return Envelope{}, Stream{}, fmt.Errorf("%s: %w", path, err)
	}
	return env, s, nil
}

// findGbsnap returns the one .gbsnap in dir, chosen as tools.ImportSnapshot
// chooses it: any entry with the suffix that is not a directory.
func findGbsnap(dir string) (string, error) {
	names, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("keel/gbsnap: %w", err)
	}
	var found []string
	for _, e := range names {
		if !strings.HasSuffix(e.Name(), SnapshotSuffix) {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", fmt.Errorf("keel/gbsnap: %w", err)
		}
		if !st.IsDir() {
			found = append(found, e.Name())
		}
	}
	sort.Strings(found)
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w: %s: incomplete export: no %s file", ErrDamaged, dir, SnapshotSuffix)
	case 1:
		return filepath.Join(dir, found[0]), nil
	default:
		return "", fmt.Errorf("%w: %s: %d %s files (%s); Dragonboat's import needs exactly one",
			ErrDamaged, dir, len(found), SnapshotSuffix, strings.Join(found, ", "))
	}
}

type readerAtFunc func(p []byte, off int64) (int, error)

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }
