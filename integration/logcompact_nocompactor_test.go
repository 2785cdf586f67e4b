package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/logcompact"
	"github.com/lni/dragonboat/v4/config"
)

// lcPeakSampler samples every running replica's Raft directory (allocated
// bytes) every 100 ms until the returned stop is called, which returns the
// peak per replica and the number of samples.
func lcPeakSampler(t *testing.T, c *testcluster.Cluster) (stop func() (map[uint64]int64, int)) {
	t.Helper()
	var mu sync.Mutex // guards peak, samples
	peak := map[uint64]int64{}
	samples := 0
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, n := range c.Running() {
				b, err := logcompact.AllocatedBytes(lcRaftDir(n))
				if err != nil {
					t.Errorf("measure replica %d: %v", n.ReplicaID, err)
					return
				}
				mu.Lock()
				if b > peak[n.ReplicaID] {
					peak[n.ReplicaID] = b
				}
				samples++
				mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() (map[uint64]int64, int) {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return peak, samples
	}
}

// TestLogBoundedWithoutCompactor is keeld --log-compaction=false: no
// logcompact.Compactor runs, so Keel's shard config keeps Dragonboat's
// LogDB auto compactions, and snapshots alone (here Dragonboat's
// entry-count trigger, in keeld the snapshot timer) must keep the Raft
// directory bounded (lcDiskBound) and the log compacted. Before the fix the
// shard config always disabled auto compactions, and the removed entries'
// space came back only when LogDB's Pebble happened to compact: measured
// here, peaks of 46-48 MiB against 40-43 MiB with auto compactions on, at
// 100,000 and 300,000 writes (KEEL_LOGCOMPACT_WRITES).
func TestLogBoundedWithoutCompactor(t *testing.T) {
	writes := lcEnvInt(t, "KEEL_LOGCOMPACT_WRITES", 100_000)
	const valueSize = 256
	c := testcluster.New(t, 3, testcluster.Options{Shard: func(sc *config.Config) { sc.SnapshotEntries = 10_000 }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stop := lcPeakSampler(t, c)
	n, err := lcLoad(ctx, c.Leader().Client, "nc", writes, 128, valueSize, nil)
	peak, samples := stop()
	if err != nil {
		t.Fatalf("after %d acknowledged writes: %v", n, err)
	}
	t.Logf("%d writes, %d disk samples", n, samples)
	for _, node := range c.Running() {
		id := node.ReplicaID
		r, err := node.NH.GetLogReader(c.ShardID)
		if err != nil {
			t.Fatal(err)
		}
		first, last := r.GetRange()
		t.Logf("replica %d: peak %.1f MiB, log [%d, %d]", id, mib(peak[id]), first, last)
		if peak[id] > lcDiskBound {
			t.Errorf("replica %d: Raft directory peaked at %d bytes allocated, bound %d", id, peak[id], lcDiskBound)
		}
		if first <= 1 {
			t.Errorf("replica %d: the log was never compacted: [%d, %d]", id, first, last)
		}
	}
}
