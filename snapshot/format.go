package snapshot

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
)

// Stream format constants (see the package documentation for the layout).
const (
	// FormatVersion is the stream format this package writes and reads.
	FormatVersion uint32 = 1
	// HeaderSize is the size of the fixed stream header in bytes.
	HeaderSize = 60
	// TrailerSize is the size of the stream trailer in bytes.
	TrailerSize = 12
	// ChunkSize is the largest chunk a writer emits and a reader accepts.
	// It is also the only buffer either side holds.
	ChunkSize = 1 << 20
	// MaxNameLen bounds a file name in the stream.
	MaxNameLen = 128
)

var (
	streamMagic  = [8]byte{'K', 'E', 'E', 'L', 'S', 'N', 'A', 'P'}
	trailerMagic = [8]byte{'K', 'E', 'E', 'L', 'E', 'N', 'D', 0}
	castagnoli   = crc32.MakeTable(crc32.Castagnoli)
)

// Default limits for a received stream.
const (
	// DefaultMaxFiles is far above what a checkpoint holds (Pebble keeps
	// tens of thousands of sstables at most for terabytes of data) and small
	// enough that the set of names seen stays a few MiB.
	DefaultMaxFiles = 1 << 17
	// DefaultMaxBytes is 1 TiB: Keel's images are far smaller; a header
	// claiming more is refused before anything is written.
	DefaultMaxBytes = 1 << 40
	// DefaultTouchedBudget bounds the memory a pending capture spends on
	// recording the keys Update writes while the checkpoint is taken.
	DefaultTouchedBudget = 16 << 20
)

// Options are limits and budgets for captures and installs. The zero value
// gives the defaults above.
type Options struct {
	// MaxFiles is the largest file count a received stream may declare.
	MaxFiles uint32
	// MaxBytes is the largest total file size a received stream may declare.
	MaxBytes uint64
	// TouchedBudget is how many bytes of keys one capture records before it
	// gives up recording and rewinds the whole image instead (correct, but
	// it reads every key).
	TouchedBudget int
	// StreamBytesPerSecond caps how fast a saved snapshot is written to
	// Dragonboat (streams to followers and exports); 0 means no cap.
	StreamBytesPerSecond int64
	// ReserveBytes is the free space a received image must leave on the
	// receiver's filesystem: a stream whose header declares more than the
	// free space less this is refused with ErrNoSpace before a byte is
	// written. 0 still refuses a stream that cannot fit at all. Skipped
	// when the filesystem cannot report its usage (in-memory test FS).
	ReserveBytes uint64
}

func (o Options) withDefaults() Options {
	if o.MaxFiles == 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.TouchedBudget <= 0 {
		o.TouchedBudget = DefaultTouchedBudget
	}
	return o
}

// Header is the fixed header of a stream.
type Header struct {
	// ShardID is the shard the image belongs to; a receiver refuses a
	// stream for another shard.
	ShardID uint64
	// ReplicaID is the sender's replica (informational).
	ReplicaID uint64
	// SnapshotIndex is the applied index at PrepareSnapshot.
	SnapshotIndex uint64
	// ImageAppliedIndex is the applied index recorded inside the image.
	// Keel writes exact images, so it equals SnapshotIndex.
	ImageAppliedIndex uint64
	// FileCount is the number of files that follow.
	FileCount uint32
	// TotalBytes is the sum of the files' sizes.
	TotalBytes uint64
}

func (h Header) encode() [HeaderSize]byte {
	var b [HeaderSize]byte
	copy(b[0:8], streamMagic[:])
	binary.BigEndian.PutUint32(b[8:12], FormatVersion)
	binary.BigEndian.PutUint32(b[12:16], h.FileCount)
	binary.BigEndian.PutUint64(b[16:24], h.ShardID)
	binary.BigEndian.PutUint64(b[24:32], h.ReplicaID)
	binary.BigEndian.PutUint64(b[32:40], h.SnapshotIndex)
	binary.BigEndian.PutUint64(b[40:48], h.ImageAppliedIndex)
	binary.BigEndian.PutUint64(b[48:56], h.TotalBytes)
	binary.BigEndian.PutUint32(b[56:60], crc32.Checksum(b[:56], castagnoli))
	return b
}

func decodeHeader(b []byte) (Header, error) {
	if len(b) != HeaderSize {
		return Header{}, fmt.Errorf("%w: header is %d bytes", ErrCorrupt, len(b))
	}
	if [8]byte(b[0:8]) != streamMagic {
		return Header{}, fmt.Errorf("%w: bad magic %q", ErrCorrupt, b[0:8])
	}
	if got, want := binary.BigEndian.Uint32(b[56:60]), crc32.Checksum(b[:56], castagnoli); got != want {
		return Header{}, fmt.Errorf("%w: header checksum %08x, computed %08x", ErrCorrupt, got, want)
	}
	if v := binary.BigEndian.Uint32(b[8:12]); v != FormatVersion {
		return Header{}, fmt.Errorf("%w: stream format version %d, this Keel reads %d", ErrCorrupt, v, FormatVersion)
	}
	return Header{
		FileCount:         binary.BigEndian.Uint32(b[12:16]),
		ShardID:           binary.BigEndian.Uint64(b[16:24]),
		ReplicaID:         binary.BigEndian.Uint64(b[24:32]),
		SnapshotIndex:     binary.BigEndian.Uint64(b[32:40]),
		ImageAppliedIndex: binary.BigEndian.Uint64(b[40:48]),
		TotalBytes:        binary.BigEndian.Uint64(b[48:56]),
	}, nil
}

// fileHeader is name length (2), name, size (8), CRC32C of those (4).
func encodeFileHeader(name string, size uint64) []byte {
	b := make([]byte, 0, 2+len(name)+8+4)
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// ValidFileName reports whether name is a plain Pebble file kind that a
// checkpoint (or a database opened from one) contains: NNNNNN.sst,
// NNNNNN.blob, NNNNNN.log (or NNNNNN-NNN.log), MANIFEST-NNNNNN,
// OPTIONS-NNNNNN, and marker.<kind>.NNNNNN.<value> files. Anything else,
// including separators, "..", and names starting with a dot, is refused.
func ValidFileName(name string) bool {
	if name == "" || len(name) > MaxNameLen || strings.Contains(name, "..") || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '_'
		if !ok {
			return false
		}
	}
	switch {
	case strings.HasPrefix(name, "MANIFEST-"):
		return isFileNum(name[len("MANIFEST-"):])
	case strings.HasPrefix(name, "OPTIONS-"):
		return isFileNum(name[len("OPTIONS-"):])
	case strings.HasPrefix(name, "marker."):
		// marker.<kind>.<6-digit iteration>.<value>
		parts := strings.SplitN(name, ".", 4)
		return len(parts) == 4 && (parts[1] == "manifest" || parts[1] == "format-version") &&
			isFileNum(parts[2]) && parts[3] != ""
	}
	stem, ext, ok := strings.Cut(name, ".")
	if !ok {
		return false
	}
	switch ext {
	case "sst", "blob":
		return isFileNum(stem)
	case "log":
		num, seg, hasSeg := strings.Cut(stem, "-")
		return isFileNum(num) && (!hasSeg || isFileNum(seg))
	}
	return false
}

func isFileNum(s string) bool {
	if len(s) < 3 || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
