package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/lni/dragonboat/v4/statemachine"
)

// crcReader reads through and keeps a CRC32C of everything read.
type crcReader struct {
	r   io.Reader
	crc uint32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	return n, err
}

// readFull is io.ReadFull that reports a short stream as ErrCorrupt.
func readFull(r io.Reader, p []byte, what string) error {
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: stream ends inside %s", ErrCorrupt, what)
		}
		return fmt.Errorf("keel/snapshot: read %s: %w", what, err)
	}
	return nil
}

// ReadStream reads one stream from r and writes its files into dir (an
// existing, empty directory on fs), checking everything as it goes: magic,
// format version, header checksum, the shard (it must be shardID), the
// limits in opts, every file name (ValidFileName, no duplicates), chunk
// sizes, every file checksum, file sizes and count against the header, and
// the checksum over the whole stream. Every file and dir are fsynced before
// it returns. It reads nothing after the trailer.
//
// On error dir may hold partial files; the caller removes it. Nothing
// outside dir is touched, whatever the stream holds. Memory use is one
// ChunkSize buffer plus the names seen (bounded by MaxFiles*MaxNameLen).
func ReadStream(r io.Reader, fs vfs.FS, dir string, shardID uint64, opts Options, stopc <-chan struct{}) (Header, error) {
	opts = opts.withDefaults()
	cr := &crcReader{r: r}
	var hb [HeaderSize]byte
	if err := readFull(cr, hb[:], "header"); err != nil {
		return Header{}, err
	}
	h, err := decodeHeader(hb[:])
	if err != nil {
		return Header{}, err
	}
	if h.ShardID != shardID {
		return Header{}, fmt.Errorf("%w: stream is for shard %d, this replica is in shard %d", ErrWrongShard, h.ShardID, shardID)
	}
	if h.FileCount > opts.MaxFiles {
		return Header{}, fmt.Errorf("%w: %d files, limit %d", ErrLimit, h.FileCount, opts.MaxFiles)
	}
	if h.TotalBytes > opts.MaxBytes {
		return Header{}, fmt.Errorf("%w: %d bytes, limit %d", ErrLimit, h.TotalBytes, opts.MaxBytes)
	}
	if err := checkSpace(fs, dir, h.TotalBytes, opts.ReserveBytes); err != nil {
		return Header{}, err
	}
	seen := make(map[string]struct{})
	buf := make([]byte, ChunkSize)
	var total uint64
	for i := uint32(0); i < h.FileCount; i++ {
		n, err := readFile(cr, fs, dir, h.TotalBytes-total, seen, buf, stopc)
		if err != nil {
			return Header{}, err
		}
		total += n
	}
	if total != h.TotalBytes {
		return Header{}, fmt.Errorf("%w: files hold %d bytes, header says %d", ErrCorrupt, total, h.TotalBytes)
	}
	sum := cr.crc
	var tr [TrailerSize]byte
	if err := readFull(r, tr[:], "trailer"); err != nil {
		return Header{}, err
	}
	if [8]byte(tr[:8]) != trailerMagic {
		return Header{}, fmt.Errorf("%w: bad trailer magic %q", ErrCorrupt, tr[:8])
	}
	if got := binary.BigEndian.Uint32(tr[8:]); got != sum {
		return Header{}, fmt.Errorf("%w: stream checksum %08x, computed %08x", ErrCorrupt, got, sum)
	}
	if err := syncDir(fs, dir); err != nil {
		return Header{}, err
	}
	return h, nil
}

// installBytesPerSync is how much of a received file may be written before
// its writeback is started: a received image is written once and synced at
// the end, and without this the kernel holds all of it dirty until that
// sync (its background writeback starts only at a share of RAM).
const installBytesPerSync = 1 << 20

// readFile reads one file entry into dir and returns its size. budget is
// how many bytes the header still allows.
func readFile(cr *crcReader, fs vfs.FS, dir string, budget uint64, seen map[string]struct{}, buf []byte, stopc <-chan struct{}) (_ uint64, err error) {
	var nb [2]byte
	if err := readFull(cr, nb[:], "file header"); err != nil {
		return 0, err
	}
	nameLen := int(binary.BigEndian.Uint16(nb[:]))
	if nameLen == 0 || nameLen > MaxNameLen {
		return 0, fmt.Errorf("%w: file name of %d bytes (max %d)", ErrCorrupt, nameLen, MaxNameLen)
	}
	rest := make([]byte, nameLen+8+4)
	if err := readFull(cr, rest, "file header"); err != nil {
		return 0, err
	}
	crc := crc32.Update(crc32.Checksum(nb[:], castagnoli), castagnoli, rest[:nameLen+8])
	if got := binary.BigEndian.Uint32(rest[nameLen+8:]); got != crc {
		return 0, fmt.Errorf("%w: file header checksum %08x, computed %08x", ErrCorrupt, got, crc)
	}
	name := string(rest[:nameLen])
	size := binary.BigEndian.Uint64(rest[nameLen : nameLen+8])
	if !ValidFileName(name) {
		return 0, fmt.Errorf("%w: %q", ErrBadFileName, name)
	}
	if _, dup := seen[name]; dup {
		return 0, fmt.Errorf("%w: %q appears twice", ErrBadFileName, name)
	}
	seen[name] = struct{}{}
	if size > budget {
		return 0, fmt.Errorf("%w: file %s of %d bytes exceeds the header's total", ErrCorrupt, name, size)
	}
	path := fs.PathJoin(dir, name)
	f, err := createReceivedFile(fs, path)
	if err != nil {
		return 0, fmt.Errorf("keel/snapshot: create %s: %w", name, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("keel/snapshot: close %s: %w", name, cerr)
		}
	}()
	var fileCRC uint32
	var lb [4]byte
	for left := size; left > 0; {
		select {
		case <-stopc:
			return 0, statemachine.ErrSnapshotStopped
		default:
		}
		if err := readFull(cr, lb[:], "chunk length"); err != nil {
			return 0, err
		}
		n := uint64(binary.BigEndian.Uint32(lb[:]))
		if n == 0 || n > ChunkSize || n > left {
			return 0, fmt.Errorf("%w: chunk of %d bytes in %s (%d left, max %d)", ErrCorrupt, n, name, left, ChunkSize)
		}
		if err := readFull(cr, buf[:n], "chunk"); err != nil {
			return 0, err
		}
		// The checksum first: a vfs.File's Write may modify the slice
		// passed in (Pebble's own files scribble over it in invariants
		// builds, which made every install fail under -race).
		fileCRC = crc32.Update(fileCRC, castagnoli, buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return 0, fmt.Errorf("keel/snapshot: write %s: %w", name, err)
		}
		left -= n
	}
	if err := readFull(cr, lb[:], "file checksum"); err != nil {
		return 0, err
	}
	if got := binary.BigEndian.Uint32(lb[:]); got != fileCRC {
		return 0, fmt.Errorf("%w: %s checksum %08x, computed %08x", ErrCorrupt, name, got, fileCRC)
	}
	if err := f.Finish(); err != nil {
		return 0, fmt.Errorf("keel/snapshot: write and sync %s: %w", name, err)
	}
	return size, nil
}

// receivedFile is where readFile writes one received file: Write the
// content, then Finish (the content durable), then Close.
type receivedFile interface {
	Write(p []byte) (int, error)
	Finish() error
	Close() error
}

// noDirect turns off O_DIRECT for received files (tests of the buffered
// path set it).
var noDirect = false

// bufferedFile is a received file written through a vfs.FS.
type bufferedFile struct{ vfs.File }

func (f bufferedFile) Finish() error { return f.Sync() }

// newBufferedFile writes a received file through the page cache and
// starts its writeback as the data arrives (sync_file_range on Linux ext4,
// as Pebble does for its own files), so the sync at the end waits for the
// last megabytes only, not for the whole file.
func newBufferedFile(f vfs.File) receivedFile {
	return bufferedFile{vfs.NewSyncingFile(f, vfs.SyncingFileOptions{BytesPerSync: installBytesPerSync})}
}
func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("keel/snapshot: open %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return fmt.Errorf("keel/snapshot: sync %s: %w", dir, err)
	}
	return d.Close()
}

// checkSpace refuses a stream of total bytes that would leave less than
// reserve free under dir, so a full disk never holds half an image.
func checkSpace(fs vfs.FS, dir string, total, reserve uint64) error {
	du, err := fs.GetDiskUsage(dir)
	if err != nil {
		return nil // no usage to go by (in-memory FS); the writes decide
	}
	if du.AvailBytes < reserve || du.AvailBytes-reserve < total {
		return fmt.Errorf("%w: image of %d bytes, %d bytes free, reserve %d", ErrNoSpace, total, du.AvailBytes, reserve)
	}
	return nil
}
