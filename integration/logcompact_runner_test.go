package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/logcompact"
)

// TestLogCompactRunner drives the three replicas' Compactors from one
// logcompact.Runner (as keeld does; two of them with an AppliedIndexer,
// one without): a log grown past the window is
// compacted on every replica; once the writes stop and the Compactors
// have gone quiet (their log range unchanged since a tick with nothing to
// do), a second burst is compacted too, so a quiet Compactor notices its
// log move; and a stopped replica's Compactor leaves the Runner.
func TestLogCompactRunner(t *testing.T) {
	policy := logcompact.Policy{KeepEntries: 300, KeepBytes: 64 << 20, TriggerEntries: 200, TriggerBytes: 64 << 20}
	c := testcluster.New(t, 3, testcluster.Options{Shard: logcompact.Configure})
	leader := c.Leader()
	r := logcompact.NewRunner(50 * time.Millisecond)
	comps := map[uint64]*logcompact.Compactor{}
	for i, n := range c.Running() {
		cfg := logcompact.Config{NodeHost: n.NH, ShardID: c.ShardID,
			ReplicaID: n.ReplicaID, Policy: policy, Dirs: []string{lcRaftDir(n)}, Interval: 50 * time.Millisecond}
		if i > 0 {
			// As keeld: a quiet Compactor watches the applied index and
			// reads the log's range every tenth tick. The first replica's
			// reads it every tick.
			cfg.Applied = n.Factory.StateMachine(c.ShardID, n.ReplicaID)
		}
		comp, err := logcompact.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		comps[n.ReplicaID] = comp
		r.Add(comp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = r.Run(ctx) }()
	// Before the cluster closes (cleanups run in reverse order).
	t.Cleanup(func() { cancel(); wg.Wait() })

	burst := func(prefix string, after map[uint64]uint64) {
		t.Helper()
		if n, err := lcLoad(ctx, leader.Client, prefix, 1500, 16, 64, nil); err != nil {
			t.Fatalf("after %d writes: %v", n, err)
		}
		c.WaitFor(60*time.Second, "every replica's Compactor to compact "+prefix, func() bool {
			for id, comp := range comps {
				if comp.Stats().Compactions <= after[id] {
					return false
				}
			}
			return true
		})
		for id, comp := range comps {
			if s := comp.Stats(); s.FirstIndex <= 1 {
				t.Fatalf("replica %d: compactions %d but the log still starts at %d", id, s.Compactions, s.FirstIndex)
			}
		}
	}
	burst("a-", map[uint64]uint64{})

	// Idle: every Compactor goes quiet (a tick found its log range
	// unchanged since a tick with nothing to do).
	c.WaitFor(30*time.Second, "every Compactor to go quiet", func() bool {
		for _, comp := range comps {
			if comp.Stats().QuietTicks == 0 {
				return false
			}
		}
		return true
	})
	last := map[uint64]uint64{}
	for id, comp := range comps {
		last[id] = comp.Stats().Compactions
	}
	burst("b-", last)

	stopped := c.Running()[0].ReplicaID
	c.Stop(stopped)
	c.WaitFor(30*time.Second, "the stopped replica's Compactor to leave the Runner", func() bool {
		return r.Len() == len(comps)-1
	})
}
