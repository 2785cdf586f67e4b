package engine

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/keel-db/keel/internal/testkit/testutil"
)

// untar extracts a testdata archive into dir on the OS filesystem.
func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	must(t, err)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	must(t, err)
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		must(t, err)
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(path, filepath.Clean(dir)+string(filepath.Separator)) {
			t.Fatalf("archive entry %q escapes", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			must(t, os.MkdirAll(path, 0o755))
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			must(t, err)
			must(t, os.WriteFile(path, data, 0o644))
		}
	}
}

// syncTree fsyncs every file and directory under dir, so a crash clone
// keeps what vfs.Clone copied.
func syncTree(t *testing.T, fs vfs.FS, dir string) {
	t.Helper()
	for _, n := range listDir(t, fs, dir) {
		p := fs.PathJoin(dir, n)
		st, err := fs.Stat(p)
		must(t, err)
		if st.IsDir() {
			syncTree(t, fs, p)
			continue
		}
		f, err := fs.OpenReadWrite(p, vfs.WriteCategoryUnspecified)
		must(t, err)
		must(t, f.Sync())
		must(t, f.Close())
	}
	must(t, syncDir(fs, dir))
	must(t, syncDir(fs, fs.PathDir(dir)))
}

func stateHash(t *testing.T, e *Engine) StateHash {
	t.Helper()
	v, err := e.NewView()
	must(t, err)
	defer v.Close()
	h, err := v.Hash(nil)
	must(t, err)
	return h
}

// walBytes sums the sizes of the WAL files in an image directory.
func walBytes(t *testing.T, fs vfs.FS, dir string) (files int, bytes int64) {
	t.Helper()
	for _, n := range listDir(t, fs, dir) {
		if strings.HasSuffix(n, ".log") {
			st, err := fs.Stat(fs.PathJoin(dir, n))
			must(t, err)
			files++
			bytes += st.Size()
		}
	}
	return files, bytes
}

// TestConvertWALFixture opens a root written by the WAL-backed Keel
// (testdata/wal-v1.tar.gz; batches 121-200 exist only in its WAL) without
// a WAL: nothing may be lost, the conversion must itself be durable (a
// crash right after Open keeps everything), and the old WAL data is gone.
func TestConvertWALFixture(t *testing.T) {
	var want StateHash
	js, err := os.ReadFile("testdata/wal-v1.json")
	must(t, err)
	must(t, json.Unmarshal(js, &want))
	osDir := t.TempDir()
	untar(t, "testdata/wal-v1.tar.gz", osDir)
	if n, b := walBytes(t, vfs.Default, filepath.Join(osDir, "replica", "img-0000000000000001")); n == 0 || b == 0 {
		t.Fatalf("fixture holds no WAL data (%d files, %d bytes): the test converts nothing", n, b)
	}
	// Run on a crashable copy so the durability of the conversion itself is
	// checked too.
	mem := vfs.NewCrashableMem()
	if _, err := vfs.Clone(vfs.Default, mem, filepath.Join(osDir, "replica"), "/replica"); err != nil {
		t.Fatal(err)
	}
	syncTree(t, mem, "/replica")
	e, err := OpenRoot("/replica", Options{FS: mem, Logger: quietLogger()})
	must(t, err)
	if got := stateHash(t, e); got != want {
		t.Fatalf("after conversion: %+v, written as %+v", got, want)
	}
	if n := checkPrefix(t, e, 200); n != 200 {
		t.Fatalf("applied %d after conversion, want 200", n)
	}
	if id, ok, err := e.Identity(); err != nil || !ok || id != (Identity{7, 3}) {
		t.Fatalf("identity after conversion: %v %v %v", id, ok, err)
	}
	if _, b := walBytes(t, mem, e.Dir()); b != 0 {
		t.Fatalf("%d bytes of WAL left after a WAL-less open", b)
	}
	crashed, err := OpenRoot("/replica", Options{FS: mem.CrashClone(vfs.CrashCloneCfg{}), Logger: quietLogger()})
	must(t, err)
	defer crashed.Close()
	if got := stateHash(t, crashed); got != want {
		t.Fatalf("crash right after the converting open: %+v, want %+v", got, want)
	}
	// It keeps working WAL-less.
	r := rand.New(rand.NewPCG(1, 2))
	commitNumbered(t, e, 201, r)
	must(t, e.Sync())
	must(t, e.Close())
	e2, err := OpenRoot("/replica", Options{FS: mem.CrashClone(vfs.CrashCloneCfg{}), Logger: quietLogger()})
	must(t, err)
	defer e2.Close()
	if n := checkPrefix(t, e2, 201); n != 201 {
		t.Fatalf("applied %d after a synced batch on the converted image, want 201", n)
	}
}

// TestConvertFromWALOption: an image run with Options.WAL, crashed after a
// WAL sync, reopens WAL-less at exactly the synced state.
func TestConvertFromWALOption(t *testing.T) {
	r := rand.New(rand.NewPCG(testutil.Seed(t), 3))
	mem := vfs.NewCrashableMem()
	e, err := OpenRoot("/r", Options{FS: mem, Logger: quietLogger(), WAL: true})
	must(t, err)
	defer e.Close()
	for i := 1; i <= 100; i++ {
		commitNumbered(t, e, i, r)
	}
	must(t, e.Sync())
	want := stateHash(t, e)
	for i := 101; i <= 120; i++ {
		commitNumbered(t, e, i, r) // in the WAL, unsynced: lost by the crash
	}
	clone := mem.CrashClone(vfs.CrashCloneCfg{})
	if _, b := walBytes(t, clone, e.Dir()); b == 0 {
		t.Fatalf("the WAL-mode image has no WAL data: nothing to convert")
	}
	e2, err := OpenRoot("/r", Options{FS: clone, Logger: quietLogger()})
	must(t, err)
	defer e2.Close()
	if got := stateHash(t, e2); got != want {
		t.Fatalf("WAL-less reopen of a WAL image: %+v, want %+v", got, want)
	}
	checkPrefix(t, e2, 100)
}

// TestSyncCostsNothingWhenClean: Sync flushes only when something was
// committed since the last flush, and a Sync after a flush Keel did not
// start (an empty flush in Pebble's terms) is still a success.
func TestSyncCostsNothingWhenClean(t *testing.T) {
	e, err := OpenRoot("/r", Options{FS: vfs.NewMem(), Logger: quietLogger()})
	must(t, err)
	defer e.Close()
	flushes := func() int64 { return e.Metrics().Flush.Count }
	write(t, e, 1, "a", "1")
	must(t, e.Sync())
	n := flushes()
	for i := 0; i < 10; i++ {
		must(t, e.Sync())
		must(t, e.Flush())
	}
	if got := flushes(); got != n {
		t.Fatalf("Syncs of a clean engine flushed %d times", got-n)
	}
	// Flushed behind Keel's back: the engine still thinks it is dirty, and
	// its flush finds an empty memtable.
	write(t, e, 2, "b", "2")
	must(t, e.DB().Flush())
	if err := e.Sync(); err != nil {
		t.Fatalf("Sync over an already flushed memtable: %v", err)
	}
	if n, _ := e.AppliedIndex(); n != 2 {
		t.Fatalf("applied %d", n)
	}
}

// TestCloseFlushes: a clean shutdown leaves nothing to replay.
func TestCloseFlushes(t *testing.T) {
	mem := vfs.NewCrashableMem()
	r := rand.New(rand.NewPCG(testutil.Seed(t), 4))
	e, err := OpenRoot("/r", Options{FS: mem, Logger: quietLogger()})
	must(t, err)
	for i := 1; i <= 30; i++ {
		commitNumbered(t, e, i, r)
	}
	must(t, e.Close())
	must(t, e.Close())
	e2, err := OpenRoot("/r", Options{FS: mem.CrashClone(vfs.CrashCloneCfg{}), Logger: quietLogger()})
	must(t, err)
	defer e2.Close()
	if n := checkPrefix(t, e2, 30); n != 30 {
		t.Fatalf("after Close and a crash keeping nothing unsynced: applied %d, want 30", n)
	}
}

// TestSyncFaultAtEveryOp fails every filesystem operation from the k-th
// one on during a Sync (the disk died there), for every k until a Sync
// succeeds. A Sync that returns nil must have made everything durable; a
// failed one must say so; either way the image reopens as a consistent
// prefix holding at least everything an earlier Sync covered. Pebble's
// Fatalf (a MANIFEST error) is a crash: the engine is abandoned.
func TestSyncFaultAtEveryOp(t *testing.T) {
	seed := testutil.Seed(t)
	fatals := 0
	for k := 0; ; k++ {
		r := rand.New(rand.NewPCG(seed, uint64(k)))
		mem := vfs.NewCrashableMem()
		var armed atomic.Bool
		var ops atomic.Int64
		efs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
			if armed.Load() && ops.Add(1) > int64(k) {
				return errorfs.ErrInjected
			}
			return nil
		}))
		var fatal atomic.Bool
		opts := Options{FS: efs, Logger: quietLogger(), testFatal: func(string) {
			fatal.Store(true)
			select {} // the process is gone; Pebble holds its mutex here
		}}
		e, err := OpenRoot("/r", opts)
		must(t, err)
		for i := 1; i <= 40; i++ {
			commitNumbered(t, e, i, r)
		}
		must(t, e.Sync())
		for i := 41; i <= 80; i++ {
			commitNumbered(t, e, i, r)
		}
		armed.Store(true)
		syncErr := e.Sync()
		if syncErr != nil && strings.Contains(syncErr.Error(), "pebble fatal error") {
			// The engine reports the fatal to the waiting Sync before the
			// test hook runs (the hook never returns), so Sync can return
			// before fatal is set.
			fatal.Store(true)
		}
		if syncErr != nil && !errors.Is(syncErr, errorfs.ErrInjected) && !fatal.Load() {
			t.Fatalf("op %d: Sync failed with %v, not the injected error", k, syncErr)
		}
		if syncErr == nil && fatal.Load() {
			t.Fatalf("op %d: Sync returned nil although Pebble hit a fatal error", k)
		}
		for _, pct := range []int{0, 50, 100} {
			clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: r})
			e2, err := OpenRoot("/r", Options{FS: clone, Logger: quietLogger()})
			if err != nil {
				t.Fatalf("op %d (%d%% unsynced kept): reopen: %v", k, pct, err)
			}
			got := checkPrefix(t, e2, 80)
			must(t, e2.Close())
			if got < 40 || (syncErr == nil && got != 80) {
				t.Fatalf("op %d (%d%% unsynced kept): applied %d after Sync returned %v", k, pct, got, syncErr)
			}
		}
		if fatal.Load() {
			fatals++ // abandoned with its goroutines parked, as a dead process
		} else {
			armed.Store(false)
			_ = e.Close()
		}
		if syncErr == nil {
			t.Logf("Sync succeeded once %d filesystem operations were allowed; %d of the failures were Pebble fatals", k, fatals)
			return
		}
		if k > 200 {
			t.Fatalf("Sync still failing after %d operations", k)
		}
	}
}

// TestIdentityAtFirstOpen: Options.Identity makes a fresh tablet record
// format and identity in one flush, one sstable, durably (a crash keeping
// nothing unsynced still has both); a later open with another identity
// leaves the recorded one alone for the caller to compare.
func TestIdentityAtFirstOpen(t *testing.T) {
	mem := vfs.NewCrashableMem()
	want := Identity{ShardID: 7, ReplicaID: 3}
	e, err := OpenRoot("/r", Options{FS: mem, Logger: quietLogger(), Identity: &want})
	must(t, err)
	m := e.Metrics()
	if m.Flush.Count != 1 || m.Levels[0].TablesCount != 1 {
		t.Fatalf("fresh tablet: %d flushes, %d L0 sstables; want 1 and 1", m.Flush.Count, m.Levels[0].TablesCount)
	}
	crashed, err := OpenRoot("/r", Options{FS: mem.CrashClone(vfs.CrashCloneCfg{}), Logger: quietLogger()})
	must(t, err)
	if id, ok, err := crashed.Identity(); err != nil || !ok || id != want {
		t.Fatalf("identity after a crash: %v %v %v, want %v", id, ok, err, want)
	}
	must(t, crashed.Close())
	must(t, e.Close())

	other := Identity{ShardID: 7, ReplicaID: 4}
	e, err = OpenRoot("/r", Options{FS: mem, Logger: quietLogger(), Identity: &other})
	must(t, err)
	defer e.Close()
	if id, ok, err := e.Identity(); err != nil || !ok || id != want {
		t.Fatalf("reopened with another identity: recorded %v %v %v, want %v kept", id, ok, err, want)
	}
	// Pebble flushes the (empty) replayed log at open; no sstable results.
	if n := e.Metrics().Levels[0].TablesCount; n != 1 {
		t.Fatalf("reopen of a complete image left %d L0 sstables, want 1", n)
	}
}
