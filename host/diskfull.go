package host

import (
	"errors"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/lni/vfs"
)

// DiskFullHandler is told when a filesystem operation fails for want of
// space (ENOSPC, or EDQUOT for a quota). Free may make room (delete a
// ballast file) and returns true when it did: the operation is then retried
// once. When Free returns false, or the retry fails for want of space too,
// Fatal is called; a host process should end there (Fatal must not return
// for the storage engines to be spared an error they cannot continue from;
// if it returns, the error goes back to the caller as it came).
type DiskFullHandler interface {
	Free(op, path string, err error) bool
	Fatal(op, path string, err error)
}

// IsNoSpace reports whether err says a filesystem is out of space or over
// a quota. Errors that lost their chain (formatted with %v by a library) are
// matched by the kernel's message.
func IsNoSpace(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "no space left on device") || strings.Contains(msg, "disk quota exceeded")
}

// IsStorageFailure reports whether err is a storage failure a process
// cannot work around by itself: no space, an I/O error, a read-only
// filesystem. Corruption is not one: it needs a person, and a panic with
// its trace says more.
func IsStorageFailure(err error) bool {
	if IsNoSpace(err) {
		return true
	}
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EROFS) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "input/output error") || strings.Contains(msg, "read-only file system")
}

// DiskFullFS wraps fs (Dragonboat's filesystem type, for
// NodeHostConfig.Expert.FS) so that an operation failing for want of space
// goes to h instead of back to Dragonboat. Dragonboat and its LogDB's Pebble
// cannot continue from ENOSPC: a failed LogDB write, MANIFEST write or
// snapshot mkdir panics (through Pebble's Fatalf, which Dragonboat's LogDB
// turns into a bare panic no logger hook sees). Catching it here is the one
// place every such path passes.
//
// Writes and creates are retried once after h.Free made room. Sync is never
// retried: after a failed fsync the kernel may have dropped the dirty pages,
// so a second fsync that succeeds proves nothing; it goes to h.Fatal.
//
// It also drops the bytes of a snapshot stream's staging file that Keel's
// transport stages itself, keeping the file's size (stagingfs.go).
//
// The result is a *vfs.ErrorFS (injecting nothing) around the wrapper:
// Dragonboat's LogDB panics ("invalid fs") on any Expert.FS other than its
// default, a MemFS or an ErrorFS. Dragonboat then runs in its "error
// injection mode", in which a step worker recovers its own panics instead
// of crashing the process: a host must end the process on Dragonboat's
// fatal path itself (OnFatal), or a failed replica lingers.
func DiskFullFS(fs vfs.FS, h DiskFullHandler) vfs.FS {
	return vfs.Wrap(&diskFullFS{FS: &stagingFS{fs}, h: h}, noInjection{})
}

// noInjection is an injector that never injects.
type noInjection struct{}

func (noInjection) MaybeError(vfs.Op) error { return nil }

type diskFullFS struct {
	vfs.FS
	h DiskFullHandler
}

var _ vfs.FS = (*diskFullFS)(nil)

// retry runs op, and again once after h.Free made room; it calls h.Fatal
// when space could not be found.
func (fs *diskFullFS) retry(name, path string, op func() error) error {
	err := op()
	if !IsNoSpace(err) {
		return err
	}
	if fs.h.Free(name, path, err) {
		if err = op(); !IsNoSpace(err) {
			return err
		}
	}
	fs.h.Fatal(name, path, err)
	return err
}

func (fs *diskFullFS) wrap(f vfs.File, path string) vfs.File {
	if f == nil {
		return nil
	}
	return &diskFullFile{File: f, fs: fs, path: path}
}

func (fs *diskFullFS) Create(name string) (vfs.File, error) {
	var f vfs.File
	err := fs.retry("create", name, func() (err error) { f, err = fs.FS.Create(name); return err })
	return fs.wrap(f, name), err
}

func (fs *diskFullFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.Open(name, opts...)
	return fs.wrap(f, name), err
}

func (fs *diskFullFS) OpenForAppend(name string) (vfs.File, error) {
	var f vfs.File
	err := fs.retry("open", name, func() (err error) { f, err = fs.FS.OpenForAppend(name); return err })
	return fs.wrap(f, name), err
}

func (fs *diskFullFS) Link(oldname, newname string) error {
	return fs.retry("link", newname, func() error { return fs.FS.Link(oldname, newname) })
}

func (fs *diskFullFS) Rename(oldname, newname string) error {
	return fs.retry("rename", newname, func() error { return fs.FS.Rename(oldname, newname) })
}

func (fs *diskFullFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	var f vfs.File
	err := fs.retry("reuse", newname, func() (err error) { f, err = fs.FS.ReuseForWrite(oldname, newname); return err })
	return fs.wrap(f, newname), err
}

func (fs *diskFullFS) MkdirAll(dir string, perm os.FileMode) error {
	return fs.retry("mkdir", dir, func() error { return fs.FS.MkdirAll(dir, perm) })
}

func (fs *diskFullFS) Lock(name string) (io.Closer, error) {
	var c io.Closer
	err := fs.retry("lock", name, func() (err error) { c, err = fs.FS.Lock(name); return err })
	return c, err
}

// diskFullFile routes a file's space failures to its FS's handler.
type diskFullFile struct {
	vfs.File
	fs   *diskFullFS
	path string
}

func (f *diskFullFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	if !IsNoSpace(err) {
		return n, err
	}
	// What was written stays written; only the rest is retried.
	err = f.fs.retry("write", f.path, func() error {
		m, err := f.File.Write(p[n:])
		n += m
		return err
	})
	return n, err
}

func (f *diskFullFile) WriteAt(p []byte, off int64) (int, error) {
	var n int
	err := f.fs.retry("write", f.path, func() (err error) {
		n, err = f.File.WriteAt(p, off)
		return err
	})
	return n, err
}

// Sync is the wrapped file's own (fsync for an *os.File). fdatasync was
// tried for the LogDB WAL Pebble creates through this wrapper (it cannot
// see the Fd to do so itself): on a file that grows with every write, as
// that WAL does, it measured no cheaper (BenchmarkSyncAppend), since the
// new size must be flushed under either call.
func (f *diskFullFile) Sync() error {
	err := f.File.Sync()
	if IsNoSpace(err) {
		f.fs.h.Fatal("sync", f.path, err)
	}
	return err
}

// Fd exposes the descriptor where the wrapped file has one: Pebble uses it
// for fallocate and sync_file_range and falls back to slower paths without.
func (f *diskFullFile) Fd() uintptr {
	if fd, ok := f.File.(interface{ Fd() uintptr }); ok {
		return fd.Fd()
	}
	return ^uintptr(0)
}
