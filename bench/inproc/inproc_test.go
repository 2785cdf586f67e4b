package inproc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
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

func proposeK(b *testing.B, mode string, k int) {
	c := testcluster.New(b, 3, testcluster.Options{})
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
	b.StopTimer()
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
