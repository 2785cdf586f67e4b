package host

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
)

// Options configures a Host.
type Options struct {
	// NodeHostDir is Dragonboat's directory (Raft log, bootstrap records,
	// snapshot metadata). Required.
	NodeHostDir string
	// RaftAddress is this host's Raft address, host:port. Required.
	RaftAddress string
	// Keel configures the state machines and the resources they share.
	// Keel.RootDir is required.
	Keel Config
	// RTTMillisecond is the NodeHost's tick (Dragonboat's RTTMillisecond);
	// 0 means RTTMillisecond (20 ms). Dragonboat ticks every shard every
	// tick, idle or quiesced, so a host running many shards raises it:
	// RTTForShards gives Keel's rule and nodehost.go says what a longer
	// tick slows down. Every replica of a shard must run with the same
	// tick: election and heartbeat intervals are counted in ticks.
	RTTMillisecond uint64
	// Configure, if set, adjusts Dragonboat's NodeHost configuration
	// (NodeHostConfig with Keel's defaults, PeerGuard included) before the
	// NodeHost starts: mutual TLS, the deployment ID (DeploymentID),
	// listen addresses.
	Configure func(*config.NodeHostConfig)
	// NewFactory builds the Factory; nil means this package's NewFactory. A
	// host that loaded Keel as a Go plugin passes the plugin's
	// Descriptor.NewFactory, so the shared resources live inside the plugin.
	NewFactory func(Config) (*Factory, error)
}

// Host owns one NodeHost running Keel shards and the resources those shards
// share, and orders their lifetimes: Open creates the shared resources
// first, then the NodeHost; Close closes the NodeHost (which closes every
// state machine) and only then the shared resources. Everything a host
// process needs to run many shards goes through it.
//
// Invariant: while the Host is open, every state machine the NodeHost runs
// was created by Factory() and uses its shared resources.
type Host struct {
	nh      *dragonboat.NodeHost
	factory *Factory

	// closeOnce makes Close idempotent: Dragonboat panics when a NodeHost is
	// closed twice.
	closeOnce sync.Once
	closeErr  error
}

// Open opens the shared resources, then a NodeHost with Keel's defaults
// (NodeHostConfig).
func Open(o Options) (*Host, error) {
	if o.NodeHostDir == "" || o.RaftAddress == "" {
		return nil, fmt.Errorf("%w: NodeHostDir and RaftAddress are required", ErrConfig)
	}
	newFactory := o.NewFactory
	if newFactory == nil {
		newFactory = NewFactory
	}
	f, err := newFactory(o.Keel)
	if err != nil {
		return nil, err
	}
	nhc := NodeHostConfig(o.NodeHostDir, o.RaftAddress)
	if o.RTTMillisecond > 0 {
		nhc.RTTMillisecond = o.RTTMillisecond
	}
	if o.Configure != nil {
		o.Configure(&nhc)
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	// Before any replica starts: from here the guard also drops messages
	// for shards this host does not run.
	if g := PeerGuardOf(nhc); g != nil {
		g.Attach(nh)
		g.AttachFactory(f)
	}
	return &Host{nh: nh, factory: f}, nil
}

// NodeHost is the Dragonboat NodeHost; Host closes it.
func (h *Host) NodeHost() *dragonboat.NodeHost { return h.nh }

// Factory creates the host's state machines and owns what they share.
func (h *Host) Factory() *Factory { return h.factory }

// StartReplica starts a replica of a Keel shard on this host with Keel's
// factory: members and join as for NodeHost.StartOnDiskReplica, sc
// typically from ShardConfig.
func (h *Host) StartReplica(members map[uint64]string, join bool, sc config.Config) error {
	targets := make(map[uint64]dragonboat.Target, len(members))
	for id, addr := range members {
		targets[id] = addr
	}
	if err := h.nh.StartOnDiskReplica(targets, join, h.factory.Create, sc); err != nil {
		return fmt.Errorf("keel: start replica %d of shard %d: %w", sc.ReplicaID, sc.ShardID, err)
	}
	return nil
}

// RemoveReplica deletes everything a replica left on this host once it is
// no longer a member of its shard (after the membership change that removed
// it): it stops the replica if it runs, removes Dragonboat's data for it
// (NodeHost.SyncRemoveData: its log entries and snapshot records), then
// Keel's tablet, and returns the allocated bytes the tablet freed.
// Dragonboat's RemoveData alone clears only Dragonboat's data: a state
// machine is never told that it was removed. ctx needs a deadline.
//
// Calling it for a replica that is still a member corrupts nothing on the
// other replicas, but this one loses its data and must rejoin as a new
// member.
func (h *Host) RemoveReplica(ctx context.Context, shardID, replicaID uint64) (int64, error) {
	if err := h.nh.StopReplica(shardID, replicaID); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
		return 0, fmt.Errorf("keel: stop replica %d of shard %d: %w", replicaID, shardID, err)
	}
	if err := h.nh.SyncRemoveData(ctx, shardID, replicaID); err != nil {
		return 0, fmt.Errorf("keel: remove Raft data of replica %d of shard %d: %w", replicaID, shardID, err)
	}
	return h.factory.RemoveTablet(shardID, replicaID)
}

// Close closes the NodeHost, which stops every replica and closes its state
// machine, and then the shared resources. It is safe to call more than
// once.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.nh.Close()
		h.closeErr = h.factory.Close()
	})
	return h.closeErr
}
