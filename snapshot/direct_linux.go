package snapshot

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// Received files are written with O_DIRECT where the filesystem takes it.
//
// Why: a received image is written once, synced, and not read again until
// Pebble opens it. Through the page cache every byte is copied into a page
// the kernel must allocate, track as dirty, write back and later reclaim;
// measured in a catch-up on this project's 2-core machines, those write(2)
// calls were the largest single CPU cost of the receiving side (580 ms of
// kernel time for a 211 MB image), and the catch-up is bound by CPU there.
// With O_DIRECT the device reads the caller's buffer: the write returns
// when the data is on the device, there is nothing left to write back, and
// the final sync only commits the file's metadata (its size and block
// map). The same catch-up then spent about 40 ms in those writes.
//
// How: the file is created through the install's vfs.FS as before, so
// whatever that FS does stays in force (keeld's disk-full handler on a
// write that finds no space, error injection in tests); O_DIRECT is then
// set on its descriptor with fcntl(F_SETFL). O_DIRECT needs the buffer,
// the file offset and the length aligned to the device's logical block
// size; directAlign (4 KiB) covers every block size Linux supports for it.
// The writer collects the stream's chunks in an aligned buffer and writes
// it whole at aligned offsets; the tail, shorter than a buffer, is written
// after O_DIRECT is cleared again, through the page cache, and the file is
// synced. A file without a descriptor (an in-memory FS), a filesystem that
// refuses the flag (EINVAL from fcntl) or a write it refuses (EINVAL: a
// wrapper that copied the buffer to an unaligned one) gets buffered writes
// from there on, as before.

const (
	directAlign = 4096
	// directBuf is the size of one O_DIRECT write: 2 chunks, so a chunk
	// that does not fill the buffer's rest still goes out in one write.
	directBuf = 2 * ChunkSize
	// directInFlight is how many full buffers may wait for the writer:
	// with the one filling and the one being written, a file holds at
	// most directInFlight+2 buffers, and free (directInFlight+1) takes
	// back every one the caller is not filling.
	directInFlight = 2
)

// directBufs recycles aligned buffers across files and streams.
var directBufs = sync.Pool{New: func() any { return alignedBuf(directBuf) }}

// directFile writes one received file, with O_DIRECT while direct is set.
//
// An O_DIRECT write returns only when the device has the data, so the
// writes run on a goroutine of the file's own (write), while the caller
// decodes and checks the next chunks into another buffer: measured in a
// catch-up, writing in line left the stream waiting on the device for
// about as long as on the CPU.
//
// Invariants: cur is a directBuf-byte aligned buffer and cur[:n] is data
// not yet handed to the writer, which belongs at offset off (a multiple of
// directBuf). Buffers handed over on full are written in order at their
// offsets and come back on free. direct and err are the writer's until
// done is closed, the caller's after.
type directFile struct {
	f      vfs.File
	fd     uintptr
	direct bool
	cur    []byte
	n      int
	off    int64

	full    chan pending
	free    chan []byte
	done    chan struct{}
	stopped bool // full is closed
	// failed is set by the writer after err, the first error; once it
	// reads true, err may be read by the caller too.
	failed atomic.Bool
	err    error
}

// pending is a full buffer and where it goes.
type pending struct {
	b   []byte
	off int64
}

// createReceivedFile creates path on fs for a received file, written with
// O_DIRECT where fs's file has a descriptor that takes it, else with
// writeback started every installBytesPerSync bytes.
func createReceivedFile(fs vfs.FS, path string) (receivedFile, error) {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, err
	}
	if !noDirect {
		if fd := f.Fd(); fd != vfs.InvalidFd && setDirect(fd, true) == nil {
			d := &directFile{f: f, fd: fd, direct: true, cur: directBufs.Get().([]byte),
				full: make(chan pending, directInFlight), free: make(chan []byte, directInFlight+1), done: make(chan struct{})}
			go d.write()
			return d, nil
		}
	}
	return newBufferedFile(f), nil
}

// write is the writer goroutine: it writes the full buffers in order and
// gives them back; after an error it only gives them back.
func (d *directFile) write() {
	defer close(d.done)
	for p := range d.full {
		if d.err == nil {
			if err := d.writeBuf(p.b, p.off); err != nil {
				d.err = err
				d.failed.Store(true)
			}
		}
		d.free <- p.b
	}
}

// setDirect sets or clears O_DIRECT on fd.
func setDirect(fd uintptr, on bool) error {
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		flags |= unix.O_DIRECT
	} else {
		flags &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(fd, unix.F_SETFL, flags)
	return err
}

// alignedBuf returns n bytes starting at a directAlign-aligned address.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+n : skip+n]
}

func (d *directFile) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if d.failed.Load() {
			// The writer stored err before failed (happens-before):
			// the caller sees the cause (no space, an I/O error), which
			// decides how a host reacts.
			return 0, d.err
		}
		c := copy(d.cur[d.n:], p)
		d.n += c
		p = p[c:]
		if d.n == len(d.cur) {
			d.full <- pending{d.cur, d.off}
			d.off += int64(len(d.cur))
			select {
			case d.cur = <-d.free:
			default:
				d.cur = directBufs.Get().([]byte)
			}
			d.n = 0
		}
	}
	return total, nil
}

// writeBuf writes b, which belongs at off: the writes are in order, so at
// the file's offset (a vfs.File from Create need not take WriteAt). A write
// refused with EINVAL while direct is retried once without O_DIRECT (the
// rest of b), and the file is written through the page cache from then on.
func (d *directFile) writeBuf(b []byte, off int64) error {
	n, err := d.f.Write(b)
	if err != nil && d.direct && errors.Is(err, syscall.EINVAL) {
		if err := d.buffered(); err != nil {
			return err
		}
		var m int
		m, err = d.f.Write(b[n:])
		n += m
	}
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write of %d bytes at %d: %w", n, off, io.ErrShortWrite)
	}
	return err
}

// buffered clears O_DIRECT: from here the page cache is used.
func (d *directFile) buffered() error {
	if !d.direct {
		return nil
	}
	if err := setDirect(d.fd, false); err != nil {
		return err
	}
	d.direct = false
	return nil
}

// stop ends the writer and waits for it; it returns the writer's error.
func (d *directFile) stop() error {
	if !d.stopped {
		d.stopped = true
		close(d.full)
		<-d.done
		for len(d.free) > 0 {
			directBufs.Put(<-d.free)
		}
	}
	return d.err
}

// Finish waits for the buffers handed to the writer, writes the tail
// through the page cache and syncs the file.
func (d *directFile) Finish() error {
	if err := d.stop(); err != nil {
		return err
	}
	if d.n > 0 {
		if err := d.buffered(); err != nil {
			return err
		}
		if err := d.writeBuf(d.cur[:d.n], d.off); err != nil {
			return err
		}
		d.off += int64(d.n)
		d.n = 0
	}
	return d.f.Sync()
}

func (d *directFile) Close() error {
	_ = d.stop()
	if d.cur != nil {
		directBufs.Put(d.cur)
		d.cur = nil
	}
	return d.f.Close()
}
