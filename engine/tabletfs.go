package engine

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// tabletFS is the filesystem a tablet's Pebble runs on: the caller's (or
// the operating system's), with two kinds of handle that Pebble would
// otherwise multiply or hold for nothing:
//
//   - Directory handles. Pebble v2.1.7 opens the data directory five times
//     and keeps every handle until Close, only ever to fsync and close it:
//     the DB's dataDir (open.go), the WAL manager's walDir
//     (wal/standalone_manager.go), the object provider's fsDir
//     (objstorage/objstorageprovider), and one per atomicfs.Marker (the
//     MANIFEST marker and the format-version marker). OpenDir here shares
//     one real handle per directory among all of them, counted by
//     reference and closed with the last: a Sync is the same fsync of the
//     same descriptor Pebble would make. (A handle opened only inside Sync
//     would save that descriptor too, but would turn a failure to open the
//     directory, such as EMFILE, into a failed directory sync, on which
//     Marker.Move panics.)
//   - The WAL file of a WAL-less tablet. Pebble creates a .log file at
//     every writable open even with DisableWAL, never writes a record to it
//     and keeps it open; Create (and ReuseForWrite) here create the file as
//     Pebble asked, close it, and reopen it only if something writes or
//     syncs it (in v2.1.7 only the LogWriter's Close, which writes the EOF
//     trailer at DB.Close; an error there is returned by Close).
//
// Every other operation goes to the wrapped FS unchanged, so crash tests
// (vfs.NewCrashableMem) and fault injection (errorfs) below it see every
// operation Pebble makes, except the repeated OpenDirs.
type tabletFS struct {
	vfs.FS
	// lazyWAL is set when the tablet runs without a WAL.
	lazyWAL bool

	// mu guards dirs, the open directory handles by name.
	mu   sync.Mutex
	dirs map[string]*sharedDir
}

var _ vfs.FS = (*tabletFS)(nil)

func newTabletFS(fs vfs.FS, lazyWAL bool) *tabletFS {
	return &tabletFS{FS: fs, lazyWAL: lazyWAL, dirs: make(map[string]*sharedDir)}
}

func (t *tabletFS) Unwrap() vfs.FS { return t.FS }

func (t *tabletFS) OpenDir(name string) (vfs.File, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.dirs[name]
	if d == nil {
		f, err := t.FS.OpenDir(name)
		if err != nil {
			return nil, err
		}
		d = &sharedDir{File: f}
		t.dirs[name] = d
	}
	d.refs++
	return &dirRef{t: t, name: name, d: d}, nil
}

// release drops one reference to the handle for name, closing it with the
// last.
func (t *tabletFS) release(name string, d *sharedDir) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d.refs--; d.refs > 0 {
		return nil
	}
	delete(t.dirs, name)
	return d.File.Close()
}

func isWALFile(name string) bool { return strings.HasSuffix(name, ".log") }

func (t *tabletFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := t.FS.Create(name, category)
	if err != nil || !t.lazyWAL || !isWALFile(name) {
		return f, err
	}
	return newLazyFile(t.FS, name, category, f)
}

func (t *tabletFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := t.FS.ReuseForWrite(oldname, newname, category)
	if err != nil || !t.lazyWAL || !isWALFile(newname) {
		return f, err
	}
	return newLazyFile(t.FS, newname, category, f)
}

// sharedDir is one real directory handle; refs is guarded by tabletFS.mu.
type sharedDir struct {
	vfs.File
	refs int
}

// dirRef is one OpenDir's reference to a sharedDir: every method but Close
// goes to the real handle.
type dirRef struct {
	t    *tabletFS
	name string
	d    *sharedDir
	// closed makes a second Close harmless, as it is on an *os.File.
	closed atomic.Bool
}

var _ vfs.File = (*dirRef)(nil)

func (r *dirRef) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	return r.t.release(r.name, r.d)
}

func (r *dirRef) Read(p []byte) (int, error)              { return r.d.Read(p) }
func (r *dirRef) ReadAt(p []byte, off int64) (int, error) { return r.d.ReadAt(p, off) }
func (r *dirRef) Write(p []byte) (int, error)             { return r.d.Write(p) }
func (r *dirRef) WriteAt(p []byte, o int64) (int, error)  { return r.d.WriteAt(p, o) }
func (r *dirRef) Preallocate(off, n int64) error          { return r.d.Preallocate(off, n) }
func (r *dirRef) Stat() (vfs.FileInfo, error)             { return r.d.Stat() }
func (r *dirRef) Sync() error                             { return r.d.Sync() }
func (r *dirRef) SyncTo(n int64) (bool, error)            { return r.d.SyncTo(n) }
func (r *dirRef) SyncData() error                         { return r.d.SyncData() }
func (r *dirRef) Prefetch(off, n int64) error             { return r.d.Prefetch(off, n) }
func (r *dirRef) Fd() uintptr                             { return r.d.Fd() }

// lazyFile is a WAL-less tablet's .log file: created on disk, but opened
// only when written or synced (see tabletFS).
type lazyFile struct {
	fs       vfs.FS
	name     string
	category vfs.DiskWriteCategory

	// mu guards f (nil until first needed) and closed.
	mu     sync.Mutex
	f      vfs.File
	closed bool
}

var _ vfs.File = (*lazyFile)(nil)

// newLazyFile closes created, the handle Pebble's Create just returned, so
// the file exists on disk but holds no descriptor.
func newLazyFile(fs vfs.FS, name string, category vfs.DiskWriteCategory, created vfs.File) (vfs.File, error) {
	if err := created.Close(); err != nil {
		return nil, err
	}
	return &lazyFile{fs: fs, name: name, category: category}, nil
}

// file opens the file on first use. Nothing was written through the
// handle Create returned, so the reopened one starts at offset 0 as that
// one would have.
func (l *lazyFile) file() (vfs.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("keel/engine: %s: file already closed", l.name)
	}
	if l.f == nil {
		f, err := l.fs.OpenReadWrite(l.name, l.category)
		if err != nil {
			return nil, err
		}
		l.f = f
	}
	return l.f, nil
}

func (l *lazyFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}

func (l *lazyFile) Read(p []byte) (int, error) {
	f, err := l.file()
	if err != nil {
		return 0, err
	}
	return f.Read(p)
}

func (l *lazyFile) ReadAt(p []byte, off int64) (int, error) {
	f, err := l.file()
	if err != nil {
		return 0, err
	}
	return f.ReadAt(p, off)
}

func (l *lazyFile) Write(p []byte) (int, error) {
	f, err := l.file()
	if err != nil {
		return 0, err
	}
	return f.Write(p)
}

func (l *lazyFile) WriteAt(p []byte, off int64) (int, error) {
	f, err := l.file()
	if err != nil {
		return 0, err
	}
	return f.WriteAt(p, off)
}

func (l *lazyFile) Preallocate(off, n int64) error {
	f, err := l.file()
	if err != nil {
		return err
	}
	return f.Preallocate(off, n)
}

func (l *lazyFile) Stat() (vfs.FileInfo, error) { return l.fs.Stat(l.name) }

func (l *lazyFile) Sync() error {
	f, err := l.file()
	if err != nil {
		return err
	}
	return f.Sync()
}

func (l *lazyFile) SyncData() error {
	f, err := l.file()
	if err != nil {
		return err
	}
	return f.SyncData()
}

func (l *lazyFile) SyncTo(length int64) (bool, error) {
	f, err := l.file()
	if err != nil {
		return false, err
	}
	return f.SyncTo(length)
}

func (l *lazyFile) Prefetch(int64, int64) error { return nil }

// Fd is InvalidFd: the descriptor, if any, comes and goes, and callers
// (vfs.NewSyncingFile) read it once up front.
func (l *lazyFile) Fd() uintptr { return vfs.InvalidFd }
