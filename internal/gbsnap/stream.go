package gbsnap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/snapshot"
)

// Stream is what a verified Keel snapshot stream holds.
type Stream struct {
	ShardID           uint64 `json:"shard_id"`
	ReplicaID         uint64 `json:"replica_id"`
	SnapshotIndex     uint64 `json:"snapshot_index"`
	ImageAppliedIndex uint64 `json:"image_applied_index"`
	FileCount         uint32 `json:"file_count"`
	TotalBytes        uint64 `json:"total_bytes"`
	Files             []File `json:"files"`
}

// File is one file of a stream's image.
type File struct {
	Name string `json:"name"`
	Size uint64 `json:"size"`
}

// VerifyStream reads one Keel stream from r and checks everything
// snapshot.Install checks before it opens the image, without writing a
// byte: the files go to a discarding filesystem that only records names and
// sizes. It reads nothing after the stream's trailer.
func VerifyStream(r io.Reader) (Stream, error) {
	var hb [snapshot.HeaderSize]byte
	n, _ := io.ReadFull(r, hb[:])
	// The shard is taken from the header so ReadStream accepts any shard;
	// the header checksum, checked by ReadStream, covers it.
	var shard uint64
	if n >= 24 {
		shard = binary.BigEndian.Uint64(hb[16:24])
	}
	dfs := newDiscardFS()
	h, err := snapshot.ReadStream(io.MultiReader(bytes.NewReader(hb[:n]), r), dfs, discardRoot, shard, snapshot.Options{}, nil)
	if err != nil {
		return Stream{}, streamErr(err)
	}
	if h.ImageAppliedIndex != h.SnapshotIndex {
		return Stream{}, streamErr(fmt.Errorf("%w: image at %d, snapshot index %d", snapshot.ErrInexact, h.ImageAppliedIndex, h.SnapshotIndex))
	}
	return Stream{
		ShardID: h.ShardID, ReplicaID: h.ReplicaID, SnapshotIndex: h.SnapshotIndex,
		ImageAppliedIndex: h.ImageAppliedIndex, FileCount: h.FileCount, TotalBytes: h.TotalBytes,
		Files: dfs.files,
	}, nil
}

// streamErr marks what ReadStream says about the bytes as damage and leaves
// anything else (an error from the reader under it) as it is.
func streamErr(err error) error {
	for _, s := range []error{snapshot.ErrCorrupt, snapshot.ErrLimit, snapshot.ErrBadFileName, snapshot.ErrWrongShard, snapshot.ErrInexact} {
		if errors.Is(err, s) {
			return fmt.Errorf("%w: Keel stream: %w", ErrDamaged, err)
		}
	}
	return err
}

// ExpectEOF checks that r holds nothing more.
func ExpectEOF(r io.Reader) error {
	var one [1]byte
	for {
		n, err := r.Read(one[:])
		if n > 0 {
			return fmt.Errorf("%w: trailing bytes after the stream's trailer", ErrDamaged)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

const discardRoot = "/verify"

// discardFS is a filesystem for ReadStream that keeps only the directory
// tree in memory and throws file contents away, recording each file's
// name and size.
type discardFS struct {
	vfs.FS
	files []File
}

func newDiscardFS() *discardFS {
	fs := &discardFS{FS: vfs.NewMem(), files: []File{}}
	_ = fs.MkdirAll(discardRoot, 0o755)
	return fs
}

func (d *discardFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := d.FS.Create(name, cat)
	if err != nil {
		return nil, err
	}
	d.files = append(d.files, File{Name: d.PathBase(name)})
	return &discardFile{File: f, fs: d, idx: len(d.files) - 1}, nil
}

type discardFile struct {
	vfs.File
	fs  *discardFS
	idx int
}

func (f *discardFile) Write(p []byte) (int, error) {
	// files may have grown (and moved) since Create: index, don't hold.
	f.fs.files[f.idx].Size += uint64(len(p))
	return len(p), nil
}
