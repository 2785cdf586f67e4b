package integration

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/logcompact"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
)

// lcEvents counts snapshot events per NodeHost (keyed by Raft address).
type lcEvents struct {
	mu       sync.Mutex // guards received
	received map[string]*atomic.Int64
}

func (e *lcEvents) counter(addr string) *atomic.Int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.received == nil {
		e.received = map[string]*atomic.Int64{}
	}
	if e.received[addr] == nil {
		e.received[addr] = &atomic.Int64{}
	}
	return e.received[addr]
}

// lcListener is one NodeHost's raftio.ISystemEventListener.
type lcListener struct{ received *atomic.Int64 }

var _ raftio.ISystemEventListener = lcListener{}

func (l lcListener) SnapshotReceived(raftio.SnapshotInfo)      { l.received.Add(1) }
func (lcListener) NodeHostShuttingDown()                       {}
func (lcListener) NodeUnloaded(raftio.NodeInfo)                {}
func (lcListener) NodeDeleted(raftio.NodeInfo)                 {}
func (lcListener) NodeReady(raftio.NodeInfo)                   {}
func (lcListener) MembershipChanged(raftio.NodeInfo)           {}
func (lcListener) ConnectionEstablished(raftio.ConnectionInfo) {}
func (lcListener) ConnectionFailed(raftio.ConnectionInfo)      {}
func (lcListener) SendSnapshotStarted(raftio.SnapshotInfo)     {}
func (lcListener) SendSnapshotCompleted(raftio.SnapshotInfo)   {}
func (lcListener) SendSnapshotAborted(raftio.SnapshotInfo)     {}
func (lcListener) SnapshotRecovered(raftio.SnapshotInfo)       {}
func (lcListener) SnapshotCreated(raftio.SnapshotInfo)         {}
func (lcListener) SnapshotCompacted(raftio.SnapshotInfo)       {}
func (lcListener) LogCompacted(raftio.EntryInfo)               {}
func (lcListener) LogDBCompacted(raftio.EntryInfo)             {}

// TestLogCompactShortLagNoSnapshot stops a follower, writes fewer entries
// than the trailing window while the other replicas compact their logs,
// restarts the follower and checks it caught up from the log: no snapshot
// arrived, although the leader's log was compacted during its absence.
func TestLogCompactShortLagNoSnapshot(t *testing.T) {
	policy := logcompact.Policy{KeepEntries: 4000, KeepBytes: 64 << 20, TriggerEntries: 500, TriggerBytes: 64 << 20}
	const lag = 2500 // < KeepEntries
	var ev lcEvents
	c := testcluster.New(t, 3, testcluster.Options{
		Shard: logcompact.Configure,
		NodeHost: func(nhc *config.NodeHostConfig) {
			nhc.SystemEventListener = lcListener{received: ev.counter(nhc.RaftAddress)}
		},
	})
	leader := c.Leader()
	var follower *testcluster.Node
	for _, n := range c.Running() {
		if n != leader {
			follower = n
			break
		}
	}
	comps := map[uint64]*logcompact.Compactor{}
	for _, n := range c.Running() {
		comp, err := logcompact.New(logcompact.Config{NodeHost: n.NH, ShardID: c.ShardID,
			ReplicaID: n.ReplicaID, Policy: policy, Dirs: []string{lcRaftDir(n)}})
		if err != nil {
			t.Fatal(err)
		}
		comps[n.ReplicaID] = comp
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Phase 1: a log longer than the window, compacted everywhere.
	if n, err := lcLoad(ctx, leader.Client, "one-", 6000, 32, 64, nil); err != nil {
		t.Fatalf("after %d writes: %v", n, err)
	}
	c.WaitFor(30*time.Second, "follower applied phase 1", func() bool {
		return follower.Factory.StateMachine(c.ShardID, follower.ReplicaID).AppliedIndex() >=
			leader.Factory.StateMachine(c.ShardID, leader.ReplicaID).AppliedIndex()
	})
	for id, comp := range comps {
		if _, err := comp.Step(ctx); err != nil {
			t.Fatalf("replica %d: phase 1 step: %v", id, err)
		}
	}
	_, followerLast := mustRange(t, follower)
	c.Stop(follower.ReplicaID)

	// Phase 2: the follower is away for fewer entries than the window;
	// the leader compacts its log meanwhile.
	if n, err := lcLoad(ctx, leader.Client, "two-", lag, 32, 64, nil); err != nil {
		t.Fatalf("after %d writes: %v", n, err)
	}
	res, err := comps[leader.ReplicaID].Step(ctx)
	if err != nil {
		t.Fatalf("leader step while follower away: %v", err)
	}
	if res.CompactedTo == 0 {
		t.Fatalf("leader did not compact while the follower was away: %+v", res)
	}
	leaderFirst, leaderLast := mustRange(t, leader)
	t.Logf("follower stopped at %d; leader log now [%d, %d], compacted to %d", followerLast, leaderFirst, leaderLast, res.CompactedTo)
	if leaderFirst > followerLast+1 {
		t.Fatalf("leader compacted past the follower's log (first %d > %d+1): window not kept", leaderFirst, followerLast)
	}
	if res.CompactedTo <= res.FirstBefore {
		t.Fatalf("compaction during the absence removed nothing: %+v", res)
	}

	// Phase 3: restart the follower; it must catch up from the log.
	f := c.Start(follower.ReplicaID)
	want := leader.Factory.StateMachine(c.ShardID, leader.ReplicaID).AppliedIndex()
	c.WaitFor(60*time.Second, "restarted follower to catch up", func() bool {
		s := f.Factory.StateMachine(c.ShardID, f.ReplicaID)
		return s != nil && s.AppliedIndex() >= want
	})
	for _, k := range []string{"two-000000001", "two-000002500"} {
		v, found, err := f.Client.StaleGet([]byte(k))
		if err != nil || !found || string(v[:4]) != "two-" {
			t.Fatalf("follower misses phase 2 write %s: found %v, err %v", k, found, err)
		}
	}
	if n := ev.counter(f.Addr).Load(); n != 0 {
		t.Fatalf("follower received %d snapshots; a lag of %d < window %d must be served from the log", n, lag, policy.KeepEntries)
	}
	for _, n := range c.Running() {
		if k := ev.counter(n.Addr).Load(); k != 0 {
			t.Errorf("replica %d received %d snapshots", n.ReplicaID, k)
		}
	}
}

func mustRange(t *testing.T, n *testcluster.Node) (uint64, uint64) {
	t.Helper()
	r, err := n.NH.GetLogReader(1)
	if err != nil {
		t.Fatal(err)
	}
	first, last := r.GetRange()
	return first, last
}
