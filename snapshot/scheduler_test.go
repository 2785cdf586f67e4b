package snapshot_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/snapshot"
	"github.com/lni/dragonboat/v4"
)

// countingNH passes requests to a real NodeHost and counts them.
type countingNH struct {
	nh    *dragonboat.NodeHost
	calls atomic.Int64
}

func (c *countingNH) SyncRequestSnapshot(ctx context.Context, shardID uint64, opt dragonboat.SnapshotOption) (uint64, error) {
	c.calls.Add(1)
	return c.nh.SyncRequestSnapshot(ctx, shardID, opt)
}

func TestSchedulerJitterBounds(t *testing.T) {
	const T = 10 * time.Second
	s := snapshot.NewScheduler(snapshot.SchedulerConfig{Interval: T, Seed: 7}, nil, nil)
	var minF, maxF, minN, maxN time.Duration = T, 0, 2 * T, 0
	for i := 0; i < 10000; i++ {
		f, n := s.FirstDelay(), s.NextDelay()
		if f < T/2 || f >= T {
			t.Fatalf("first delay %v outside [T/2, T)", f)
		}
		if n < T*3/4 || n >= T*5/4 {
			t.Fatalf("next delay %v outside [3T/4, 5T/4)", n)
		}
		minF, maxF, minN, maxN = min(minF, f), max(maxF, f), min(minN, n), max(maxN, n)
	}
	// The spread covers the range, so replicas really are decorrelated.
	if maxF-minF < T/2*9/10 || maxN-minN < T/2*9/10 {
		t.Fatalf("jitter too narrow: first [%v, %v], next [%v, %v]", minF, maxF, minN, maxN)
	}
}

func snapshotIndex(t *testing.T, nh *dragonboat.NodeHost, shard uint64) uint64 {
	t.Helper()
	lr, err := nh.GetLogReader(shard)
	if err != nil {
		t.Fatal(err)
	}
	return lr.Snapshot().Index
}

func TestSchedulerSkipsWhenNothingApplied(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Leader()
	s0 := n.Factory.StateMachine(c.ShardID, n.ReplicaID)
	req := &countingNH{nh: n.NH}
	s := snapshot.NewScheduler(snapshot.SchedulerConfig{ShardID: c.ShardID, Interval: time.Hour}, req, s0)
	put := func(k string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := testcluster.Retry(ctx, func(ctx context.Context) error { return n.Client.Put(ctx, []byte(k), []byte("v")) }); err != nil {
			t.Fatal(err)
		}
	}
	put("a")
	// SyncPropose returns once the entry is applied, but Dragonboat may not
	// have recorded the new applied index yet; until it has, it rejects the
	// request as having nothing new, and the next run takes it.
	c.WaitFor(10*time.Second, "a first snapshot", func() bool {
		s.RunOnce()
		return s.Stats().Taken == 1
	})
	first := snapshotIndex(t, n.NH, c.ShardID)
	if first == 0 {
		t.Fatalf("first run: %+v, snapshot index %d", s.Stats(), first)
	}
	calls, skipped := req.calls.Load(), s.Stats().Skipped
	s.RunOnce()
	if st := s.Stats(); st.Skipped != skipped+1 || req.calls.Load() != calls {
		t.Fatalf("run with nothing applied: %+v, %d requests (before %d)", st, req.calls.Load(), calls)
	}
	if got := snapshotIndex(t, n.NH, c.ShardID); got != first {
		t.Fatalf("snapshot index moved from %d to %d with nothing applied", first, got)
	}
	put("b")
	c.WaitFor(10*time.Second, "a snapshot after a write", func() bool {
		s.RunOnce()
		return s.Stats().Taken == 2
	})
	if st := s.Stats(); st.Failed != 0 || snapshotIndex(t, n.NH, c.ShardID) <= first {
		t.Fatalf("run after a write: %+v", st)
	}
}

func TestSchedulerLoopStopsCleanly(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := testcluster.Retry(ctx, func(ctx context.Context) error { return n.Client.Put(ctx, []byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	req := &countingNH{nh: n.NH}
	s := snapshot.NewScheduler(snapshot.SchedulerConfig{ShardID: c.ShardID, Interval: 40 * time.Millisecond},
		req, n.Factory.StateMachine(c.ShardID, n.ReplicaID))
	s.Start()
	c.WaitFor(10*time.Second, "a scheduled snapshot and a skipped run", func() bool {
		st := s.Stats()
		return st.Taken >= 1 && st.Skipped >= 1
	})
	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return")
	}
	s.Stop() // idempotent
	if st := s.Stats(); st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// rejecting answers the first reject requests as Dragonboat does when its
// applied index has not caught up with Keel's (ErrRejected), then takes
// snapshots.
type rejecting struct {
	reject int
	calls  int
}

func (r *rejecting) SyncRequestSnapshot(context.Context, uint64, dragonboat.SnapshotOption) (uint64, error) {
	r.calls++
	if r.calls <= r.reject {
		return 0, dragonboat.ErrRejected
	}
	return 5, nil
}

type fixedIndex uint64

func (f fixedIndex) AppliedIndex() uint64 { return uint64(f) }

// A rejection may be stale (Dragonboat records the applied index after
// Update returns): the next run asks again for the same index; a second
// rejection settles it and later runs skip.
func TestSchedulerRetriesOneRejection(t *testing.T) {
	cfg := snapshot.SchedulerConfig{ShardID: 1, Interval: time.Hour}
	once := &rejecting{reject: 1}
	s := snapshot.NewScheduler(cfg, once, fixedIndex(5))
	s.RunOnce()
	s.RunOnce()
	if st := s.Stats(); st.Rejected != 1 || st.Taken != 1 || once.calls != 2 {
		t.Fatalf("after a stale rejection: %+v, %d requests; want it taken on the next run", st, once.calls)
	}
	s.RunOnce()
	if st := s.Stats(); st.Skipped != 1 || once.calls != 2 {
		t.Fatalf("nothing new after the snapshot: %+v, %d requests", st, once.calls)
	}

	always := &rejecting{reject: 1 << 30}
	s = snapshot.NewScheduler(cfg, always, fixedIndex(5))
	for i := 0; i < 4; i++ {
		s.RunOnce()
	}
	if st := s.Stats(); st.Rejected != 2 || st.Skipped != 2 || always.calls != 2 {
		t.Fatalf("always rejected: %+v, %d requests; want two requests, then skips", st, always.calls)
	}
}
