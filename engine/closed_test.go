package engine

import (
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/internal/testkit/testutil"
)

// TestClosedRecord: a clean close records the applied index and identity;
// the record stops counting as soon as the tablet is opened for writing
// again (even with nothing written), and a damaged one never counts.
func TestClosedRecord(t *testing.T) {
	r := rand.New(rand.NewPCG(testutil.Seed(t), 7))
	dir := t.TempDir()
	id := Identity{ShardID: 3, ReplicaID: 9}
	o := Options{Logger: quietLogger(), Identity: &id}
	root := NewRoot(dir, nil)
	if _, ok := root.ReadClosed(); ok {
		t.Fatal("closed record on a root that never existed")
	}
	e, err := OpenRoot(dir, o)
	must(t, err)
	for i := 1; i <= 5; i++ {
		commitNumbered(t, e, i, r)
	}
	must(t, e.Close())
	c, ok := root.ReadClosed()
	if !ok || c.Applied != 5 || !c.HasIdentity || c.Identity != id {
		t.Fatalf("after a clean close: %+v ok=%v, want applied 5, identity %v", c, ok, id)
	}
	// A read-only open changes nothing on disk: the record still counts.
	ro, err := OpenRoot(dir, Options{Logger: quietLogger(), ReadOnly: true})
	must(t, err)
	must(t, ro.Close())
	if _, ok := root.ReadClosed(); !ok {
		t.Fatal("a read-only open invalidated the closed record")
	}
	// A writable open, nothing written: Pebble starts a new MANIFEST.
	e, err = OpenRoot(dir, o)
	must(t, err)
	if c, ok := root.ReadClosed(); ok {
		t.Fatalf("closed record %+v still counts while the tablet is open for writing", c)
	}
	commitNumbered(t, e, 6, r)
	must(t, e.Close())
	if c, ok := root.ReadClosed(); !ok || c.Applied != 6 {
		t.Fatalf("after the second close: %+v ok=%v, want applied 6", c, ok)
	}
	// Damage: every single-byte change is refused.
	path := root.FS.PathJoin(dir, closedFile)
	good := readFile(t, root.FS, path)
	for i := range good {
		bad := append([]byte(nil), good...)
		bad[i] ^= 0x10
		writeFSFile(t, root.FS, path, bad)
		if c, ok := root.ReadClosed(); ok {
			t.Fatalf("closed record with byte %d changed counted: %+v", i, c)
		}
	}
	writeFSFile(t, root.FS, path, good[:len(good)-1])
	if _, ok := root.ReadClosed(); ok {
		t.Fatal("a truncated closed record counted")
	}
}

// TestClosedRecordAfterCrash: tablets opened, written, synced, closed
// cleanly or crashed at random; whenever a crashed image still has a
// closed record that counts, its applied index is exactly the one a real
// open recovers, with the data to match.
func TestClosedRecordAfterCrash(t *testing.T) {
	seed := testutil.Seed(t)
	iterations := 40
	if testing.Short() {
		iterations = 10
	}
	var counted, crashes int
	for it := 0; it < iterations; it++ {
		r := rand.New(rand.NewPCG(seed, uint64(it)))
		fs := vfs.NewCrashableMem()
		id := Identity{ShardID: 1, ReplicaID: 1}
		opts := Options{FS: fs, Logger: quietLogger(), MemTableSize: 256 << 10, CacheSize: 1 << 20, Identity: &id}
		root := NewRoot("/data/replica", fs)
		n := 0
		for round := 0; round < 6; round++ {
			e, err := OpenRoot("/data/replica", opts)
			must(t, err)
			if got := checkPrefix(t, e, n); got != n {
				t.Fatalf("iteration %d round %d: reopened at %d, want %d", it, round, got, n)
			}
			for k := r.IntN(20); k > 0; k-- {
				n++
				commitNumbered(t, e, n, r)
				if r.IntN(8) == 0 {
					must(t, e.Sync())
				}
			}
			if r.IntN(2) == 0 {
				must(t, e.Close())
			}
			pct := []int{0, 50, 100}[r.IntN(3)]
			clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: r})
			_ = e.Close()
			crashes++
			croot := NewRoot("/data/replica", clone)
			c, ok := croot.ReadClosed()
			co := opts
			co.FS = clone
			e2, err := OpenRoot("/data/replica", co)
			must(t, err)
			got := checkPrefix(t, e2, n)
			must(t, e2.Close())
			if ok {
				counted++
				if c.Applied != uint64(got) {
					t.Fatalf("iteration %d round %d (%d%% unsynced kept): closed record says %d, the image holds %d",
						it, round, pct, c.Applied, got)
				}
			}
			// Go on from the crashed state.
			fs, n = clone, got
			opts.FS = clone
			root = croot
		}
		_ = root
	}
	if counted == 0 {
		t.Fatal("no closed record ever counted: the test checks nothing")
	}
	t.Logf("%d crashes, %d with a closed record that counted", crashes, counted)
}

func readFile(t *testing.T, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	must(t, err)
	defer f.Close()
	st, err := f.Stat()
	must(t, err)
	b := make([]byte, st.Size())
	_, err = f.ReadAt(b, 0)
	must(t, err)
	return b
}

func writeFSFile(t *testing.T, fs vfs.FS, path string, b []byte) {
	t.Helper()
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	must(t, err)
	_, err = f.Write(b)
	must(t, err)
	must(t, f.Close())
}
