package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
)

// compactAll takes a metadata snapshot on every running replica and
// compacts its log right up to it, so a replica that is behind can only
// catch up from a streamed snapshot.
func compactAll(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	for _, n := range c.Running() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := n.NH.SyncRequestSnapshot(ctx, c.ShardID, dragonboat.SnapshotOption{OverrideCompactionOverhead: true, CompactionOverhead: 0})
		cancel()
		if err != nil && !errors.Is(err, dragonboat.ErrRejected) {
			t.Fatalf("snapshot on replica %d: %v", n.ReplicaID, err)
		}
	}
}

// A follower that was down while the leader compacted its log past it
// catches up from a streamed snapshot; a replica added later does too. Both
// end with the leader's exact state.
func TestSnapshotCatchUpAndJoin(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Shard: func(sc *config.Config) {
		sc.SnapshotEntries = 100
		sc.CompactionOverhead = 20
	}})
	leader := c.Leader()
	var follower uint64
	for id := range c.Nodes {
		if id != leader.ReplicaID {
			follower = id
			break
		}
	}
	ssPut(t, leader.Client, "before-stop", "1")
	c.Stop(follower)

	start := time.Now()
	ssLoad(t, leader.Client, "k", 50000, 8, 100)
	t.Logf("wrote 50000 keys in %v", time.Since(start))
	compactAll(t, c)

	n := c.Start(follower)
	c.WaitFor(60*time.Second, "the follower to install a snapshot", func() bool {
		return ssStats(n.Factory, c.ShardID, follower).Received > 0
	})
	// Writes go on while and after the follower catches up.
	ssLoad(t, c.Leader().Client, "after", 500, 4, 10)
	var clients []*client.Client
	for _, r := range c.Running() {
		clients = append(clients, r.Client)
	}
	h := ssConverged(t, clients, 60*time.Second)
	if h.Keys != 50000+500+1 {
		t.Fatalf("converged on %d keys, want %d", h.Keys, 50501)
	}
	t.Logf("follower caught up: %+v, stats %+v", h, ssStats(n.Factory, c.ShardID, follower))

	// A fourth replica joins by membership change and gets a snapshot.
	addr := testcluster.FreeAddrs(t, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		return c.Leader().NH.SyncRequestAddReplica(ctx, c.ShardID, 4, addr, 0)
	}); err != nil {
		t.Fatalf("add replica 4: %v", err)
	}
	compactAll(t, c)
	joined := c.StartJoin(4, addr)
	c.WaitFor(60*time.Second, "replica 4 to install a snapshot", func() bool {
		return ssStats(joined.Factory, c.ShardID, 4).Received > 0
	})
	ssPut(t, c.Leader().Client, "after-join", "1")
	clients = clients[:0]
	for _, r := range c.Running() {
		clients = append(clients, r.Client)
	}
	h = ssConverged(t, clients, 60*time.Second)
	if h.Keys != 50000+500+2 {
		t.Fatalf("converged on %d keys after join, want %d", h.Keys, 50502)
	}
	for _, r := range c.Running() {
		st := ssStats(r.Factory, c.ShardID, r.ReplicaID)
		t.Logf("replica %d snapshot stats %+v", r.ReplicaID, st)
		if st.SaveFailed > 0 || st.ReceiveFailed > 0 {
			t.Errorf("replica %d had failed snapshots: %+v", r.ReplicaID, st)
		}
	}
}
