package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/internal/testkit/testutil"
)

// batchKey is the marker key batch n writes.
func batchKey(n int) []byte { return []byte(fmt.Sprintf("batch-%06d", n)) }

// commitNumbered commits batch n: its marker key (with a value whose size
// varies so WAL blocks fill unevenly), an overwrite of a shared "last" key,
// a delete of the previous batch's scratch key, and applied index n.
func commitNumbered(t *testing.T, e *Engine, n int, r *rand.Rand) {
	t.Helper()
	b := e.NewBatch()
	defer b.Close()
	val := make([]byte, r.IntN(3000))
	for i := range val {
		val[i] = byte(n + i)
	}
	must(t, b.Put(batchKey(n), val))
	must(t, b.Put([]byte("last"), []byte(fmt.Sprint(n))))
	must(t, b.Delete([]byte(fmt.Sprintf("scratch-%06d", n-1))))
	must(t, b.Put([]byte(fmt.Sprintf("scratch-%06d", n)), nil))
	must(t, b.SetAppliedIndex(uint64(n)))
	must(t, b.Commit(false))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkPrefix asserts that e holds exactly the effects of batches 1..N,
// where N is its applied index, and returns N.
func checkPrefix(t *testing.T, e *Engine, total int) int {
	t.Helper()
	applied, err := e.AppliedIndex()
	must(t, err)
	n := int(applied)
	if n > total {
		t.Fatalf("applied index %d is past the last committed batch %d", n, total)
	}
	v, err := e.NewView()
	must(t, err)
	defer v.Close()
	if va, _ := v.AppliedIndex(); va != applied {
		t.Fatalf("view applied %d, engine %d", va, applied)
	}
	next := 1
	var last string
	var scratch []string
	err = v.Scan(nil, nil, 0, func(k, val []byte) bool {
		switch {
		case string(k) == "last":
			last = string(val)
		case len(k) > 8 && string(k[:8]) == "scratch-":
			scratch = append(scratch, string(k))
		default:
			if string(k) != string(batchKey(next)) {
				t.Errorf("applied index %d: found key %q, want %q", n, k, batchKey(next))
				return false
			}
			if len(val) > 0 && val[0] != byte(next) {
				t.Errorf("batch %d: value starts %d", next, val[0])
			}
			next++
		}
		return true
	})
	must(t, err)
	if t.Failed() {
		t.FailNow()
	}
	if next-1 != n {
		t.Fatalf("applied index %d but batches 1..%d are present", n, next-1)
	}
	wantLast := ""
	if n > 0 {
		wantLast = fmt.Sprint(n)
	}
	if last != wantLast {
		t.Fatalf("applied index %d but last=%q", n, last)
	}
	if n > 0 && (len(scratch) != 1 || scratch[0] != fmt.Sprintf("scratch-%06d", n)) {
		t.Fatalf("applied index %d but scratch keys %v", n, scratch)
	}
	return n
}

// TestCrashKeepsCommittedPrefix commits numbered batches, syncs some of
// them, takes a crash image that keeps a random share of the unsynced
// writes, and reopens it: the image must hold exactly batches 1..N for its
// applied index N, with N at least the last synced batch. Without a WAL
// (the default) N is the last flush, whoever started it; odd iterations
// run with Options.WAL, where Pebble's WAL replays a prefix past it, and
// reopen WAL-less, which must convert without losing that prefix.
func TestCrashKeepsCommittedPrefix(t *testing.T) {
	seed := testutil.Seed(t)
	iterations := 60
	if testing.Short() {
		iterations = 15
	}
	var recovered, synced, total int
	for it := 0; it < iterations; it++ {
		r := rand.New(rand.NewPCG(seed, uint64(it)))
		fs := vfs.NewCrashableMem()
		// Small memtables so some iterations flush to sstables mid-run.
		opts := Options{FS: fs, Logger: quietLogger(), MemTableSize: 256 << 10, CacheSize: 1 << 20, WAL: it%2 == 1}
		e, err := OpenRoot("/data/replica", opts)
		must(t, err)
		n := 20 + r.IntN(150)
		lastSynced := 0
		for i := 1; i <= n; i++ {
			commitNumbered(t, e, i, r)
			switch r.IntN(12) {
			case 0:
				must(t, e.Sync())
				lastSynced = i
			case 1:
				if r.IntN(4) == 0 {
					must(t, e.DB().Flush())
				}
			}
		}
		pct := []int{0, 10, 50, 90, 100}[r.IntN(5)]
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: r})
		must(t, e.Close())

		opts.FS, opts.WAL = clone, false
		e2, err := OpenRoot("/data/replica", opts)
		if err != nil {
			t.Fatalf("iteration %d (%d%% unsynced kept): reopen after crash: %v", it, pct, err)
		}
		got := checkPrefix(t, e2, n)
		if got < lastSynced {
			t.Fatalf("iteration %d (%d%% unsynced kept): applied index %d is below the last synced batch %d",
				it, pct, got, lastSynced)
		}
		// The recovered image keeps working: new batches continue from it.
		commitNumbered(t, e2, got+1, r)
		must(t, e2.Sync())
		if checkPrefix(t, e2, got+1) != got+1 {
			t.Fatalf("iteration %d: commit after recovery did not apply", it)
		}
		must(t, e2.Close())
		recovered += got
		synced += lastSynced
		total += n
	}
	t.Logf("%d iterations: %d batches committed, %d synced, %d recovered", iterations, total, synced, recovered)
}

// TestSyncMakesDurable: after Sync, a crash that keeps no unsynced data
// still has everything committed before the Sync. The second half checks
// the crash harness itself: without a Sync nothing of the batches survives
// such a crash, so the first half is not passing vacuously.
func TestSyncMakesDurable(t *testing.T) {
	r := rand.New(rand.NewPCG(testutil.Seed(t), 99))
	fs := vfs.NewCrashableMem()
	opts := Options{FS: fs, Logger: quietLogger()}
	e, err := OpenRoot("/r", opts)
	must(t, err)
	defer e.Close()
	must(t, e.SetIdentity(Identity{ShardID: 4, ReplicaID: 5}))
	for i := 1; i <= 50; i++ {
		commitNumbered(t, e, i, r)
	}
	must(t, e.Sync())
	for i := 51; i <= 60; i++ {
		commitNumbered(t, e, i, r)
	}
	crash := func() *Engine {
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
		o := opts
		o.FS = clone
		e2, err := OpenRoot("/r", o)
		must(t, err)
		t.Cleanup(func() { _ = e2.Close() })
		return e2
	}
	e2 := crash()
	if n := checkPrefix(t, e2, 60); n != 50 {
		t.Fatalf("after Sync at 50 and a crash keeping nothing unsynced: applied %d, want 50", n)
	}
	if id, ok, err := e2.Identity(); err != nil || !ok || id != (Identity{4, 5}) {
		t.Fatalf("identity after crash: %v %v %v", id, ok, err)
	}
	must(t, e.Sync())
	if n := checkPrefix(t, crash(), 60); n != 60 {
		t.Fatalf("after the second Sync: applied %d, want 60", n)
	}

	// Harness check on a fresh image: unsynced batches do not survive.
	fs2 := vfs.NewCrashableMem()
	e3, err := OpenRoot("/r", Options{FS: fs2, Logger: quietLogger()})
	must(t, err)
	defer e3.Close()
	for i := 1; i <= 5; i++ {
		commitNumbered(t, e3, i, r)
	}
	e4, err := OpenRoot("/r", Options{FS: fs2.CrashClone(vfs.CrashCloneCfg{}), Logger: quietLogger()})
	must(t, err)
	defer e4.Close()
	if n := checkPrefix(t, e4, 5); n != 0 {
		t.Fatalf("unsynced batches survived a crash that keeps no unsynced data (applied %d): "+
			"the crash harness does not model lost writes", n)
	}
}
