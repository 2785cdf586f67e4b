package raftlogdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	oldpebble "github.com/cockroachdb/pebble"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// TestOracle holds the reader equal to Dragonboat itself. A three-replica
// cluster writes across several entry batches, changes its membership
// (including a change Dragonboat rejects), takes a snapshot that compacts
// the log, and stops. The reader reads replica 1's directory; then replica
// 1 restarts alone (it cannot win an election, so its log does not move)
// and its NodeHost must report the same range, state, snapshot, entries,
// terms and replicas; finally the others start and the shard's
// linearizable membership must equal the reader's.
func TestOracle(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) { testOracle(t, batched) })
	}
}

func testOracle(t *testing.T, batched bool) {
	var compacted atomic.Uint64 // highest LogCompacted index on replica 1
	c := testcluster.New(t, 3, testcluster.Options{
		Shard: func(sc *config.Config) { sc.CompactionOverhead = 5 },
		NodeHost: func(nhc *config.NodeHostConfig) {
			if batched {
				seedBatched(t, nhc.NodeHostDir)
			}
			// testcluster's hook does not say which replica it
			// configures; the directory does.
			if filepath.Base(filepath.Dir(nhc.NodeHostDir)) == "node-1" {
				nhc.SystemEventListener = compactListener{&compacted}
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader := c.Leader()
	put := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			k := []byte(fmt.Sprintf("k%04d", i))
			if err := testcluster.Retry(ctx, func(ctx context.Context) error { return leader.Client.Put(ctx, k, k) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(30)
	extra := testcluster.FreeAddrs(t, 2)
	change := func(what string, op func(ctx context.Context) error, wantRejected bool) {
		t.Helper()
		err := testcluster.Retry(ctx, op)
		if wantRejected != errors.Is(err, dragonboat.ErrRejected) || (!wantRejected && err != nil) {
			t.Fatalf("%s: %v (want rejected: %v)", what, err, wantRejected)
		}
	}
	nh := leader.NH
	change("add non-voting 4", func(ctx context.Context) error { return nh.SyncRequestAddNonVoting(ctx, c.ShardID, 4, extra[0], 0) }, false)
	change("add non-voting 5", func(ctx context.Context) error { return nh.SyncRequestAddNonVoting(ctx, c.ShardID, 5, extra[1], 0) }, false)
	put(150) // past index 144, so compaction removes whole batches too
	n1 := c.Node(1)
	ssIndex, err := n1.NH.SyncRequestSnapshot(ctx, c.ShardID, dragonboat.DefaultSnapshotOption)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if got := compacted.Load(); got < ssIndex-5 {
			return fmt.Errorf("replica 1 compacted its log to %d, want %d", got, ssIndex-5)
		}
		return nil
	})
	// Changes after the snapshot are replayed from the log, rejected ones
	// included.
	change("remove 4", func(ctx context.Context) error { return nh.SyncRequestDeleteReplica(ctx, c.ShardID, 4, 0) }, false)
	change("re-add removed 4", func(ctx context.Context) error { return nh.SyncRequestAddReplica(ctx, c.ShardID, 4, extra[0], 0) }, true)
	change("add 6 at 5's address", func(ctx context.Context) error { return nh.SyncRequestAddNonVoting(ctx, c.ShardID, 6, extra[1], 0) }, true)
	put(10)
	last := leader.Factory.StateMachine(c.ShardID, leader.ReplicaID).AppliedIndex()
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, n := range c.Running() {
			if got := n.Factory.StateMachine(c.ShardID, n.ReplicaID).AppliedIndex(); got < last {
				return fmt.Errorf("replica %d applied %d of %d", n.ReplicaID, got, last)
			}
		}
		return nil
	})
	c.Close()

	nhDir := filepath.Join(n1.Dir, "raft")
	d, err := Open(nhDir)
	if err != nil {
		t.Fatal(err)
	}
	if d.Batched() != batched {
		t.Fatalf("LogDB batched %v, want %v: the case under test did not arise", d.Batched(), batched)
	}
	l, err := d.Log(c.ShardID, 1)
	if err != nil {
		t.Fatal(err)
	}
	replicas, err := d.Replicas()
	if err != nil {
		t.Fatal(err)
	}
	term, members, err := d.MembershipAt(c.ShardID, 1, l.LastIndex, false)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := d.Entries(c.ShardID, 1, l.FirstIndex, l.LastIndex)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("log %d..%d (stored from %d), snapshot %d, state %+v, %d entries", l.FirstIndex, l.LastIndex, l.StoredFirstIndex, l.Snapshot.Index, l.State, len(ents))
	// Compaction to index i removes entries below i (plain) or batches
	// below i/48-1 (batched).
	wantStored := compacted.Load()
	if batched {
		wantStored = (wantStored/batchSize - 1) * batchSize
	}
	if l.StoredFirstIndex != wantStored || l.Snapshot.Index != ssIndex {
		t.Fatalf("stored from %d (want %d), snapshot %d (want %d)", l.StoredFirstIndex, wantStored, l.Snapshot.Index, ssIndex)
	}
	if l.LastIndex < last || len(ents) < 10 {
		t.Fatalf("log ends at %d with %d entries after the snapshot, want >= %d", l.LastIndex, len(ents), last)
	}

	// Replica 1 alone.
	n1 = c.Start(1)
	lr, err := n1.NH.GetLogReader(c.ShardID)
	if err != nil {
		t.Fatal(err)
	}
	if first, lastIdx := lr.GetRange(); first != l.FirstIndex || lastIdx != l.LastIndex {
		t.Errorf("range: reader %d..%d, NodeHost %d..%d", l.FirstIndex, l.LastIndex, first, lastIdx)
	}
	state, _ := lr.NodeState()
	if state != l.State {
		t.Errorf("state: reader %+v, NodeHost %+v", l.State, state)
	}
	ss := lr.Snapshot()
	if ss.Index != l.Snapshot.Index || ss.Term != l.Snapshot.Term || ss.OnDiskIndex != l.Snapshot.OnDiskIndex ||
		!reflect.DeepEqual(ss.Membership, l.Snapshot.Membership) {
		t.Errorf("snapshot: reader %d/%d/%d %+v, NodeHost %d/%d/%d %+v", l.Snapshot.Index, l.Snapshot.Term, l.Snapshot.OnDiskIndex,
			l.Snapshot.Membership, ss.Index, ss.Term, ss.OnDiskIndex, ss.Membership)
	}
	if got, err := lr.Term(l.LastIndex); err != nil || got != term {
		t.Errorf("term at %d: reader %d, NodeHost %d (%v)", l.LastIndex, term, got, err)
	}
	want, err := lr.Entries(l.FirstIndex, l.LastIndex+1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(ents) {
		t.Errorf("entries: reader %d, NodeHost %d", len(ents), len(want))
	}
	for i := range min(len(want), len(ents)) {
		g, w := ents[i], want[i]
		if g.Index != w.Index || g.Term != w.Term || g.Type != w.Type || string(g.Cmd) != string(w.Cmd) {
			t.Errorf("entry %d: reader %d/%d/%v %x, NodeHost %d/%d/%v %x", i, g.Index, g.Term, g.Type, g.Cmd, w.Index, w.Term, w.Type, w.Cmd)
			break
		}
	}
	info := n1.NH.GetNodeHostInfo(dragonboat.NodeHostInfoOption{})
	var logInfo []ReplicaID
	for _, ni := range info.LogInfo {
		logInfo = append(logInfo, ReplicaID{ni.ShardID, ni.ReplicaID})
	}
	if !reflect.DeepEqual(logInfo, replicas) {
		t.Errorf("replicas: reader %v, NodeHost %v", replicas, logInfo)
	}

	// The whole shard: membership by linearizable read.
	c.Start(2)
	c.Start(3)
	var m *dragonboat.Membership
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		var err error
		m, err = n1.NH.SyncGetShardMembership(ctx, c.ShardID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	removed := map[uint64]bool{}
	for id := range m.Removed {
		removed[id] = true
	}
	got := pb.Membership{ConfigChangeId: m.ConfigChangeID, Addresses: m.Nodes, NonVotings: m.NonVotings, Witnesses: m.Witnesses, Removed: removed}
	if !reflect.DeepEqual(got, members) {
		t.Errorf("membership: reader %+v, NodeHost %+v", members, got)
	}
	if _, ok := members.Removed[4]; !ok || members.NonVotings[5] != extra[1] || len(members.Addresses) != 3 {
		t.Errorf("membership %+v is not the one the test made", members)
	}
}

// seedBatched makes a new NodeHost directory's LogDB batched, the way a
// LogDB made by Dragonboat 3.x is: Dragonboat's default LogDB writes 07
// entry batches once any exists (sharded.go, OpenShardedDB), and offers no
// setting to ask for them. The one seeded batch belongs to a shard no
// replica uses; everything shard 1 stores is then written by Dragonboat.
func seedBatched(t *testing.T, nodeHostDir string) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(nodeHostDir, host, fmt.Sprintf("%020d", 1), "logdb-0")
	if _, err := os.Stat(dir); err == nil {
		return
	}
	db, err := oldpebble.Open(dir, &oldpebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const unusedShard = 1 << 40
	eb := pb.EntryBatch{Entries: []pb.Entry{{Index: 1, Term: 1}}}
	v, err := eb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(key(hdrEntryBatch, unusedShard, 1, 0, true), v, oldpebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// compactListener records the highest log compaction index it is told of.
type compactListener struct{ to *atomic.Uint64 }

var _ raftio.ISystemEventListener = compactListener{}

func (l compactListener) LogCompacted(e raftio.EntryInfo) {
	for {
		old := l.to.Load()
		if e.Index <= old || l.to.CompareAndSwap(old, e.Index) {
			return
		}
	}
}
func (compactListener) NodeHostShuttingDown()                       {}
func (compactListener) NodeUnloaded(raftio.NodeInfo)                {}
func (compactListener) NodeDeleted(raftio.NodeInfo)                 {}
func (compactListener) NodeReady(raftio.NodeInfo)                   {}
func (compactListener) MembershipChanged(raftio.NodeInfo)           {}
func (compactListener) ConnectionEstablished(raftio.ConnectionInfo) {}
func (compactListener) ConnectionFailed(raftio.ConnectionInfo)      {}
func (compactListener) SendSnapshotStarted(raftio.SnapshotInfo)     {}
func (compactListener) SendSnapshotCompleted(raftio.SnapshotInfo)   {}
func (compactListener) SendSnapshotAborted(raftio.SnapshotInfo)     {}
func (compactListener) SnapshotReceived(raftio.SnapshotInfo)        {}
func (compactListener) SnapshotRecovered(raftio.SnapshotInfo)       {}
func (compactListener) SnapshotCreated(raftio.SnapshotInfo)         {}
func (compactListener) SnapshotCompacted(raftio.SnapshotInfo)       {}
func (compactListener) LogDBCompacted(raftio.EntryInfo)             {}
