// Package testcluster runs real Dragonboat NodeHosts with Keel state
// machines on 127.0.0.1, for tests. Each replica gets its own NodeHost, data
// directory and port, chosen per test; everything is closed in t.Cleanup.
//
// Concurrency: a Cluster is started, stopped and restarted by one test
// goroutine (Start, Stop, WaitFor and friends call t.Fatalf). Running,
// Node and the Node.Client of a running replica are safe to use from other
// goroutines while that happens; a Node's fields are replaced, not mutated,
// when it restarts, except NH and Client, which Stop clears.
//
// Writes and retries: Retry re-runs an operation on timeouts, which may
// apply a write twice or out of order with later writes; use it for reads
// and idempotent writes. NotApplied tells a failure that certainly did not
// apply a proposal (safe to retry anything) from an ambiguous one.
package testcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/proctest"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/statemachine"
)

// Options tune a Cluster. The zero value gives Keel's defaults.
type Options struct {
	// ShardID defaults to 1.
	ShardID uint64
	// Shard adjusts the per-replica Raft config after host.ShardConfig.
	Shard func(*config.Config)
	// NodeHost adjusts the NodeHost config.
	NodeHost func(*config.NodeHostConfig)
	// Plugin adjusts the Keel config (RootDir is set per replica).
	Plugin func(*host.Config)
	// NoStaging keeps a PeerGuard set by NodeHost from staging received
	// snapshot images while their streams arrive (host.PeerGuard
	// AttachFactory), as before that existed.
	NoStaging bool
	// RTTMillisecond defaults to 5.
	RTTMillisecond uint64
	// WrapStateMachine, if set, wraps every state machine the replica's
	// factory creates before Dragonboat sees it (to observe Open, Update or
	// snapshot calls). Factory.StateMachine still returns the unwrapped one.
	WrapStateMachine func(replicaID uint64, s statemachine.IOnDiskStateMachine) statemachine.IOnDiskStateMachine
}

// Node is one replica.
type Node struct {
	ReplicaID uint64
	Addr      string
	Dir       string
	NH        *dragonboat.NodeHost
	Factory   *host.Factory
	Client    *client.Client
}

// Cluster is a set of replicas of one shard.
type Cluster struct {
	t       testing.TB
	opts    Options
	Dir     string
	ShardID uint64
	// Members is the initial membership: replica ID -> Raft address.
	Members map[uint64]string
	// Nodes holds every replica started so far. The map is written only by
	// the test goroutine (Start, StartJoin); read it from other goroutines
	// through Node and Running, which take mu.
	Nodes map[uint64]*Node

	// mu guards writes to Nodes and to Node.NH and Node.Client, so Running
	// and Node are safe beside Start and Stop.
	mu sync.Mutex
}

var quietOnce sync.Once

// Quiet routes Dragonboat's logging to slog at warn level, unless
// KEEL_TEST_LOG=debug.
func Quiet() {
	quietOnce.Do(func() {
		level := slog.LevelWarn
		if os.Getenv("KEEL_TEST_LOG") == "debug" {
			level = slog.LevelDebug
		}
		l := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
		host.UseSlog(l, level)
	})
}

// FreeAddrs returns n distinct 127.0.0.1 addresses whose ports were free a
// moment ago; see proctest.FreeAddrs.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	return proctest.FreeAddrs(t, n)
}

// New starts an n-replica cluster (replica IDs 1..n) and waits until it is
// ready (see WaitReady).
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	Quiet()
	if opts.ShardID == 0 {
		opts.ShardID = 1
	}
	if opts.RTTMillisecond == 0 {
		opts.RTTMillisecond = 5
	}
	c := &Cluster{
		t:       t,
		opts:    opts,
		Dir:     t.TempDir(),
		ShardID: opts.ShardID,
		Members: map[uint64]string{},
		Nodes:   map[uint64]*Node{},
	}
	for i, a := range FreeAddrs(t, n) {
		c.Members[uint64(i+1)] = a
	}
	t.Cleanup(c.Close)
	for id := range c.Members {
		c.Start(id)
	}
	c.WaitReady(30 * time.Second)
	return c
}

// WaitReady waits until every running replica knows the same leader and
// has completed a linearizable read through it. A leader alone is not
// enough: until a follower has heard from the leader and its connections
// are up, proposals it forwards can be lost silently and end in a timeout
// (an ambiguous outcome) instead of a retryable error.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	c.WaitFor(timeout, "every replica to know one leader", func() bool {
		var leader uint64
		for _, n := range c.Running() {
			id, _, ok, err := n.NH.GetLeaderID(c.ShardID)
			if err != nil || !ok || (leader != 0 && id != leader) || c.Node(id) == nil {
				return false
			}
			leader = id
		}
		return leader != 0
	})
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, n := range c.Running() {
		err := Retry(ctx, func(ctx context.Context) error {
			_, _, err := n.Client.Get(ctx, []byte("keel-testcluster-ready"))
			return err
		})
		if err != nil {
			c.t.Fatalf("replica %d: linearizable read before the cluster is used: %v", n.ReplicaID, err)
		}
	}
}

// Start starts (or restarts) replica id with the cluster's initial members.
func (c *Cluster) Start(id uint64) *Node {
	c.t.Helper()
	addr, ok := c.Members[id]
	if !ok {
		c.t.Fatalf("replica %d is not an initial member; use StartJoin", id)
	}
	targets := map[uint64]dragonboat.Target{}
	for rid, a := range c.Members {
		targets[rid] = a
	}
	return c.start(id, addr, targets, false)
}

// StartJoin starts replica id at addr as a new member joining the shard; the
// caller must have added it with SyncRequestAddReplica first.
func (c *Cluster) StartJoin(id uint64, addr string) *Node {
	c.t.Helper()
	return c.start(id, addr, nil, true)
}

func (c *Cluster) start(id uint64, addr string, members map[uint64]dragonboat.Target, join bool) *Node {
	c.t.Helper()
	if n := c.Nodes[id]; n != nil && n.NH != nil {
		c.t.Fatalf("replica %d is already running", id)
	}
	dir := filepath.Join(c.Dir, fmt.Sprintf("node-%d", id))
	nhc := config.NodeHostConfig{
		NodeHostDir:    filepath.Join(dir, "raft"),
		RTTMillisecond: c.opts.RTTMillisecond,
		RaftAddress:    addr,
		Expert:         config.ExpertConfig{LogDB: host.LogDBConfig()},
	}
	if c.opts.NodeHost != nil {
		c.opts.NodeHost(&nhc)
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		c.t.Fatalf("replica %d: new NodeHost: %v", id, err)
	}
	pc := host.Config{RootDir: filepath.Join(dir, "sm")}
	if c.opts.Plugin != nil {
		c.opts.Plugin(&pc)
	}
	f, err := host.NewFactory(pc)
	if err != nil {
		nh.Close()
		c.t.Fatalf("replica %d: factory: %v", id, err)
	}
	if g := host.PeerGuardOf(nhc); g != nil && !c.opts.NoStaging {
		g.AttachFactory(f)
	}
	sc := host.ShardConfig(c.ShardID, id)
	if c.opts.Shard != nil {
		c.opts.Shard(&sc)
	}
	create := f.Func()
	if wrap := c.opts.WrapStateMachine; wrap != nil {
		create = func(shardID, replicaID uint64) statemachine.IOnDiskStateMachine {
			return wrap(replicaID, f.Create(shardID, replicaID))
		}
	}
	if err := nh.StartOnDiskReplica(members, join, create, sc); err != nil {
		nh.Close()
		c.t.Fatalf("replica %d: start: %v", id, err)
	}
	n := &Node{ReplicaID: id, Addr: addr, Dir: dir, NH: nh, Factory: f, Client: client.NewClient(nh, c.ShardID)}
	c.mu.Lock()
	c.Nodes[id] = n
	c.mu.Unlock()
	return n
}

// Stop closes replica id's NodeHost (a clean stop). The Node is marked
// stopped (NH and Client nil) before the NodeHost closes, so Running never
// returns a replica that is shutting down.
func (c *Cluster) Stop(id uint64) {
	c.mu.Lock()
	n := c.Nodes[id]
	var nh *dragonboat.NodeHost
	var f *host.Factory
	if n != nil {
		nh, f = n.NH, n.Factory
		n.NH = nil
		n.Client = nil
	}
	c.mu.Unlock()
	if nh != nil {
		// The NodeHost closes every state machine; only then may the
		// resources they share go.
		nh.Close()
		_ = f.Close()
	}
}

// Close stops every replica.
func (c *Cluster) Close() {
	c.mu.Lock()
	ids := make([]uint64, 0, len(c.Nodes))
	for id := range c.Nodes {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.Stop(id)
	}
}

// Node returns replica id if it is running, or nil.
func (c *Cluster) Node(id uint64) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.Nodes[id]; n != nil && n.NH != nil {
		return n
	}
	return nil
}

// Running returns the replicas whose NodeHost is up, in replica ID order.
func (c *Cluster) Running() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.Nodes {
		if n.NH != nil {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ReplicaID < out[j].ReplicaID })
	return out
}

// WaitLeader waits until a running replica knows a leader and returns the
// leader's replica ID.
func (c *Cluster) WaitLeader(timeout time.Duration) uint64 {
	c.t.Helper()
	var leader uint64
	c.WaitFor(timeout, "a leader", func() bool {
		for _, n := range c.Running() {
			id, _, ok, err := n.NH.GetLeaderID(c.ShardID)
			if err == nil && ok && c.Node(id) != nil {
				leader = id
				return true
			}
		}
		return false
	})
	return leader
}

// Leader returns the current leader's node, waiting for one.
func (c *Cluster) Leader() *Node {
	c.t.Helper()
	for {
		if n := c.Node(c.WaitLeader(30 * time.Second)); n != nil {
			return n
		}
	}
}

// WaitFor polls cond until it is true, failing the test after timeout
// with what it waited for (testutil.Eventually).
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	testutil.Eventually(c.t, timeout, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("waiting for %s", what)
	})
}

// Retry calls op until it succeeds or a non-retryable error occurs,
// retrying the errors a client sees while a leader is being elected.
func Retry(ctx context.Context, op func(ctx context.Context) error) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := op(attempt)
		cancel()
		if err == nil || !Retryable(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Retryable reports whether err is a transient Dragonboat condition.
func Retryable(err error) bool {
	return errors.Is(err, dragonboat.ErrShardNotReady) || errors.Is(err, dragonboat.ErrTimeout) ||
		errors.Is(err, dragonboat.ErrSystemBusy) || errors.Is(err, dragonboat.ErrShardNotInitialized) ||
		errors.Is(err, dragonboat.ErrAborted) || errors.Is(err, dragonboat.ErrCanceled) ||
		errors.Is(err, context.DeadlineExceeded)
}

// NotApplied reports whether err guarantees that the proposal was not
// applied and never will be, so any write may be retried: the request was
// refused before it entered the Raft log (busy, no leader, dropped, shard
// not started here). Timeouts and cancellations are ambiguous: the entry may
// still commit, so NotApplied is false for them.
func NotApplied(err error) bool {
	return errors.Is(err, dragonboat.ErrSystemBusy) || errors.Is(err, dragonboat.ErrShardNotReady) ||
		errors.Is(err, dragonboat.ErrShardNotInitialized) || errors.Is(err, dragonboat.ErrShardNotFound) ||
		errors.Is(err, dragonboat.ErrPayloadTooBig) || errors.Is(err, dragonboat.ErrInvalidSession)
}

// WaitConverged waits until every running replica reports the same applied
// index in its local StateHash, and returns those hashes by replica ID. It
// does not compare the hashes: that is the caller's assertion. Writes must
// have stopped, or the replicas may never be seen at one index.
func (c *Cluster) WaitConverged(timeout time.Duration) map[uint64]engine.StateHash {
	c.t.Helper()
	var out map[uint64]engine.StateHash
	testutil.Eventually(c.t, timeout, func() error {
		var why string
		if out, why = c.hashesAtOneIndex(); why != "" {
			return fmt.Errorf("waiting for replicas at one applied index: %s", why)
		}
		return nil
	})
	return out
}

// hashesAtOneIndex returns every running replica's StateHash, or why they
// are not (yet) at one applied index.
func (c *Cluster) hashesAtOneIndex() (map[uint64]engine.StateHash, string) {
	out := map[uint64]engine.StateHash{}
	var first *Node
	for _, n := range c.Running() {
		h, err := n.Client.LocalHash()
		if err != nil {
			return nil, fmt.Sprintf("replica %d: %v", n.ReplicaID, err)
		}
		if first != nil && h.AppliedIndex != out[first.ReplicaID].AppliedIndex {
			return nil, fmt.Sprintf("replica %d at %d, replica %d at %d",
				n.ReplicaID, h.AppliedIndex, first.ReplicaID, out[first.ReplicaID].AppliedIndex)
		}
		if first == nil {
			first = n
		}
		out[n.ReplicaID] = h
	}
	if first == nil {
		return nil, "no replica is running"
	}
	return out, ""
}
