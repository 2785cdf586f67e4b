//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/statemachine"
)

// The kinds a run compares. Every kind runs on the same NodeHost settings
// (host.NodeHostConfig) and Raft settings (host.ShardConfig with Quiesce
// on); only the state machine differs.
const (
	// kindNoop is the baseline: Dragonboat's in-memory IStateMachine
	// started with NodeHost.StartReplica, applying nothing. What it costs
	// is Dragonboat's own cost per shard.
	kindNoop = "noop"
	// kindKeel is Keel with its defaults: WAL-less Pebble tablets on one
	// engine.Shared (block cache, file cache, memtable budget).
	kindKeel = "keel"
	// kindKeelWAL is the same with engine.Options.WAL: every tablet keeps
	// Pebble's write-ahead log, as Keel ran before tablets.
	kindKeelWAL = "keel-wal"
)

var allKinds = []string{kindNoop, kindKeel, kindKeelWAL}

// node is one NodeHost of one kind under dir: Dragonboat's data in
// dir/raft, Keel's tablets in dir/sm.
type node struct {
	kind string
	dir  string
	addr string
	nh   *dragonboat.NodeHost
	h    *host.Host // nil for kindNoop
	// closed makes close idempotent: Dragonboat panics when a NodeHost is
	// closed twice. A node is used by one goroutine at a time.
	closed bool
}

func raftDir(dir string) string { return filepath.Join(dir, "raft") }
func smDir(dir string) string   { return filepath.Join(dir, "sm") }

// openNode opens the NodeHost (and, for Keel, the shared resources first,
// through host.Open).
//
// rttMillis, when not 0, replaces host.RTTMillisecond for every kind alike
// (set through host.Options.Configure, so the bench builds against any Keel
// host package).
func openNode(kind, dir, addr string, rttMillis int) (*node, error) {
	n := &node{kind: kind, dir: dir, addr: addr}
	setRTT := func(c *config.NodeHostConfig) {
		if rttMillis > 0 {
			c.RTTMillisecond = uint64(rttMillis)
		}
	}
	switch kind {
	case kindNoop:
		nhc := host.NodeHostConfig(raftDir(dir), addr)
		setRTT(&nhc)
		nh, err := dragonboat.NewNodeHost(nhc)
		if err != nil {
			return nil, err
		}
		n.nh = nh
	case kindKeel, kindKeelWAL:
		h, err := host.Open(host.Options{
			NodeHostDir: raftDir(dir),
			RaftAddress: addr,
			Keel: host.Config{
				RootDir: smDir(dir),
				Engine:  engine.Options{WAL: kind == kindKeelWAL},
			},
			Configure: setRTT,
		})
		if err != nil {
			return nil, err
		}
		n.h, n.nh = h, h.NodeHost()
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	return n, nil
}

// start starts the single replica (ID 1) of shard. A fresh shard gets this
// host as its only member; a restarted one gets no member list, as a host
// restarting from its data directory does.
func (n *node) start(shard uint64, fresh bool) error {
	var members map[uint64]dragonboat.Target
	if fresh {
		members = map[uint64]dragonboat.Target{1: n.addr}
	}
	sc := host.ShardConfig(shard, 1)
	// As keeld does for many shards: an idle shard stops ticking its
	// election timer and heartbeating (host.ShardConfig leaves it off).
	sc.Quiesce = true
	if n.h != nil {
		return n.h.StartReplica(members, false, sc)
	}
	return n.nh.StartReplica(members, false, newNoop, sc)
}

// shared is the Keel host's shared resources, nil for the baseline.
func (n *node) shared() *engine.Shared {
	if n.h == nil {
		return nil
	}
	return n.h.Factory().Shared()
}

func (n *node) close() error {
	if n.closed {
		return nil
	}
	n.closed = true
	if n.h != nil {
		return n.h.Close()
	}
	n.nh.Close()
	return nil
}

// attempt bounds one proposal or read; a shard electing its leader drops
// requests (ErrShardNotReady) and a lost ReadIndex message times out, so
// both are retried until the caller's context ends.
const attempt = 2 * time.Second

// retryable reports whether err is a transient Dragonboat condition. A
// timed-out proposal may have applied; writing the same key twice changes
// nothing the benchmark measures.
func retryable(err error) bool {
	return errors.Is(err, dragonboat.ErrShardNotReady) || errors.Is(err, dragonboat.ErrSystemBusy) ||
		errors.Is(err, dragonboat.ErrTimeout) || errors.Is(err, dragonboat.ErrShardNotInitialized) ||
		errors.Is(err, dragonboat.ErrCanceled) || errors.Is(err, context.DeadlineExceeded)
}

// retry runs op with attempts of at most attempt until it succeeds, fails
// with a non-transient error, or ctx ends.
func retry(ctx context.Context, op func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := op(actx)
		cancel()
		if errors.Is(err, dragonboat.ErrTimeoutTooSmall) {
			// What is left of ctx is below Dragonboat's minimum (one
			// tick): the caller's deadline has as good as passed.
			return fmt.Errorf("%w: %w", errTimeout, err)
		}
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// put proposes Keel's put command to shard. Both kinds get the same bytes
// through the same call (SyncPropose with a no-op session), so the Raft
// log carries the same entries; the baseline ignores them.
func (n *node) put(ctx context.Context, shard uint64, key, value []byte) error {
	cmd, err := client.PutCommand(key, value)
	if err != nil {
		return err
	}
	sess := n.nh.GetNoOPSession(shard)
	return retry(ctx, func(ctx context.Context) error {
		res, err := n.nh.SyncPropose(ctx, sess, cmd)
		if err != nil {
			return err
		}
		if n.h != nil {
			if o := sm.DecodeResult(res); o.Code != sm.CodeOK {
				return fmt.Errorf("%w: shard %d put: %v %s", errResult, shard, o.Code, o.Reason)
			}
		}
		return nil
	})
}

// read is a linearizable read of key on shard (SyncRead: a ReadIndex
// round, then Lookup). Keel must find the key with want as its value; the
// baseline answers nil.
func (n *node) read(ctx context.Context, shard uint64, key, want []byte) error {
	return retry(ctx, func(ctx context.Context) error {
		v, err := n.nh.SyncRead(ctx, shard, sm.GetQuery{Key: key})
		if err != nil || n.h == nil {
			return err
		}
		r, ok := v.(sm.GetResult)
		if !ok || !r.Found || (want != nil && string(r.Value) != string(want)) {
			return fmt.Errorf("%w: shard %d key %q: %#v", errResult, shard, key, v)
		}
		return nil
	})
}

// noop is the baseline state machine: it applies nothing and keeps no
// state, so its snapshots are empty.
type noop struct{}

var _ statemachine.IStateMachine = noop{}

func newNoop(uint64, uint64) statemachine.IStateMachine { return noop{} }

func (noop) Update(e statemachine.Entry) (statemachine.Result, error) {
	return statemachine.Result{Value: e.Index}, nil
}
func (noop) Lookup(any) (any, error) { return nil, nil }
func (noop) SaveSnapshot(io.Writer, statemachine.ISnapshotFileCollection, <-chan struct{}) error {
	return nil
}
func (noop) RecoverFromSnapshot(io.Reader, []statemachine.SnapshotFile, <-chan struct{}) error {
	return nil
}
func (noop) Close() error { return nil }
