package main

// Removing this process's own replica of a shard: DELETE
// /admin/shards/{s}/members/{id} sent to the process that runs replica id
// (step 4 of a move, shardjoin.go). Dragonboat answers a membership change
// on the replica that proposed it, and a replica removing itself is an
// unreliable witness of its own removal, two ways (Dragonboat v4's
// engine.go, node.go, internal/transport):
//
//   - A follower may never learn that its removal committed. The leader
//     hands a committed entry to its apply worker (processSteps, FastApply)
//     before it sends the Replicate message that carries the new commit
//     index, and applying RemoveNode drops the removed replica from the
//     leader's node registry (node.applyConfigChange) and from its remotes.
//     When the apply wins that race the transport cannot resolve the
//     message's target and drops it (Transport.send: unknownTarget), and no
//     heartbeat follows. The follower's request then ends in ErrTimeout
//     ("delete replica 3: timeout") although the removal committed, and the
//     replica lingers for good: a member in its own eyes only, with no
//     leader, so it can neither serve nor read the membership again.
//     Proposing through a follower has a second way to time out: the
//     forwarded proposal is lost when leadership moves meanwhile.
//   - A replica that applies its own removal stops itself (requestRemoval)
//     before it completes the pending request (configChangeProcessed); the
//     engine may close the stopped replica in between, and the close fails
//     the request with ErrShardClosed although the removal committed.
//
// So keeld first makes the local replica the shard's leader: a leader
// computes the commit index itself, so it applies its own removal (and
// steps down); the other members commit the entry under their next leader
// even when the old leader's last messages are lost (a majority holds it,
// so only a holder can win the election). Only a leader that loses the
// leadership before the entry commits can still miss it, and then the
// answer is an error. And the answer is the NodeDeleted event Dragonboat
// publishes when a replica applies a membership without itself
// (node.applyConfigChange, RestoreRemotes), whatever the request
// returned: it only exists once the removal is committed, so a removal is
// never reported that did not happen. The cost is an election in the
// shard after the removal, as when a leader fails: a write another member
// forwarded to the old leader meanwhile is lost and times out (503).

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/raftio"
)

// deletedWait bounds how long a removal whose request failed waits for the
// local replica's NodeDeleted event: Dragonboat publishes it before it
// closes the replica, so when the removal was applied the event is at most
// a scheduling delay behind the request's error.
const deletedWait = time.Second

// transferRetry spaces leader transfer requests while the local replica is
// not yet the leader: a transfer that found the target behind is aborted
// by the leader after an election timeout, and asking again is harmless.
const transferRetry = 500 * time.Millisecond

// pollInterval is how often the leader is looked up while waiting for a
// transfer (Dragonboat reports a new leader only through polling or a
// listener; polling keeps this local to the request).
const pollInterval = 10 * time.Millisecond

// replicaKey names one replica of one shard.
type replicaKey struct{ shard, replica uint64 }

// deletions is the NodeHost's system event listener: it records every
// replica of this NodeHost that applied its own removal (NodeDeleted).
//
// Invariant: a channel in done is closed exactly when Dragonboat reported
// its replica deleted; a replica ID, once removed, never joins again, so
// a closed channel is never reopened.
type deletions struct {
	mu   sync.Mutex // guards done
	done map[replicaKey]chan struct{}
}

func newDeletions() *deletions {
	return &deletions{done: make(map[replicaKey]chan struct{})}
}

func (d *deletions) chanFor(k replicaKey) chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.done[k]
	if !ok {
		c = make(chan struct{})
		d.done[k] = c
	}
	return c
}

// wait reports whether replica of shard applied its own removal, waiting
// for it at most until ctx is done.
func (d *deletions) wait(ctx context.Context, shard, replica uint64) bool {
	c := d.chanFor(replicaKey{shard, replica})
	select {
	case <-c:
		return true
	case <-ctx.Done():
		// A select picks at random among ready cases: an event that
		// came as ctx ended still counts.
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
}

// NodeDeleted runs on Dragonboat's event goroutine, which the apply worker
// hands the event to; it must not block.
func (d *deletions) NodeDeleted(info raftio.NodeInfo) {
	k := replicaKey{info.ShardID, info.ReplicaID}
	c := d.chanFor(k)
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-c:
	default:
		close(c)
	}
}

// The other events are not needed here.

func (*deletions) NodeHostShuttingDown()                       {}
func (*deletions) NodeUnloaded(raftio.NodeInfo)                {}
func (*deletions) NodeReady(raftio.NodeInfo)                   {}
func (*deletions) MembershipChanged(raftio.NodeInfo)           {}
func (*deletions) ConnectionEstablished(raftio.ConnectionInfo) {}
func (*deletions) ConnectionFailed(raftio.ConnectionInfo)      {}
func (*deletions) SendSnapshotStarted(raftio.SnapshotInfo)     {}
func (*deletions) SendSnapshotCompleted(raftio.SnapshotInfo)   {}
func (*deletions) SendSnapshotAborted(raftio.SnapshotInfo)     {}
func (*deletions) SnapshotReceived(raftio.SnapshotInfo)        {}
func (*deletions) SnapshotRecovered(raftio.SnapshotInfo)       {}
func (*deletions) SnapshotCreated(raftio.SnapshotInfo)         {}
func (*deletions) SnapshotCompacted(raftio.SnapshotInfo)       {}
func (*deletions) LogCompacted(raftio.EntryInfo)               {}
func (*deletions) LogDBCompacted(raftio.EntryInfo)             {}

var _ raftio.ISystemEventListener = (*deletions)(nil)

// removeOwnReplica removes replica id, this process's replica of shard,
// from the shard's membership: it makes the replica the leader (when it
// votes: a non-voting replica or witness cannot lead and is removed as it
// is), proposes the removal there and answers nil only once the replica
// applied it. An error means the removal may not have happened; a retry
// is safe (a replica that did leave is then refused as not a member, 404).
func (s *server) removeOwnReplica(ctx context.Context, shard, id uint64, voting bool) error {
	if s.deletions == nil { // a bare test server: no listener
		return s.nh.SyncRequestDeleteReplica(ctx, shard, id, 0)
	}
	if voting {
		// The transfer gets half the time left; the removal the rest.
		tctx := ctx
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			tctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
			defer cancel()
		}
		if err := s.leadShard(tctx, shard, id); err != nil {
			return err
		}
	}
	err := s.nh.SyncRequestDeleteReplica(ctx, shard, id, 0)
	if err == nil {
		return nil
	}
	// The request's own answer may be lost (ErrShardClosed, ErrTimeout:
	// see the top of this file); the event is the proof. ctx may be done
	// already, so the wait has its own bound.
	wctx, cancel := context.WithTimeout(context.Background(), deletedWait)
	defer cancel()
	if s.deletions.wait(wctx, shard, id) {
		s.log.Info("own replica removed; Dragonboat's answer to the request was lost", "shard", shard, "replica", id, "answer", err.Error())
		return nil
	}
	return err
}

// leadShard makes replica id, this process's replica of shard, the
// shard's leader, and returns once the local replica sees itself leading.
func (s *server) leadShard(ctx context.Context, shard, id uint64) error {
	var asked time.Time
	for {
		leader, _, ok, err := s.nh.GetLeaderID(shard)
		if err != nil {
			return fmt.Errorf("leader of shard %d: %w", shard, err)
		}
		if ok && leader == id {
			return nil
		}
		if ok && time.Since(asked) >= transferRetry {
			// Any member may ask; Dragonboat sends the request on to
			// the leader. A refusal (no leader yet, busy) is retried.
			if err := s.nh.RequestLeaderTransfer(shard, id); err == nil {
				asked = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replica %d did not become the leader of shard %d in time (it must lead to remove itself): %w", id, shard, ctx.Err())
		case <-time.After(pollInterval): // waiting for the new leader
		}
	}
}
