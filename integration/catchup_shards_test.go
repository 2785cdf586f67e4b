package integration

import (
	"context"
	"errors"
	"fmt"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/lni/dragonboat/v4"
)

// One shard of a host catches up by snapshot while the host's other shards
// catch up by the log and keep taking writes: three Hosts in one process,
// eight shards on each, the third host stopped; every shard gets writes,
// only shard 1's log is compacted behind the stopped host. After the
// restart shard 1 on host 3 must have installed a snapshot and match its
// leader, and no other shard may have made or installed one: a snapshot is
// per shard, whatever the shards share on the host.
func TestCatchUpOneShardWhileOthersWrite(t *testing.T) {
	testcluster.Quiet()
	const (
		shards   = 8
		behind   = 1 // the shard compacted behind host 3
		preKeys  = 2000
		liveKeys = 300
	)
	s := &shardHosts{t: t, dir: t.TempDir(), addrs: testcluster.FreeAddrs(t, 3), shards: shards}
	s.startAll(true)
	t.Cleanup(s.closeAll)
	clients := func(h int) map[uint64]*client.Client {
		out := map[uint64]*client.Client{}
		for shard := uint64(1); shard <= shards; shard++ {
			out[shard] = client.NewClient(s.hosts[h].NodeHost(), shard)
		}
		return out
	}
	c1 := clients(0)
	for shard, c := range c1 {
		ssPut(t, c, fmt.Sprintf("s%d/first", shard), "1")
	}
	s.waitConverged(30 * time.Second)

	if err := s.hosts[2].Close(); err != nil {
		t.Fatal(err)
	}
	s.hosts[2] = nil
	for shard, c := range c1 {
		ssLoad(t, c, fmt.Sprintf("s%d/pre", shard), preKeys, 4, 256)
	}
	// Shard 1 only: a snapshot and a log compacted right up to it on both
	// running replicas, so host 3 cannot catch up from the log.
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := s.hosts[i].NodeHost().SyncRequestSnapshot(ctx, behind, dragonboat.SnapshotOption{OverrideCompactionOverhead: true, CompactionOverhead: 0})
		cancel()
		if err != nil && !errors.Is(err, dragonboat.ErrRejected) {
			t.Fatalf("host %d: snapshot of shard %d: %v", i+1, behind, err)
		}
	}

	// Restart host 3 while the other shards keep taking writes.
	s.hosts[2] = s.open(2)
	for shard := uint64(1); shard <= shards; shard++ {
		if err := s.hosts[2].StartReplica(nil, false, host.ShardConfig(shard, 3)); err != nil {
			t.Fatal(err)
		}
	}
	var stop atomic.Bool
	var live sync.WaitGroup
	var liveErr atomic.Pointer[error]
	for shard := uint64(2); shard <= shards; shard++ {
		live.Add(1)
		go func() {
			defer live.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for k := 0; k < liveKeys && !stop.Load(); k++ {
				err := testcluster.Retry(ctx, func(ctx context.Context) error {
					return c1[shard].Put(ctx, []byte(fmt.Sprintf("s%d/live%05d", shard, k)), []byte("v"))
				})
				if err != nil {
					err = fmt.Errorf("shard %d live put %d: %w", shard, k, err)
					liveErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	f3 := s.hosts[2].Factory()
	testutil.Eventually(t, 30*time.Second, func() error {
		if sm := f3.StateMachine(behind, 3); sm == nil || sm.SnapshotStats().Received == 0 {
			return fmt.Errorf("host 3 has not installed a snapshot of shard %d yet", behind)
		}
		return nil
	})
	stop.Store(true)
	live.Wait()
	if p := liveErr.Load(); p != nil {
		t.Fatal(*p)
	}
	got := s.waitConverged(30 * time.Second)

	if h := got[behind]; h.Keys != preKeys+1 {
		t.Errorf("shard %d converged on %d keys, want %d", behind, h.Keys, preKeys+1)
	}
	for shard := uint64(1); shard <= shards; shard++ {
		if shard != behind && got[shard].Keys <= preKeys+1 {
			t.Errorf("shard %d converged on %d keys: the live writes are missing", shard, got[shard].Keys)
		}
		for i, h := range s.hosts {
			st := h.Factory().StateMachine(shard, uint64(i+1)).SnapshotStats()
			t.Logf("shard %d host %d: %+v", shard, i+1, st)
			if st.SaveFailed > 0 || st.ReceiveFailed > 0 {
				t.Errorf("shard %d host %d: failed snapshots: %+v", shard, i+1, st)
			}
			if shard != behind && (st.Received > 0 || st.Saved > 0) {
				t.Errorf("shard %d host %d: a snapshot was streamed for a shard that could catch up by the log: %+v", shard, i+1, st)
			}
		}
	}
}
