package integration

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/lni/dragonboat/v4/config"
	lnivfs "github.com/lni/vfs"
)

// A follower that catches up by snapshot gets exactly one stream: the
// leader calls SaveSnapshot once. Without host.PeerGuard's hold on
// Replicate messages while a stream is received (host/snapstream.go), the
// sender's transport reports the stream done 10 ticks after its last chunk
// left, the leader replicates from the snapshot's index, the follower,
// still fsyncing the staged stream, rejects it, and the leader streams the
// whole image again. The cluster runs at a 2 ms tick so those 10 ticks
// (20 ms) are far shorter than the follower's fsync of the ~32 MB staged
// (incompressible) stream; the election timeout is kept at 200 ms so the
// fast tick does not make leadership flap on a loaded machine.
func TestOneSaveSnapshotPerCatchUp(t *testing.T) {
	testcluster.Quiet()
	var mu sync.Mutex
	guards := map[string]*host.PeerGuard{}
	c := testcluster.New(t, 3, testcluster.Options{
		RTTMillisecond: 2,
		NodeHost: func(nhc *config.NodeHostConfig) {
			g := host.NewPeerGuard()
			mu.Lock()
			guards[nhc.RaftAddress] = g
			mu.Unlock()
			nhc.Expert.TransportFactory = g
			// keeld's filesystem for Dragonboat, which drops the staged
			// stream's bytes the transport stages itself.
			nhc.Expert.FS = host.DiskFullFS(lnivfs.Default, failOnFullDisk{t})
		},
		Shard: func(sc *config.Config) {
			sc.ElectionRTT = 100
			sc.HeartbeatRTT = 1
			sc.CompactionOverhead = 0
		},
	})
	leader := c.Leader()
	var follower uint64
	for id := range c.Nodes {
		if id != leader.ReplicaID {
			follower = id
			break
		}
	}
	c.Stop(follower)
	const valueSize, perTxn, txns = 16 << 10, 16, 128 // 32 MiB
	randomLoad(t, leader.Client, txns, perTxn, valueSize, 4)
	compactAll(t, c)

	leader = c.Leader()
	lsm := leader.Factory.StateMachine(c.ShardID, leader.ReplicaID)
	saves := func() uint64 {
		st := lsm.SnapshotStats()
		return st.Saved + st.SaveFailed
	}
	before := saves()
	target := lsm.AppliedIndex()

	n := c.Start(follower)
	c.WaitFor(60*time.Second, "the follower to install a snapshot and reach the leader's applied index", func() bool {
		s := n.Factory.StateMachine(c.ShardID, follower)
		return s != nil && s.SnapshotStats().Received > 0 && s.AppliedIndex() >= target
	})
	// One more write, applied everywhere: the leader now replicates to the
	// follower from its log, so any second stream would have been decided.
	ssPut(t, leader.Client, "after", "1")
	var clients []*client.Client
	for _, r := range c.Running() {
		clients = append(clients, r.Client)
	}
	h := ssConverged(t, clients, 60*time.Second)

	mu.Lock()
	gs := guards[n.Addr].Stats()
	mu.Unlock()
	got := saves() - before
	fst := n.Factory.StateMachine(c.ShardID, follower).SnapshotStats()
	t.Logf("converged at %+v; leader SaveSnapshot calls %d, follower's stats %+v, guard %+v",
		h, got, fst, gs)
	if got != 1 {
		t.Fatalf("the leader called SaveSnapshot %d times for one catch-up, want 1", got)
	}
	// The image was built while the stream arrived and adopted, and
	// Dragonboat's staged copy was never written past its first block.
	if fst.Adopted != 1 || gs.StagedWhileReceiving != 1 || gs.StagingBytesSkipped < 16<<20 ||
		gs.StagingBytesNotWritten < 16<<20 || gs.StagingRefused != 0 {
		t.Fatalf("want the image staged while received and adopted, and >= 16 MiB of the staging file skipped and never written; follower %+v, guard %+v", fst, gs)
	}
	if h.Keys != txns*perTxn+1 {
		t.Fatalf("converged on %d keys, want %d", h.Keys, txns*perTxn+1)
	}
}

// randomLoad writes txns transactions of perTxn puts of incompressible
// valueSize-byte values from workers goroutines (random, so that Pebble's
// block compression leaves the image, and the stream, as large as the
// values).
func randomLoad(t *testing.T, cl *client.Client, txns, perTxn, valueSize, workers int) {
	t.Helper()
	txnLoad(t, cl, "load", txns, workers, func(rng *rand.Rand, j int) []client.TxnOp {
		ops := make([]client.TxnOp, perTxn)
		for i := range ops {
			v := make([]byte, valueSize)
			for k := 0; k+8 <= len(v); k += 8 {
				x := rng.Uint64()
				for b := 0; b < 8; b++ {
					v[k+b] = byte(x >> (8 * b))
				}
			}
			ops[i] = client.PutOp([]byte(fmt.Sprintf("r%06d-%03d", j, i)), v)
		}
		return ops
	})
}

// failOnFullDisk fails the test when Dragonboat finds the disk full.
type failOnFullDisk struct{ t *testing.T }

func (failOnFullDisk) Free(string, string, error) bool { return false }

func (f failOnFullDisk) Fatal(op, path string, err error) {
	f.t.Errorf("disk full: %s %s: %v", op, path, err)
}
