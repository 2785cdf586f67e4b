package inproc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
)

// BenchmarkProposeK measures replicated 256-byte puts at K concurrent
// writers, each write proposed alone (single) or through a Batcher
// (batched). It reports ops/s and the Raft entries applied per write,
// which shows how much the Batcher coalesced.
func BenchmarkProposeK(b *testing.B) {
	for _, mode := range []string{"single", "batched"} {
		for _, k := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/K=%d", mode, k), func(b *testing.B) { proposeK(b, mode, k) })
		}
	}
}

// BenchmarkWAL measures replicated 256-byte puts with Keel's tablets
// WAL-less (the default: the Raft log is the only write-ahead log) against
// the same build with Pebble's WAL kept (engine.Options.WAL), alternating
// the two in rounds so both see the same machine. It reports ops/s and the
// CPU (user+system, the whole process: three replicas) per write; the WAL
// costs one extra write per apply batch on every replica and an fsync in
// every Sync.
func BenchmarkWAL(b *testing.B) {
	for round := 1; round <= 2; round++ {
		for _, wal := range []bool{false, true} {
			for _, k := range []int{16, 256} {
				name := fmt.Sprintf("round=%d/wal=%v/K=%d", round, wal, k)
				b.Run(name, func(b *testing.B) {
					opts := testcluster.Options{Plugin: func(c *host.Config) { c.Engine.WAL = wal }}
					runPuts(b, opts, "single", k)
				})
			}
		}
	}
}

func proposeK(b *testing.B, mode string, k int) { runPuts(b, testcluster.Options{}, mode, k) }

// cpuTime is the process's user+system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runPuts(b *testing.B, opts testcluster.Options, mode string, k int) {
	c := testcluster.New(b, 3, opts)
	c.WaitReady(30 * time.Second)
	leader := c.Leader()
	put := leader.Client.Put
	if mode == "batched" {
		put = client.NewBatcher(leader.Client, client.BatcherOptions{}).Put
	}
	idx0 := appliedIndex(b, leader)
	val := make([]byte, 256)
	var next, failed atomic.Int64
	b.SetBytes(int64(len(val) + 16))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	for w := 0; w < k; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := put(ctx, []byte(fmt.Sprintf("k%015d", i)), val); err != nil {
					failed.Add(1)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	if n := failed.Load(); n > 0 {
		b.Errorf("%d of %d puts failed", n, b.N)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
	b.ReportMetric(float64(appliedIndex(b, leader)-idx0)/float64(b.N), "entries/op")
}

func appliedIndex(b *testing.B, n *testcluster.Node) uint64 {
	st, err := n.Client.LocalStats(false)
	if err != nil {
		b.Fatal(err)
	}
	return st.AppliedIndex
}
