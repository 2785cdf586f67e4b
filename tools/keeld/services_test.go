package main

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/logcompact"
	"github.com/keel-db/keel/snapshot"
	"github.com/lni/dragonboat/v4"
)

// shardGone answers every snapshot request as Dragonboat does for a shard
// this NodeHost no longer runs, and counts them.
type shardGone struct{ calls atomic.Int64 }

func (g *shardGone) SyncRequestSnapshot(context.Context, uint64, dragonboat.SnapshotOption) (uint64, error) {
	g.calls.Add(1)
	return 0, dragonboat.ErrShardNotFound
}

// movingIndex is an applied index that changes at every read, so the
// timer never skips.
type movingIndex struct{ n atomic.Uint64 }

func (m *movingIndex) AppliedIndex() uint64 { return m.n.Add(1) }

// Removing a process's own replica stops that replica's snapshot timer
// (and drops its compactor from the Runner): before, the timer went on
// requesting snapshots of the shard that had left, failing every interval,
// and a later join of the shard ran a second timer beside the new one.
func TestStopShardEndsTheReplicasLoops(t *testing.T) {
	gone := &shardGone{}
	sched := snapshot.NewScheduler(snapshot.SchedulerConfig{ShardID: 2, Interval: 2 * time.Millisecond, Seed: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, gone, &movingIndex{})
	sched.Start()
	s := &services{byShard: map[uint64]*shardServices{2: {sched: sched}}, compactors: logcompact.NewRunner(0)}
	deadline := time.Now().Add(10 * time.Second)
	for gone.calls.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the timer never ran")
		}
		time.Sleep(time.Millisecond)
	}
	s.stopShard(2)
	after := gone.calls.Load()
	if s.shard(2) != nil {
		t.Fatal("the stopped replica's loops are still listed")
	}
	// Stop waited for the loop, so no request may start after it returned;
	// ten intervals give a timer still running the time to show itself.
	time.Sleep(20 * time.Millisecond)
	if got := gone.calls.Load(); got != after {
		t.Fatalf("the timer made %d more requests after stopShard", got-after)
	}
	s.stopShard(2) // nothing left: a no-op
}

// /status's compaction figures for the first shard follow its replica:
// after the replica left they are the stopped compactor's (still
// readable), after it joined again the new compactor's, never the stale
// one beside a live replica.
func TestCompactorOfFollowsARejoinedReplica(t *testing.T) {
	old, joined := &logcompact.Compactor{}, &logcompact.Compactor{}
	s := &services{byShard: map[uint64]*shardServices{1: {comp: old}}, comp: old, compactors: logcompact.NewRunner(0)}
	if got := s.compactorOf(1); got != old {
		t.Fatal("the first shard's compactor is not the one it started with")
	}
	s.mu.Lock()
	delete(s.byShard, 1) // the replica left (stopShard, without a live timer)
	s.mu.Unlock()
	if got := s.compactorOf(1); got != old {
		t.Fatal("a replica that left lost its compactor's figures")
	}
	s.mu.Lock()
	s.byShard[1] = &shardServices{comp: joined}
	s.mu.Unlock()
	if got := s.compactorOf(1); got != joined {
		t.Fatal("a rejoined replica shows the stopped compactor's figures")
	}
	if (*services)(nil).compactorOf(1) != nil {
		t.Fatal("no services, yet a compactor")
	}
}
