package engine

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/keel-db/keel/internal/testkit/testutil"
)

func listDir(t *testing.T, fs vfs.FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	must(t, err)
	sort.Strings(names)
	return names
}

func writeFile(t *testing.T, fs vfs.FS, path, data string) {
	t.Helper()
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	must(t, err)
	_, err = f.Write([]byte(data))
	must(t, err)
	must(t, f.Sync())
	must(t, f.Close())
}

func TestOpenRootCreatesImage(t *testing.T) {
	fs := vfs.NewMem()
	dir := "/a/b/root"
	e, err := OpenRoot(dir, Options{FS: fs, Logger: quietLogger()})
	must(t, err)
	defer e.Close()
	r := NewRoot(dir, fs)
	cur, err := r.Current()
	must(t, err)
	if cur != "img-0000000000000001" || e.Dir() != fs.PathJoin(dir, cur) {
		t.Fatalf("current %q, engine dir %q", cur, e.Dir())
	}
	if got := listDir(t, fs, dir); strings.Join(got, ",") != "CURRENT,img-0000000000000001" {
		t.Fatalf("root holds %v", got)
	}
	if n, err := e.AppliedIndex(); err != nil || n != 0 {
		t.Fatalf("fresh image applied %d, %v", n, err)
	}
	if _, ok, err := e.Identity(); ok || err != nil {
		t.Fatalf("fresh image has an identity: %v %v", ok, err)
	}
}

func TestOpenRootReadOnly(t *testing.T) {
	fs := vfs.NewMem()
	if _, err := OpenRoot("/none", Options{FS: fs, ReadOnly: true}); !errors.Is(err, ErrNotKeel) {
		t.Fatalf("read-only open of a missing root: %v", err)
	}
	e, err := OpenRoot("/r", Options{FS: fs, Logger: quietLogger()})
	must(t, err)
	write(t, e, 3, "k", "v")
	must(t, e.Close())
	ro, err := OpenRoot("/r", Options{FS: fs, ReadOnly: true, Logger: quietLogger()})
	must(t, err)
	defer ro.Close()
	if n, _ := ro.AppliedIndex(); n != 3 {
		t.Fatalf("read-only applied %d", n)
	}
	if v, err := ro.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("read-only get: %q %v", v, err)
	}
}

// buildImage creates a complete image in a temp dir under r holding kv.
func buildImage(t *testing.T, r Root, idx uint64, kv ...string) string {
	t.Helper()
	tmp, err := r.TempDir("test")
	must(t, err)
	e, err := Open(tmp, Options{FS: r.FS, Logger: quietLogger()})
	must(t, err)
	write(t, e, idx, kv...)
	must(t, e.Sync())
	must(t, e.Close())
	return tmp
}

func TestPublishSwitchesImage(t *testing.T) {
	fs := vfs.NewMem()
	dir := "/root"
	e, err := OpenRoot(dir, Options{FS: fs, Logger: quietLogger()})
	must(t, err)
	write(t, e, 1, "gen", "1")
	r := NewRoot(dir, fs)

	tmp := buildImage(t, r, 10, "gen", "2")
	if !strings.HasPrefix(filepath.Base(tmp), "tmp-test-") {
		t.Fatalf("temp dir %q", tmp)
	}
	name, err := r.Publish(tmp)
	must(t, err)
	if name != "img-0000000000000002" {
		t.Fatalf("published as %q", name)
	}
	if cur, err := r.Current(); err != nil || cur != name {
		t.Fatalf("current %q %v", cur, err)
	}
	// The old image stays until nothing reads it; it is a leftover now.
	if left, err := r.Leftovers(); err != nil || strings.Join(left, ",") != "img-0000000000000001" {
		t.Fatalf("leftovers %v %v", left, err)
	}
	if err := r.RemoveImage(name); err == nil {
		t.Fatalf("RemoveImage removed the live image")
	}
	// The engine on the old image still works until closed.
	if v, err := e.Get([]byte("gen")); err != nil || string(v) != "1" {
		t.Fatalf("old engine get: %q %v", v, err)
	}
	must(t, e.Close())

	e2, err := OpenRoot(dir, Options{FS: fs, Logger: quietLogger()})
	must(t, err)
	defer e2.Close()
	if v, err := e2.Get([]byte("gen")); err != nil || string(v) != "2" {
		t.Fatalf("reopen after publish reads %q %v", v, err)
	}
	if n, _ := e2.AppliedIndex(); n != 10 {
		t.Fatalf("reopen after publish applied %d", n)
	}
	// OpenRoot swept the old image (CLOSED is the last clean close's record).
	if got := listDir(t, fs, dir); strings.Join(got, ",") != "CLOSED,CURRENT,"+name {
		t.Fatalf("after reopen the root holds %v", got)
	}
	// Numbers keep increasing even after older images are gone.
	tmp = buildImage(t, r, 11, "gen", "3")
	if name3, err := r.Publish(tmp); err != nil || name3 != "img-0000000000000003" {
		t.Fatalf("third publish %q %v", name3, err)
	}
	must(t, r.RemoveImage("img-0000000000000002"))
}

func TestSweepRemovesLeftovers(t *testing.T) {
	fs := vfs.NewMem()
	dir := "/root"
	e, err := OpenRoot(dir, Options{FS: fs, Logger: quietLogger()})
	must(t, err)
	must(t, e.Close())
	r := NewRoot(dir, fs)
	stale := []string{"img-0000000000000000", "img-0000000000000007", "tmp-x", "tmp-checkpoint-abc", "CURRENT.tmp", "CLOSED.tmp"}
	for _, n := range stale {
		if strings.HasSuffix(n, ".tmp") {
			writeFile(t, fs, fs.PathJoin(dir, n), "img-0000000000000007\n")
			continue
		}
		must(t, fs.MkdirAll(fs.PathJoin(dir, n, "sub"), 0o755))
		writeFile(t, fs, fs.PathJoin(dir, n, "sub", "f"), "x")
	}
	p := r.TempPath("cp")
	if _, err := fs.Stat(p); err == nil || !strings.HasPrefix(filepath.Base(p), "tmp-cp-") {
		t.Fatalf("TempPath %q must name a missing tmp- path", p)
	}
	// Things Keel does not own are left alone.
	writeFile(t, fs, fs.PathJoin(dir, "README"), "mine")
	must(t, fs.MkdirAll(fs.PathJoin(dir, "img-notanumber"), 0o755))

	left, err := r.Leftovers()
	must(t, err)
	want := append([]string(nil), stale...)
	sort.Strings(want)
	if strings.Join(left, ",") != strings.Join(want, ",") {
		t.Fatalf("leftovers %v, want %v", left, want)
	}
	if got := listDir(t, fs, dir); len(got) != len(stale)+5 { // CLOSED, CURRENT, the image, README, img-notanumber
		t.Fatalf("Leftovers removed something: %v", got)
	}
	e, err = OpenRoot(dir, Options{FS: fs, Logger: quietLogger()}) // sweeps
	must(t, err)
	defer e.Close()
	got := listDir(t, fs, dir)
	if strings.Join(got, ",") != "CLOSED,CURRENT,README,img-0000000000000001,img-notanumber" {
		t.Fatalf("after sweep: %v", got)
	}
}

func TestCorruptCurrent(t *testing.T) {
	cases := map[string]string{
		"empty":           "",
		"garbage":         "hello\n",
		"binary":          "\x00\xff\x00\xfe",
		"short name":      "img-1\n",
		"not a number":    "img-00000000000000x1\n",
		"path escape":     "../../etc/passwd\n",
		"missing image":   "img-0000000000000009\n",
		"long":            strings.Repeat("img-0000000000000001", 100),
		"two lines":       "img-0000000000000001\nimg-0000000000000001\n",
		"trailing spaces": "img-0000000000000001  \n",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			fs := vfs.NewMem()
			e, err := OpenRoot("/r", Options{FS: fs, Logger: quietLogger()})
			must(t, err)
			must(t, e.Close())
			writeFile(t, fs, "/r/CURRENT", content)
			if _, err := OpenRoot("/r", Options{FS: fs, Logger: quietLogger()}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("OpenRoot: got %v, want ErrCorrupt", err)
			}
			r := NewRoot("/r", fs)
			if err := r.Sweep(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Sweep with a corrupt CURRENT: %v", err)
			}
			// Nothing was removed on the strength of a corrupt pointer.
			if got := listDir(t, fs, "/r"); strings.Join(got, ",") != "CLOSED,CURRENT,img-0000000000000001" {
				t.Fatalf("root after failed open: %v", got)
			}
		})
	}
	t.Run("current is a directory", func(t *testing.T) {
		fs := vfs.NewMem()
		must(t, fs.MkdirAll("/r/CURRENT", 0o755))
		if _, err := OpenRoot("/r", Options{FS: fs, Logger: quietLogger()}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("OpenRoot with a directory for CURRENT: got %v, want ErrCorrupt", err)
		}
	})
	t.Run("image is a file", func(t *testing.T) {
		fs := vfs.NewMem()
		must(t, fs.MkdirAll("/r", 0o755))
		writeFile(t, fs, "/r/img-0000000000000003", "not a directory")
		writeFile(t, fs, "/r/CURRENT", "img-0000000000000003\n")
		if _, err := NewRoot("/r", fs).Current(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Current naming a plain file: got %v, want ErrCorrupt", err)
		}
	})
}

// TestCurrentIOErrorIsNotCorruption: a filesystem error while reading
// CURRENT or looking up the image it names may be transient (EIO, a
// permission problem an operator can fix), so Current must return it as
// itself and never as ErrCorrupt, and OpenRoot must not sweep or create
// anything on the strength of it.
func TestCurrentIOErrorIsNotCorruption(t *testing.T) {
	eio := &os.PathError{Op: "read", Path: "injected", Err: syscall.EIO}
	eacces := &os.PathError{Op: "stat", Path: "injected", Err: syscall.EACCES}
	cases := []struct {
		name   string
		kind   errorfs.OpKind
		suffix string
		err    error
	}{
		{"EIO opening CURRENT", errorfs.OpOpen, "/CURRENT", eio},
		{"EIO reading CURRENT", errorfs.OpFileRead, "/CURRENT", eio},
		{"EIO stat of CURRENT", errorfs.OpFileStat, "/CURRENT", eio},
		{"EACCES stat of image dir", errorfs.OpStat, "/img-0000000000000001", eacces},
		{"EIO stat of image dir", errorfs.OpStat, "/img-0000000000000001", eio},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			e, err := OpenRoot("/r", Options{FS: mem, Logger: quietLogger()})
			must(t, err)
			must(t, e.Close())
			must(t, mem.MkdirAll("/r/tmp-leftover", 0o755))
			var fired atomic.Bool
			efs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
				if op.Kind == tc.kind && strings.HasSuffix(op.Path, tc.suffix) {
					fired.Store(true)
					return tc.err
				}
				return nil
			}))
			r := NewRoot("/r", efs)
			_, err = r.Current()
			if !fired.Load() {
				t.Fatalf("the injected error never fired")
			}
			if errors.Is(err, ErrCorrupt) {
				t.Fatalf("Current reported an I/O error as corruption: %v", err)
			}
			if !errors.Is(err, tc.err) || !errors.Is(err, tc.err.(*os.PathError).Err) {
				t.Fatalf("Current: got %v, want the injected %v wrapped", err, tc.err)
			}
			if _, err := OpenRoot("/r", Options{FS: efs, Logger: quietLogger()}); errors.Is(err, ErrCorrupt) || !errors.Is(err, tc.err) {
				t.Fatalf("OpenRoot: got %v, want the injected error and not ErrCorrupt", err)
			}
			if err := r.Sweep(); errors.Is(err, ErrCorrupt) || !errors.Is(err, tc.err) {
				t.Fatalf("Sweep: got %v, want the injected error and not ErrCorrupt", err)
			}
			// Nothing was swept or created while the pointer was unreadable.
			if got := listDir(t, mem, "/r"); strings.Join(got, ",") != "CLOSED,CURRENT,img-0000000000000001,tmp-leftover" {
				t.Fatalf("root after failed opens: %v", got)
			}
		})
	}
}

func TestCorruptMetadata(t *testing.T) {
	dir := t.TempDir()
	e, err := OpenRoot(dir, Options{Logger: quietLogger()})
	must(t, err)
	// Keel metadata written behind the engine's back (as a damaged disk or
	// a foreign tool would) must give ErrCorrupt, not a panic or a value.
	// The DB has no WAL: writes behind the engine's back are unsynced and
	// untracked, so the test flushes them itself.
	must(t, e.DB().Set(keyApplied, []byte{1, 2, 3}, pebble.NoSync))
	must(t, e.DB().Set(keyIdentity, []byte{1}, pebble.NoSync))
	if _, err := e.AppliedIndex(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short applied record: %v", err)
	}
	if _, _, err := e.Identity(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short identity record: %v", err)
	}
	v, err := e.NewView()
	must(t, err)
	if _, err := v.Hash(nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("hash over a corrupt applied record: %v", err)
	}
	must(t, v.Close())
	must(t, e.DB().Set(keyFormat, []byte{FormatVersion + 1}, pebble.NoSync))
	must(t, e.DB().Flush())
	must(t, e.Close())
	if _, err := OpenRoot(dir, Options{Logger: quietLogger()}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("newer data format: %v", err)
	}
}

// TestPublishCrashAtEveryStep fails every filesystem operation from the
// k-th one on during Publish (the process died there), then takes a crash
// image keeping a random share of unsynced writes. Whatever k, the root
// must open and show either the old image or the new one, and once Publish
// has returned, the new one.
func TestPublishCrashAtEveryStep(t *testing.T) {
	seed := testutil.Seed(t)
	for k := 0; ; k++ {
		mem := vfs.NewCrashableMem()
		e, err := OpenRoot("/root", Options{FS: mem, Logger: quietLogger()})
		must(t, err)
		write(t, e, 1, "gen", "old")
		must(t, e.Sync())
		must(t, e.Close())
		tmp := buildImage(t, NewRoot("/root", mem), 2, "gen", "new")

		var ops atomic.Int64
		efs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
			if ops.Add(1) > int64(k) {
				return errorfs.ErrInjected
			}
			return nil
		}))
		_, pubErr := NewRoot("/root", efs).Publish(tmp)
		r := rand.New(rand.NewPCG(seed, uint64(k)))
		for _, pct := range []int{0, 50, 100} {
			clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: r})
			e2, err := OpenRoot("/root", Options{FS: clone, Logger: quietLogger()})
			if err != nil {
				t.Fatalf("crash at op %d (%d%% unsynced kept): open: %v", k, pct, err)
			}
			v, err := e2.Get([]byte("gen"))
			must(t, err)
			must(t, e2.Close())
			if string(v) != "old" && string(v) != "new" {
				t.Fatalf("crash at op %d: gen=%q", k, v)
			}
			if pubErr == nil && string(v) != "new" {
				t.Fatalf("Publish returned but a crash (%d%% unsynced kept) shows the old image", pct)
			}
		}
		if pubErr == nil {
			t.Logf("Publish needs %d filesystem operations; crashed at each", k)
			return
		}
		if !errors.Is(pubErr, errorfs.ErrInjected) {
			t.Fatalf("Publish failed with %v", pubErr)
		}
		if k > 100 {
			t.Fatalf("Publish still failing after %d operations", k)
		}
	}
}

func TestIdentityRoundTrip(t *testing.T) {
	dir := t.TempDir()
	e, err := OpenRoot(dir, Options{Logger: quietLogger()})
	must(t, err)
	want := Identity{ShardID: 1<<64 - 1, ReplicaID: 42}
	must(t, e.SetIdentity(want))
	got, ok, err := e.Identity()
	if err != nil || !ok || got != want {
		t.Fatalf("identity %v %v %v", got, ok, err)
	}
	if got.String() != "shard 18446744073709551615 replica 42" {
		t.Fatalf("String() = %q", got.String())
	}
	must(t, e.Close())
	e, err = OpenRoot(dir, Options{Logger: quietLogger()})
	must(t, err)
	defer e.Close()
	if got, ok, err := e.Identity(); err != nil || !ok || got != want {
		t.Fatalf("identity after reopen %v %v %v", got, ok, err)
	}
}

// TestRootParentSyncedOncePerProcess: the first writable open of a root
// fsyncs its parent (the root's entry), later writable opens in the same
// process do not, and a fresh filesystem value starts over.
func TestRootParentSyncedOncePerProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "root")
	parentSyncs := func(fs *countingFS) int {
		o := Options{Logger: quietLogger(), FS: fs}
		e, err := OpenRoot(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		return fs.reset()["fsync dir"]
	}
	fs := newCountingFS(vfs.Default)
	parentSyncs(fs) // creates the root and its first image
	same := parentSyncs(fs)
	fresh := newCountingFS(vfs.Default)
	unknown := parentSyncs(fresh)
	known := parentSyncs(fresh)
	if unknown != same+1 || known != same {
		t.Fatalf("directory fsyncs of a writable reopen: %d on a filesystem that synced the root, %d on a new one, then %d; want n, n+1, n", same, unknown, known)
	}
}
