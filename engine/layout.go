package engine

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

const (
	currentFile = "CURRENT"
	imagePrefix = "img-"
	tempPrefix  = "tmp-"
)

// Root is a replica's state directory: a set of images and the CURRENT
// pointer naming the live one (see the package documentation).
type Root struct {
	Dir string
	FS  vfs.FS
}

// NewRoot returns the Root at dir on fs (nil means the OS filesystem).
func NewRoot(dir string, fs vfs.FS) Root {
	if fs == nil {
		fs = vfs.Default
	}
	return Root{Dir: dir, FS: fs}
}

func imageName(n uint64) string { return fmt.Sprintf("%s%016d", imagePrefix, n) }

func parseImageName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, imagePrefix) || len(name) != len(imagePrefix)+16 {
		return 0, false
	}
	n, err := strconv.ParseUint(name[len(imagePrefix):], 10, 64)
	return n, err == nil
}

// Current returns the name of the live image, or "" when there is none yet.
//
// Errors are classified so a host can tell damage from a failing disk: a
// CURRENT that is malformed, is not a regular file, or names an image that is
// missing or not a directory wraps ErrCorrupt (retrying will not help); an
// error from the filesystem while reading CURRENT or looking up the image
// (permission denied, EIO) is returned wrapped as itself and never as
// ErrCorrupt, because it may be transient and says nothing about the data.
func (r Root) Current() (string, error) {
	path := r.FS.PathJoin(r.Dir, currentFile)
	f, err := r.FS.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("keel/engine: open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("keel/engine: stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s is not a regular file (mode %v)", ErrCorrupt, path, st.Mode())
	}
	// A valid CURRENT is one image name and a newline; reading one byte
	// more than the longest valid content is enough to refuse anything else.
	b, err := io.ReadAll(io.LimitReader(f, int64(len(imageName(0)))+2))
	if err != nil {
		return "", fmt.Errorf("keel/engine: read %s: %w", path, err)
	}
	name := strings.TrimSuffix(string(b), "\n")
	if _, ok := parseImageName(name); !ok {
		return "", fmt.Errorf("%w: %s in %s names %q, not an image", ErrCorrupt, currentFile, r.Dir, name)
	}
	img := r.FS.PathJoin(r.Dir, name)
	st, err = r.FS.Stat(img)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("%w: %s names %s, which is missing", ErrCorrupt, currentFile, name)
	case err != nil:
		return "", fmt.Errorf("keel/engine: stat image %s named by %s: %w", img, currentFile, err)
	case !st.IsDir():
		return "", fmt.Errorf("%w: %s names %s, which is not a directory", ErrCorrupt, currentFile, name)
	}
	return name, nil
}

// OpenRoot opens the live image under dir, creating the directory and an
// empty first image when there is none, after sweeping the leftovers of any
// interrupted install or checkpoint.
func OpenRoot(dir string, o Options) (*Engine, error) {
	r := NewRoot(dir, o.FS)
	if !o.ReadOnly {
		if err := r.create(); err != nil {
			return nil, err
		}
	}
	cur, err := r.Current()
	if err != nil {
		return nil, err
	}
	if cur == "" {
		if o.ReadOnly {
			return nil, fmt.Errorf("%w: %s has no %s file", ErrNotKeel, dir, currentFile)
		}
		if cur, err = r.createFirstImage(); err != nil {
			return nil, err
		}
	}
	if !o.ReadOnly {
		if err := r.Sweep(); err != nil {
			return nil, err
		}
	}
	return r.OpenImage(cur, o)
}

// OpenImage opens the root's image name (normally the one CURRENT names,
// as after an install). Unlike Open on the image's directory, the engine
// writes the root's closed record when it closes cleanly (writable and
// WAL-less only), so the next open of the root can answer without Pebble.
func (r Root) OpenImage(name string, o Options) (*Engine, error) {
	e, err := Open(r.FS.PathJoin(r.Dir, name), o)
	if err != nil {
		return nil, err
	}
	e.recordClose = !o.ReadOnly && !o.WAL
	return e, nil
}

func (r Root) createFirstImage() (string, error) {
	tmp, err := r.TempDir("first")
	if err != nil {
		return "", err
	}
	// An image is a Pebble directory; Pebble creates its files on first open,
	// so an empty directory is a valid empty image.
	name, err := r.Publish(tmp)
	if err != nil {
		_ = r.FS.RemoveAll(tmp)
		return "", err
	}
	return name, nil
}

// TempDir creates a fresh work directory under the root. It is removed by the
// next Sweep unless it is published first.
func (r Root) TempDir(purpose string) (string, error) {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	dir := r.FS.PathJoin(r.Dir, tempPrefix+purpose+"-"+hex.EncodeToString(rnd[:]))
	if err := r.FS.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("keel/engine: create %s: %w", dir, err)
	}
	return dir, nil
}

// TempPath names a fresh work path under the root without creating it (for
// Pebble checkpoints, whose destination must not exist).
func (r Root) TempPath(purpose string) string {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return r.FS.PathJoin(r.Dir, tempPrefix+purpose+"-"+hex.EncodeToString(rnd[:]))
}

// Publish makes the complete image in tmpDir (which must be under the root)
// the live one and returns its name. The steps are ordered so that a crash at
// any point leaves CURRENT naming either the old image or the new one:
// rename tmpDir to the next image name, fsync the root, write CURRENT.tmp,
// fsync it, rename it over CURRENT, fsync the root. The old image is left for
// the caller to remove once nothing reads it (RemoveImage, or the next Sweep).
func (r Root) Publish(tmpDir string) (string, error) {
	names, err := r.FS.List(r.Dir)
	if err != nil {
		return "", fmt.Errorf("keel/engine: list %s: %w", r.Dir, err)
	}
	var next uint64 = 1
	for _, n := range names {
		if v, ok := parseImageName(n); ok && v >= next {
			next = v + 1
		}
	}
	name := imageName(next)
	if err := r.FS.Rename(tmpDir, r.FS.PathJoin(r.Dir, name)); err != nil {
		return "", fmt.Errorf("keel/engine: publish image: %w", err)
	}
	if err := r.syncDir(); err != nil {
		return "", err
	}
	tmpCur := r.FS.PathJoin(r.Dir, currentFile+".tmp")
	f, err := r.FS.Create(tmpCur, vfs.WriteCategoryUnspecified)
	if err != nil {
		return "", fmt.Errorf("keel/engine: write %s: %w", currentFile, err)
	}
	if _, err := f.Write([]byte(name + "\n")); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("keel/engine: write %s: %w", currentFile, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("keel/engine: sync %s: %w", currentFile, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("keel/engine: close %s: %w", currentFile, err)
	}
	if err := r.FS.Rename(tmpCur, r.FS.PathJoin(r.Dir, currentFile)); err != nil {
		return "", fmt.Errorf("keel/engine: replace %s: %w", currentFile, err)
	}
	if err := r.syncDir(); err != nil {
		return "", err
	}
	return name, nil
}

func (r Root) syncDir() error { return syncDir(r.FS, r.Dir) }

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("keel/engine: open %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return fmt.Errorf("keel/engine: sync %s: %w", dir, err)
	}
	return d.Close()
}

// create makes the root directory durable. A new directory's entry lives in
// its parent and survives a crash only once the parent is fsynced; without
// this, an image that Sync made durable could vanish with its root after a
// crash (and Dragonboat may already have compacted the log behind it). The
// parent is synced at the first writable open of the root in a process,
// not just on creation, because an earlier run may have crashed between
// creating the directory and syncing it. Later opens in the same process
// skip it (durableRoots): an fsync, once returned, holds until the entry
// changes, and a root removed and made again is synced by mkdirAllSynced.
// That keeps one of the seven fsyncs of an idle tablet's writable reopen
// out of the write that wakes it.
func (r Root) create() error {
	if err := mkdirAllSynced(r.FS, r.Dir); err != nil {
		return fmt.Errorf("keel/engine: create %s: %w", r.Dir, err)
	}
	key, cacheable := durableRootKey(r)
	if cacheable {
		if _, ok := durableRoots.Load(key); ok {
			return nil
		}
	}
	if err := syncDir(r.FS, r.FS.PathDir(r.Dir)); err != nil {
		return err
	}
	if cacheable {
		durableRoots.Store(key, struct{}{})
	}
	return nil
}

// durableRoots holds the roots (rootKey) whose directory entry this
// process has fsynced in the parent. Keyed by filesystem as well as path,
// so a test's fresh in-memory or crash-cloned filesystem starts unsynced.
var durableRoots sync.Map

type rootKey struct {
	fs  vfs.FS
	dir string
}

// durableRootKey returns r's key, or false when r's filesystem is neither
// a pointer nor an empty struct (vfs.Default): comparing any other value
// could panic or tell apart nothing, so such roots sync every time.
func durableRootKey(r Root) (rootKey, bool) {
	if r.FS == nil {
		return rootKey{}, false
	}
	t := reflect.TypeOf(r.FS)
	if t.Kind() != reflect.Pointer && (t.Kind() != reflect.Struct || t.Size() != 0) {
		return rootKey{}, false
	}
	return rootKey{fs: r.FS, dir: r.Dir}, true
}

// mkdirAllSynced is MkdirAll that fsyncs the parent of every directory it
// creates.
func mkdirAllSynced(fs vfs.FS, dir string) error {
	if _, err := fs.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	parent := fs.PathDir(dir)
	if parent != dir {
		if err := mkdirAllSynced(fs, parent); err != nil {
			return err
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if parent == dir {
		return nil
	}
	return syncDir(fs, parent)
}

// Sweep removes every image that CURRENT does not name, every work directory
// and a stray CURRENT.tmp. It must not run while another goroutine is
// building a temp dir under the same root.
func (r Root) Sweep() error {
	cur, err := r.Current()
	if err != nil {
		return err
	}
	names, err := r.FS.List(r.Dir)
	if err != nil {
		return fmt.Errorf("keel/engine: list %s: %w", r.Dir, err)
	}
	for _, n := range r.leftovers(names, cur) {
		if err := r.FS.RemoveAll(r.FS.PathJoin(r.Dir, n)); err != nil {
			return fmt.Errorf("keel/engine: remove leftover %s: %w", n, err)
		}
	}
	return nil
}

// Leftovers lists what Sweep would remove, without removing anything.
func (r Root) Leftovers() ([]string, error) {
	cur, err := r.Current()
	if err != nil {
		return nil, err
	}
	names, err := r.FS.List(r.Dir)
	if err != nil {
		return nil, fmt.Errorf("keel/engine: list %s: %w", r.Dir, err)
	}
	return r.leftovers(names, cur), nil
}

func (r Root) leftovers(names []string, cur string) []string {
	var out []string
	for _, n := range names {
		_, isImage := parseImageName(n)
		if (isImage && n != cur) || strings.HasPrefix(n, tempPrefix) || n == currentFile+".tmp" || n == closedTmpFile {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// RemoveImage deletes an image that is no longer live.
func (r Root) RemoveImage(name string) error {
	cur, err := r.Current()
	if err != nil {
		return err
	}
	if name == cur {
		return fmt.Errorf("keel/engine: refusing to remove the live image %s", name)
	}
	return r.FS.RemoveAll(r.FS.PathJoin(r.Dir, name))
}
