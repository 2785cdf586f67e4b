package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/logcompact"
	"github.com/keel-db/keel/snapshot"
)

// TestOneSnapshotOwner runs the snapshot timer and the log compactor of
// every replica as hard as they go while writes flow. The timer requests
// through the Compactor (keeld's wiring), so no request ever collides with
// the compactor's own in Dragonboat (ErrSystemBusy: one pending request
// per shard), and the log is still compacted.
func TestOneSnapshotOwner(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Shard: logcompact.Configure})
	policy := logcompact.Policy{KeepEntries: 200, KeepBytes: 64 << 20, TriggerEntries: 50, TriggerBytes: 64 << 20}
	comps := lcStartCompactors(t, c, policy, 5*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	scheds := map[uint64]*snapshot.Scheduler{}
	stop := make(chan struct{})
	for _, n := range c.Running() {
		s := snapshot.NewScheduler(snapshot.SchedulerConfig{ShardID: c.ShardID}, comps[n.ReplicaID], n.Factory.StateMachine(c.ShardID, n.ReplicaID))
		scheds[n.ReplicaID] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A timer far faster than any real one (keeld's is a minute).
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				s.RunOnce()
			}
		}()
	}
	if _, err := lcLoad(ctx, c.Leader().Client, "own/", 3000, 8, 64, nil); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	var taken uint64
	for id, s := range scheds {
		st := s.Stats()
		taken += st.Taken
		if st.Failed != 0 {
			t.Errorf("replica %d: %d timed snapshots failed (collided with the compactor?): %+v", id, st.Failed, st)
		}
		if cs := comps[id].Stats(); cs.Errors != 0 {
			t.Errorf("replica %d: compactor errors %d: %+v", id, cs.Errors, cs)
		}
	}
	if taken == 0 {
		t.Fatal("no timed snapshot was taken: the test exercised nothing")
	}
	for id, comp := range comps {
		if st := comp.Stats(); st.FirstIndex <= 1 {
			t.Errorf("replica %d: the log was never compacted: %+v", id, st)
		}
	}
}
