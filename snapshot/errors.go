package snapshot

import "errors"

var (
	// ErrCorrupt is returned when a snapshot stream fails a check: wrong
	// magic, an unknown format version, a checksum mismatch, sizes or counts
	// that disagree with the header, a truncated stream. The bytes are bad;
	// receiving the same stream again will not help.
	ErrCorrupt = errors.New("keel/snapshot: corrupt snapshot stream")
	// ErrLimit is returned when a stream is well formed but exceeds a
	// configured limit (file count, total bytes, name length).
	ErrLimit = errors.New("keel/snapshot: snapshot stream exceeds a limit")
	// ErrBadFileName is returned for a file name that is not a plain Pebble
	// file kind, or that repeats an earlier name.
	ErrBadFileName = errors.New("keel/snapshot: unacceptable file name in snapshot")
	// ErrWrongShard is returned when a valid stream belongs to another shard.
	ErrWrongShard = errors.New("keel/snapshot: snapshot belongs to another shard")
	// ErrInexact is returned when an image's applied index is not the
	// snapshot index its header claims: Keel only installs exact images.
	ErrInexact = errors.New("keel/snapshot: image applied index does not match the snapshot index")
	// ErrNoSpace is returned when a received stream's declared size does not
	// fit in the receiver's free space above its reserve. Nothing was
	// written; the same stream may be received once space is freed.
	ErrNoSpace = errors.New("keel/snapshot: no space for the received snapshot")
)
