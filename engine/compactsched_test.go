package engine

import (
	"bytes"
	"context"
	"fmt"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/internal/testkit/testutil"
)

// goroutinesIn reports how many goroutines have fn on their stack.
func goroutinesIn(fn string) int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
	n := 0
	for _, block := range bytes.Split(buf.Bytes(), []byte("\n\n")) {
		if bytes.Contains(block, []byte(fn)) {
			// The first line of a block is "N @ 0x...": N goroutines.
			var c int
			if _, err := fmt.Sscanf(string(block), "%d @", &c); err == nil {
				n += c
			}
		}
	}
	return n
}

// TestTabletsShareCompactionScheduler opens many tablets on one Shared: no
// tablet may keep Pebble's per-database scheduler goroutine (a 100 ms
// ticker each), yet every tablet whose L0 fills up still compacts,
// automatically and on request, with several compacting at once; and once
// they are closed no scheduler goroutine is left.
func TestTabletsShareCompactionScheduler(t *testing.T) {
	const tablets = 40
	sh, err := NewShared(SharedOptions{})
	must(t, err)
	fs := vfs.NewMem()
	es := make([]*Engine, tablets)
	for i := range es {
		es[i], err = Open(fmt.Sprintf("/t%d", i), Options{FS: fs, Shared: sh, Logger: quietLogger()})
		must(t, err)
	}
	if n := goroutinesIn("periodicGranter"); n != 0 {
		t.Fatalf("%d goroutines run Pebble's per-database compaction scheduler", n)
	}
	// Eight overlapping L0 files in each of the first ten tablets, written
	// at once: past Pebble's L0 compaction threshold (4), so each must
	// compact by itself.
	const busy, flushes = 10, 8
	var wg sync.WaitGroup
	errs := make(chan error, busy)
	for i := range busy {
		wg.Add(1)
		go func(e *Engine) {
			defer wg.Done()
			for f := range flushes {
				b := e.NewBatch()
				for k := range 50 {
					if err := b.Put(fmt.Appendf(nil, "k%04d", k), fmt.Appendf(nil, "v%d-%d", f, k)); err != nil {
						errs <- err
						return
					}
				}
				if err := b.SetAppliedIndex(uint64(f + 1)); err != nil {
					errs <- err
					return
				}
				if err := b.Commit(false); err != nil {
					errs <- err
					return
				}
				b.Close()
				if err := e.Flush(); err != nil {
					errs <- err
					return
				}
			}
		}(es[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		for i := range busy {
			m := es[i].Metrics()
			if m.Compact.Count == 0 {
				return fmt.Errorf("tablet %d: no compaction yet, L0 %d files", i, m.Levels[0].TablesCount)
			}
		}
		return nil
	})
	// A manual compaction of an idle tablet is granted too.
	write(t, es[busy], 1, "a", "1", "b", "2")
	must(t, es[busy].Flush())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, es[busy].DB().Compact(ctx, []byte("a"), []byte("z"), true))
	if v, err := es[busy].Get([]byte("b")); err != nil || string(v) != "2" {
		t.Fatalf("after manual compaction: %q %v", v, err)
	}
	for i := range busy {
		if v, err := es[i].Get([]byte("k0007")); err != nil || string(v) != fmt.Sprintf("v%d-7", flushes-1) {
			t.Fatalf("tablet %d after compactions: %q %v", i, v, err)
		}
	}
	for _, e := range es {
		must(t, e.Close())
	}
	must(t, sh.Close())
	testutil.Eventually(t, 5*time.Second, func() error {
		if n := goroutinesIn("compactionPool).run"); n != 0 {
			return fmt.Errorf("%d compaction pool goroutines after Close", n)
		}
		return nil
	})
}
