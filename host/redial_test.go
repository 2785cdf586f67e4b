package host_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Keel's transport tells Dragonboat about the first failure to reach a
// peer (so its breaker trips and the peer is reported unreachable once),
// then hands out a connection that survives the outage: it drops batches
// while the peer is down and delivers them as soon as the peer listens
// again, without Dragonboat dialing anew. Once the peer goes away again,
// that is a new outage, reported again. Dragonboat's own TCP transport,
// on both ends.
func TestConnectionOutlivesPeerOutage(t *testing.T) {
	addrs := testcluster.FreeAddrs(t, 2)
	sender := host.NewPeerGuard().Create(config.NodeHostConfig{DeploymentID: 7, RaftAddress: addrs[0]},
		func(pb.MessageBatch) {}, func(pb.Chunk) bool { return true })
	ctx := context.Background()
	peer := addrs[1]

	if _, err := sender.GetConnection(ctx, peer); err == nil {
		t.Fatal("GetConnection to a peer that is down: no error for the first failure of the outage")
	}
	conn, err := sender.GetConnection(ctx, peer)
	if err != nil {
		t.Fatalf("GetConnection after the outage was reported: %v", err)
	}
	defer conn.Close()
	batch := pb.MessageBatch{DeploymentId: 7, SourceAddress: addrs[0], BinVer: raftio.TransportBinVersion,
		Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: 1, From: 1, To: 2}}}
	if err := conn.SendMessageBatch(batch); err != nil {
		t.Fatalf("a batch to a peer that is down: %v, want it dropped", err)
	}

	// The peer comes back: batches on the same connection reach it.
	var got atomic.Int64
	receiver := host.NewPeerGuard().Create(config.NodeHostConfig{DeploymentID: 7, RaftAddress: peer},
		func(b pb.MessageBatch) { got.Add(int64(len(b.Requests))) }, func(pb.Chunk) bool { return true })
	if err := receiver.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := conn.SendMessageBatch(batch); err != nil {
			return err
		}
		if got.Load() == 0 {
			return errors.New("no batch received yet")
		}
		return nil
	})

	// It goes away again: a new outage, reported once.
	if err := receiver.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := conn.SendMessageBatch(batch); err == nil {
			return errors.New("writes to a closed peer still succeed")
		}
		return nil
	})
	for i := 0; i < 3; i++ {
		if err := conn.SendMessageBatch(batch); err != nil {
			t.Fatalf("batch %d after the outage was reported: %v, want it dropped", i, err)
		}
	}
}
