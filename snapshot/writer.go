package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/lni/dragonboat/v4/statemachine"
)

// File is one file of an image to stream.
type File struct {
	Name string
	Size uint64
}

// ListImage returns the files of a closed Pebble directory in name order,
// leaving out Pebble's LOCK file. It fails on any other file that is not a
// plain Pebble file kind, so a Pebble upgrade that adds a file kind is
// noticed here rather than by a receiver refusing the stream.
func ListImage(fs vfs.FS, dir string) ([]File, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("keel/snapshot: list %s: %w", dir, err)
	}
	sort.Strings(names)
	var out []File
	for _, n := range names {
		if n == "LOCK" {
			continue
		}
		if !ValidFileName(n) {
			return nil, fmt.Errorf("%w: %s holds %q", ErrBadFileName, dir, n)
		}
		st, err := fs.Stat(fs.PathJoin(dir, n))
		if err != nil {
			return nil, fmt.Errorf("keel/snapshot: stat %s: %w", n, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadFileName, n)
		}
		out = append(out, File{Name: n, Size: uint64(st.Size())})
	}
	return out, nil
}

// crcWriter passes writes through and keeps a CRC32C of everything written.
type crcWriter struct {
	w   io.Writer
	crc uint32
	n   uint64
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	c.n += uint64(n)
	return n, err
}

// WriteStream writes the header, then every file of dir in files (from
// ListImage) chunk by chunk, then the trailer. It holds one ChunkSize
// buffer whatever the image size. It checks stopc between chunks and
// returns statemachine.ErrSnapshotStopped when it is closed; when w fails
// with statemachine.ErrSnapshotStreaming (the receiver went away), that
// error is returned as it is.
func WriteStream(w io.Writer, h Header, fs vfs.FS, dir string, files []File, stopc <-chan struct{}) error {
	h.FileCount = uint32(len(files))
	h.TotalBytes = 0
	for _, f := range files {
		h.TotalBytes += f.Size
	}
	cw := &crcWriter{w: w}
	hb := h.encode()
	if _, err := cw.Write(hb[:]); err != nil {
		return writeErr(err)
	}
	buf := make([]byte, ChunkSize)
	for _, f := range files {
		if err := writeFile(cw, fs, dir, f, buf, stopc); err != nil {
			return err
		}
	}
	var tr [TrailerSize]byte
	copy(tr[:8], trailerMagic[:])
	binary.BigEndian.PutUint32(tr[8:], cw.crc)
	if _, err := cw.Write(tr[:]); err != nil {
		return writeErr(err)
	}
	return nil
}

func writeFile(cw *crcWriter, fs vfs.FS, dir string, f File, buf []byte, stopc <-chan struct{}) (err error) {
	if _, err := cw.Write(encodeFileHeader(f.Name, f.Size)); err != nil {
		return writeErr(err)
	}
	src, err := fs.Open(fs.PathJoin(dir, f.Name))
	if err != nil {
		return fmt.Errorf("keel/snapshot: open %s: %w", f.Name, err)
	}
	defer func() {
		if cerr := src.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("keel/snapshot: close %s: %w", f.Name, cerr)
		}
	}()
	var fileCRC uint32
	var lenb [4]byte
	for left := f.Size; left > 0; {
		select {
		case <-stopc:
			return statemachine.ErrSnapshotStopped
		default:
		}
		n := uint64(len(buf))
		if left < n {
			n = left
		}
		if _, err := io.ReadFull(src, buf[:n]); err != nil {
			// The image is closed and private to this capture, so a
			// short read means the disk or the filesystem failed.
			return fmt.Errorf("keel/snapshot: read %s: %w", f.Name, err)
		}
		binary.BigEndian.PutUint32(lenb[:], uint32(n))
		if _, err := cw.Write(lenb[:]); err != nil {
			return writeErr(err)
		}
		if _, err := cw.Write(buf[:n]); err != nil {
			return writeErr(err)
		}
		fileCRC = crc32.Update(fileCRC, castagnoli, buf[:n])
		left -= n
	}
	binary.BigEndian.PutUint32(lenb[:], fileCRC)
	if _, err := cw.Write(lenb[:]); err != nil {
		return writeErr(err)
	}
	return nil
}

func writeErr(err error) error {
	if errors.Is(err, statemachine.ErrSnapshotStreaming) {
		return statemachine.ErrSnapshotStreaming
	}
	return fmt.Errorf("keel/snapshot: write stream: %w", err)
}
