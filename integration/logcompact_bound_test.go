package integration

import (
	"context"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/logcompact"
)

// lcDiskBound is the most allocated bytes one replica's Raft directory may
// hold with Keel's defaults (host.LogDBConfig, host.ShardConfig,
// logcompact.DefaultPolicy). Derivation, see logcompact/doc.go.
const lcDiskBound = 64 << 20

// TestLogCompactBoundedLog writes far more Raft log than the bound (by
// default 150,000 writes of 256-byte values, ~55 MB of log per replica;
// KEEL_LOGCOMPACT_WRITES=500000 for the full run) through a three-replica
// cluster with Keel's defaults, samples every replica's Raft directory
// (allocated bytes, as du counts) throughout, and checks the samples stay
// under lcDiskBound while compactions really ran and removed entries.
func TestLogCompactBoundedLog(t *testing.T) {
	writes := lcEnvInt(t, "KEEL_LOGCOMPACT_WRITES", 150_000)
	const valueSize = 256
	c := testcluster.New(t, 3, testcluster.Options{Shard: logcompact.Configure})
	comps := lcStartCompactors(t, c, logcompact.DefaultPolicy(), time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stop := lcPeakSampler(t, c)
	start := time.Now()
	leader := c.Leader()
	n, err := lcLoad(ctx, leader.Client, "k", writes, 128, valueSize, nil)
	peak, samples := stop()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("after %d acknowledged writes: %v", n, err)
	}
	t.Logf("%d writes in %v (%.0f/s), %d disk samples", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), samples)
	for id, comp := range comps {
		s := comp.Stats()
		t.Logf("replica %d: peak %.1f MiB, now %.1f MiB, log [%d, %d], tracked %.1f MiB, %d compactions, %d entries removed, %d reclaims freed %.1f MiB",
			id, mib(peak[id]), mib(s.DiskBytes), s.FirstIndex, s.LastIndex, mib(int64(s.TrackedBytes)),
			s.Compactions, s.EntriesRemoved, s.Reclaims, mib(int64(s.BytesReclaimed)))
		if testing.Verbose() {
			lcListDir(t, lcRaftDir(c.Nodes[id]))
		}
		if peak[id] > lcDiskBound {
			t.Errorf("replica %d: Raft directory peaked at %d bytes allocated, bound %d", id, peak[id], lcDiskBound)
		}
		if s.Compactions == 0 || s.EntriesRemoved == 0 || s.FirstIndex <= 1 {
			t.Errorf("replica %d: log was never compacted: %+v", id, s)
		}
		if s.BytesReclaimed == 0 {
			t.Errorf("replica %d: no disk space was reclaimed: %+v", id, s)
		}
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
