package host_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/proctest"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// guardTimeout bounds how long a sent batch may take to be counted.
const guardTimeout = 10 * time.Second

// TestPeerGuardDropsStrayBatches sends hand-made batches to a follower of a
// real two-replica shard whose NodeHosts run the guard. Three would end
// the process without it (the test binary would panic): a heartbeat that
// claims the leader from another address (the registry's "inconsistent
// target"; its Commit far past the log panics in Raft if the message gets
// that far, so the registry refusing alone is not enough), a message with
// no recipient ("to field not set"), a malformed source address ("invalid
// target"). The others check the remaining reasons. The shard keeps serving
// afterwards.
func TestPeerGuardDropsStrayBatches(t *testing.T) {
	const clusterName = "guard-test"
	c := testcluster.New(t, 2, testcluster.Options{NodeHost: func(nhc *config.NodeHostConfig) {
		nhc.DeploymentID = host.DeploymentID(clusterName)
		nhc.Expert.TransportFactory = host.NewPeerGuard()
	}})
	for _, n := range c.Running() {
		host.PeerGuardOf(n.NH.NodeHostConfig()).Attach(n.NH)
	}
	leader := c.Leader()
	var follower *testcluster.Node
	for _, n := range c.Running() {
		if n != leader {
			follower = n
		}
	}
	guard := host.PeerGuardOf(follower.NH.NodeHostConfig())

	// A transport that is never started only dials.
	stray := proctest.FreeAddrs(t, 1)[0]
	tr := host.NewPeerGuard().Create(config.NodeHostConfig{RaftAddress: stray}, func(pb.MessageBatch) {}, func(pb.Chunk) bool { return true })
	defer tr.Close()
	conn, err := tr.GetConnection(context.Background(), follower.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	did := host.DeploymentID(clusterName)
	heartbeat := pb.Message{Type: pb.Heartbeat, ShardID: c.ShardID, From: leader.ReplicaID, To: follower.ReplicaID, Term: 1 << 30, Commit: 1 << 40}
	batch := func(src string, did uint64, m pb.Message) pb.MessageBatch {
		return pb.MessageBatch{BinVer: raftio.TransportBinVersion, DeploymentId: did, SourceAddress: src, Requests: []pb.Message{m}}
	}
	// Claiming a replica ID the follower does not know yet gets past the
	// registry, to the check each case is about.
	noTo := heartbeat
	noTo.From, noTo.To = 7, 0
	snap := heartbeat
	snap.From, snap.Type = 7, pb.InstallSnapshot
	foreign := heartbeat
	foreign.ShardID = c.ShardID + 98
	for _, tc := range []struct {
		name  string
		b     pb.MessageBatch
		count func(host.PeerGuardStats) uint64
	}{
		{"leader's ID from another address", batch(stray, did, heartbeat), func(s host.PeerGuardStats) uint64 { return s.AddressMismatch }},
		{"another cluster", batch(stray, host.DeploymentID("other"), heartbeat), func(s host.PeerGuardStats) uint64 { return s.ClusterID }},
		{"no recipient", batch(stray, did, noTo), func(s host.PeerGuardStats) uint64 { return s.Malformed }},
		{"malformed source address", batch("no port", did, heartbeat), func(s host.PeerGuardStats) uint64 { return s.Malformed }},
		{"InstallSnapshot in a batch", batch(stray, did, snap), func(s host.PeerGuardStats) uint64 { return s.Malformed }},
		{"shard not hosted", batch(stray, did, foreign), func(s host.PeerGuardStats) uint64 { return s.ForeignShard }},
	} {
		before := tc.count(guard.Stats())
		if err := conn.SendMessageBatch(tc.b); err != nil {
			t.Fatalf("%s: send: %v", tc.name, err)
		}
		err := proctest.Poll(guardTimeout, func() error {
			if got := tc.count(guard.Stats()); got != before+1 {
				return fmt.Errorf("counter %d, want %d", got, before+1)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v (stats %+v)", tc.name, err, guard.Stats())
		}
	}

	// The follower kept the leader's real address: the shard still commits
	// and the follower applies.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		return leader.Client.Put(ctx, []byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(10*time.Second, "the follower applies the write", func() bool {
		v, found, err := follower.Client.StaleGet([]byte("k"))
		return err == nil && found && string(v) == "v"
	})
}

func TestDeploymentID(t *testing.T) {
	a, b := host.DeploymentID("keel"), host.DeploymentID("keel2")
	if a == b || a>>63 != 1 || b>>63 != 1 {
		t.Fatalf("DeploymentID: %x %x", a, b)
	}
	// Pinned: data directories record it, so it must never change.
	if a != 0xd6dba7e8a54d32d2 {
		t.Fatalf("DeploymentID(keel) = %#x", a)
	}
	for _, ok := range []string{"keel", "a", "prod-eu.1_x"} {
		if err := host.CheckClusterName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "a/b", "é", string(make([]byte, host.MaxClusterNameLen+1))} {
		if err := host.CheckClusterName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
