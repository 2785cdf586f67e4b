package engine

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestSharedLifecycle(t *testing.T) {
	if _, err := NewShared(SharedOptions{CacheSize: -1}); err == nil {
		t.Fatal("negative cache size accepted")
	}
	sh, err := NewShared(SharedOptions{})
	must(t, err)
	if st := sh.Stats(); st.MemTableBudget != defaultMemTableBudget || st.Engines != 0 {
		t.Fatalf("defaults: %+v", st)
	}
	fs := vfs.NewMem()
	a, err := OpenRoot("/a", Options{FS: fs, Shared: sh, Logger: quietLogger()})
	must(t, err)
	b, err := OpenRoot("/b", Options{FS: fs, Shared: sh, Logger: quietLogger()})
	must(t, err)
	write(t, a, 1, "k", "a")
	write(t, b, 1, "k", "b")
	if st := sh.Stats(); st.Engines != 2 || st.MemTableBytes <= 0 || st.MemTableAllocated == 0 {
		t.Fatalf("two engines with a write each: %+v", st)
	} else if n := sh.MemTableBytes(); n != st.MemTableBytes {
		t.Fatalf("MemTableBytes() = %d, Stats says %d", n, st.MemTableBytes)
	}
	if err := sh.Close(); !errors.Is(err, ErrSharedInUse) {
		t.Fatalf("Close with engines open: %v", err)
	}
	must(t, a.Close())
	// b still reads through the shared caches after Close was refused.
	if v, err := b.Get([]byte("k")); err != nil || string(v) != "b" {
		t.Fatalf("get: %q %v", v, err)
	}
	must(t, b.Close())
	if st := sh.Stats(); st.Engines != 0 || st.MemTableBytes != 0 {
		t.Fatalf("after closing both: %+v", st)
	}
	must(t, sh.Close())
	must(t, sh.Close())
	if _, err := OpenRoot("/c", Options{FS: fs, Shared: sh, Logger: quietLogger()}); !errors.Is(err, ErrSharedClosed) {
		t.Fatalf("open on a closed Shared: %v", err)
	}
}

// TestMemTableBudget writes to 200 engines on one Shared at once, far more
// than the budget in total. Keel's count of unflushed memtable bytes,
// checked after every commit, must stay within the budget plus a small
// slack; the count must track Pebble's own figure for what it flushed; and
// the budget must have done the flushing.
func TestMemTableBudget(t *testing.T) {
	const (
		engines = 200
		batches = 60
		keys    = 20
		budget  = 8 << 20
	)
	sh, err := NewShared(SharedOptions{MemTableBudget: budget, CacheSize: 8 << 20})
	must(t, err)
	defer sh.Close()
	fs := vfs.NewMem()
	es := make([]*Engine, engines)
	for i := range es {
		e, err := OpenRoot(fmt.Sprintf("/t/%03d", i), Options{FS: fs, Shared: sh, Logger: quietLogger(), MemTableSize: 1 << 20})
		must(t, err)
		es[i] = e
	}
	var peak atomic.Int64
	var written atomic.Int64
	val := make([]byte, 200)
	var wg sync.WaitGroup
	errc := make(chan error, engines)
	for i, e := range es {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 1; n <= batches; n++ {
				b := e.NewBatch()
				for k := 0; k < keys; k++ {
					_ = b.Put([]byte(fmt.Sprintf("e%03d-b%03d-k%02d", i, n, k)), val)
				}
				_ = b.SetAppliedIndex(uint64(n))
				written.Add(int64(b.Len()))
				if err := b.Commit(false); err != nil {
					errc <- err
					_ = b.Close()
					return
				}
				_ = b.Close()
				if cur := sh.memBytes.Load(); cur > peak.Load() {
					peak.Store(cur) // racy max; a lost update only lowers it a little
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	st := sh.Stats()
	const slack = budget / 4
	t.Logf("wrote %d MiB; peak unflushed %.1f MiB (budget %d MiB); budget flushes %d, write stalls %d; Pebble arenas allocated %.1f MiB",
		written.Load()>>20, float64(peak.Load())/(1<<20), budget>>20, st.BudgetFlushes, st.WriteStalls, float64(st.MemTableAllocated)/(1<<20))
	if peak.Load() > budget+slack {
		t.Fatalf("unflushed memtable bytes peaked at %d, budget %d + slack %d", peak.Load(), budget, slack)
	}
	if st.BudgetFlushes == 0 {
		t.Fatalf("%d MiB written under an %d MiB budget without a budget flush", written.Load()>>20, budget>>20)
	}
	// Flush everything: Pebble's exact in-memory size of all flushed
	// memtables against Keel's estimate of what it committed.
	var truth uint64
	for _, e := range es {
		must(t, e.Sync())
		truth += e.memFlushed.Load()
	}
	if st := sh.Stats(); st.MemTableBytes != 0 {
		t.Fatalf("after flushing every engine Keel still counts %d unflushed bytes", st.MemTableBytes)
	}
	estimate := written.Load() + int64(engines*batches*(keys+1)*memEntryOverhead)
	ratio := float64(estimate) / float64(truth)
	t.Logf("Keel's estimate %d, Pebble's flushed memtable bytes %d: ratio %.2f", estimate, truth, ratio)
	if ratio < 0.7 || ratio > 1.05 {
		t.Fatalf("estimate/actual memtable bytes %.2f: the budget would be off by that factor", ratio)
	}
	for _, e := range es {
		must(t, e.Close())
	}
}

// TestReopenStormHoldsIdleCloses: keepOpen writable reopens within
// reopenStormWindow stop idle closes; once they age out of the window the
// closes resume.
func TestReopenStormHoldsIdleCloses(t *testing.T) {
	sh, err := NewShared(SharedOptions{})
	must(t, err)
	now := time.Unix(1000, 0)
	sh.clock = func() time.Time { return now }
	fs := vfs.NewMem()
	const keepOpen = 2
	var engines []*Engine
	for i := range keepOpen + 2 {
		e, err := OpenRoot(fmt.Sprintf("/t%d", i), Options{FS: fs, Shared: sh, Logger: quietLogger()})
		must(t, err)
		engines = append(engines, e)
	}
	defer func() {
		for _, e := range engines {
			_ = e.Close()
		}
		_ = sh.Close()
	}()
	tryClose := func() bool {
		if !sh.ReserveIdleClose(keepOpen) {
			return false
		}
		sh.ReleaseIdleClose()
		return true
	}
	if !tryClose() {
		t.Fatal("no storm, more than keepOpen open: an idle close must be granted")
	}
	for range keepOpen - 1 {
		sh.NoteWritableReopen()
	}
	if !tryClose() {
		t.Fatalf("%d reopens (under keepOpen=%d) stopped idle closes", keepOpen-1, keepOpen)
	}
	now = now.Add(time.Second)
	sh.NoteWritableReopen()
	if tryClose() {
		t.Fatalf("%d reopens within %v: idle closes must wait", keepOpen, reopenStormWindow)
	}
	now = now.Add(reopenStormWindow / 2)
	if tryClose() {
		t.Fatal("the storm is still inside the window")
	}
	now = now.Add(2 * reopenStormWindow)
	if !tryClose() {
		t.Fatal("the storm aged out of the window, yet idle closes stay refused")
	}
}
