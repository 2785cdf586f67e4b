package host

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// inboundStreams holds back Replicate messages for a replica while this
// NodeHost is receiving a snapshot stream for it, so that a leader that
// already believes the stream delivered does not start a second one.
//
// Why: Dragonboat's sender reports a stream done when its last chunk has
// left (10 ticks later its Raft node takes the remote out of the snapshot
// state: internal/raft/raft.go handleLeaderSnapshotStatus, remote.go
// becomeWait), and the leader's next heartbeat response makes it send a
// Replicate whose LogIndex is the snapshot's index. But the receiver's
// chunk handler is still writing the last chunk and fsyncing the whole
// staged stream (internal/transport/chunk.go save, finalize); only then
// does it queue the InstallSnapshot for the Raft node. A Replicate that
// reaches the Raft node before that is rejected (handleReplicateMessage:
// the log has no entry at that index) with the follower's old last index
// as the hint; the leader falls back to it (remote.go decreaseTo), finds
// it compacted and streams the whole image again (sendReplicateMessage →
// becomeSnapshot), which the receiver stages in full and then refuses.
//
// While a stream is in flight for (shard, replica), that replica's Replicate
// messages are dropped before Dragonboat sees them. Dropping a Raft message
// is always safe (the network may lose any message); the leader, with the
// remote in its wait state, resends at every heartbeat response
// (handleLeaderHeartbeatResp → sendReplicateMessage). Once the chunk
// handler has returned for the last chunk, the InstallSnapshot is in the
// node's queue, and Dragonboat's queue hands it to Raft before any message
// that arrives after it (MessageQueue.Get returns its no-drop messages
// first), so the next Replicate finds the snapshot's index in the log.
//
// The hold is bounded: a stream stops holding when its last chunk's handler
// returns, when the handler refuses a chunk (Dragonboat closes the
// connection and forgets the stream), when no chunk handler call has run
// for streamIdle (the sender died or gave up half-way), or when one call has
// run for streamBusyMax. After that the old behaviour applies: at worst one
// more stream.
//
// Only Replicate is held: heartbeats still reach the replica, so it neither
// times out its leader nor campaigns while it receives.
type inboundStreams struct {
	// n is len(streams), read without the lock on every incoming Replicate
	// so that the common case (no stream in flight) costs one atomic load.
	n atomic.Int32
	// held counts Replicate messages dropped while a stream was in flight.
	held atomic.Uint64

	// mu guards streams.
	mu      sync.Mutex
	streams map[streamKey]*inbound

	// stagers finds the state machine a stream is for, to stage its image
	// while it arrives (snaptee.go); unset (nil) means no staging.
	stagers atomic.Pointer[stagerLookup]
	// nodeHostDir is Dragonboat's, where its staging files are.
	nodeHostDir string
	// teed counts streams whose image was staged while they arrived;
	// shrunk counts the staging-file bytes that never reached the disk;
	// holeyRefused counts streams refused at their end because their
	// staging file had holes and their image was not staged (stagingfs.go).
	// notWritten counts the staging-file bytes stagingFS dropped.
	teed, teeFailed, shrunk, holeyRefused, notWritten atomic.Uint64
	// noDiscard (guarded by mu) holds the replicas, as {shard, replica},
	// whose next stream is written in full: their last holey stream was
	// refused, and the one after it must not depend on the staging again.
	noDiscard map[[2]uint64]struct{}
}

// streamKey names one stream as Dragonboat's chunk tracker does (shard,
// receiving replica, snapshot index) plus the sender.
type streamKey struct {
	shard, replica, from, index uint64
}

// inbound is one stream in flight. Its fields are guarded by
// inboundStreams.mu.
type inbound struct {
	// busy counts chunk handler calls in progress (one at a time on a
	// stream's connection).
	busy int
	// since is when the latest handler call started; last is when the latest
	// one returned.
	since, last time.Time
	// tee stages the stream's image while it arrives; nil when not staging.
	tee *tee
	// discard marks the stream's staging file for stagingFS: nil when its
	// bytes are all written.
	discard *discardMark
}

const (
	// streamIdle bounds the gap between two chunks of a live stream. A
	// sender writes chunks back to back as its state machine produces them;
	// a stream silent for this long is taken for dead.
	streamIdle = 5 * time.Second
	// streamBusyMax bounds one chunk handler call (the last one writes,
	// fsyncs and renames the whole staged stream: seconds for gigabytes).
	streamBusyMax = time.Minute
)

// live reports whether s still holds its replica's Replicate messages.
func (s *inbound) live(now time.Time) bool {
	if s.busy > 0 {
		return now.Sub(s.since) < streamBusyMax
	}
	return now.Sub(s.last) < streamIdle
}

// wrap returns next with the stream tracking around it.
func (in *inboundStreams) wrap(next raftio.ChunkHandler) raftio.ChunkHandler {
	return func(c pb.Chunk) bool { return in.chunk(next, c) }
}

// chunk passes c to next (Dragonboat's chunk tracker) and tracks its stream.
func (in *inboundStreams) chunk(next raftio.ChunkHandler, c pb.Chunk) (ok bool) {
	k := streamKey{shard: c.ShardID, replica: c.ReplicaID, from: c.From, index: c.Index}
	var stager imageStager
	if c.ChunkId == 0 {
		stager = in.stagerFor(c)
	}
	in.mu.Lock()
	s := in.streams[k]
	if s == nil && c.ChunkId == 0 {
		if in.streams == nil {
			in.streams = make(map[streamKey]*inbound)
		}
		s = &inbound{}
		in.streams[k] = s
		in.n.Store(int32(len(in.streams)))
	}
	var t *tee
	var d *discardMark
	if s != nil {
		s.busy++
		s.since = time.Now()
		if c.ChunkId == 0 {
			// A stream starting over: Dragonboat drops what it had.
			if s.tee != nil {
				s.tee.abort()
				s.tee = nil
			}
			if stager != nil {
				s.tee = startTee(stager, c) // nil when too many run
			}
			s.discard = nil
			replica := [2]uint64{c.ShardID, c.ReplicaID}
			if _, no := in.noDiscard[replica]; s.tee != nil && !no && in.nodeHostDir != "" {
				s.discard = markDiscard(in.nodeHostDir, k)
			} else {
				// Dragonboat recreates the file: write it in full.
				unmarkDiscard(k, nil)
			}
		}
		t, d = s.tee, s.discard
	}
	in.mu.Unlock()
	if s == nil {
		// A chunk of a stream whose first chunk was not seen (or that
		// timed out here): Dragonboat ignores it too. One whose staging
		// file went holey before the stream was forgotten here is refused,
		// so that the file never reaches Raft.
		if unmarkDiscard(k, nil) {
			in.refuseHoley(c)
			return false
		}
		return next(c)
	}
	var staged string
	defer func() {
		if t != nil && (!ok || c.IsLastChunk()) {
			switch {
			case staged != "" && ok:
				// Handed to Raft: the staged image waits for
				// RecoverFromSnapshot.
				in.teed.Add(1)
			case staged != "":
				// Refused at its end: Dragonboat removed its copy.
				t.st.DropStagedImage(staged)
			default:
				t.abort()
			}
		}
		if (!ok || c.IsLastChunk()) && d != nil {
			unmarkDiscard(k, d)
			in.notWritten.Add(uint64(d.droppedBytes()))
		}
		in.mu.Lock()
		defer in.mu.Unlock()
		if in.streams[k] != s {
			return
		}
		s.busy--
		s.last = time.Now()
		if !ok || c.IsLastChunk() {
			delete(in.streams, k)
			in.n.Store(int32(len(in.streams)))
		}
	}()
	if t != nil {
		t.active(true)
		t.feed(c.Data)
		if c.IsLastChunk() {
			staged = in.finishTee(t, c)
		} else {
			defer t.active(false)
		}
	}
	if c.IsLastChunk() && staged == "" && d != nil && d.isHoley() {
		// The image is not staged and Dragonboat's copy has holes: it
		// must not reach Raft.
		in.refuseHoley(c)
		return false
	}
	if staged != "" && c.IsLastChunk() {
		in.mu.Lock()
		delete(in.noDiscard, [2]uint64{c.ShardID, c.ReplicaID})
		in.mu.Unlock()
	}
	return next(c)
}

// refuseHoley counts a holey stream refused at c and writes the replica's
// next stream in full.
func (in *inboundStreams) refuseHoley(c pb.Chunk) {
	in.holeyRefused.Add(1)
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.noDiscard == nil {
		in.noDiscard = make(map[[2]uint64]struct{})
	}
	in.noDiscard[[2]uint64{c.ShardID, c.ReplicaID}] = struct{}{}
}

// stagerFor returns the state machine to stage c's stream with, or nil.
func (in *inboundStreams) stagerFor(c pb.Chunk) imageStager {
	if c.HasFileInfo || c.Witness {
		return nil
	}
	lookup := in.stagers.Load()
	if lookup == nil {
		return nil
	}
	return (*lookup)(c.ShardID, c.ReplicaID)
}

// finishTee waits for the staging of the stream whose last chunk c is and,
// when the image is staged, shrinks Dragonboat's staging file before
// Dragonboat fsyncs it. It returns the staged image's name, or "".
func (in *inboundStreams) finishTee(t *tee, c pb.Chunk) string {
	name, err := t.finish()
	if err != nil || t.failed {
		in.teeFailed.Add(1)
		return ""
	}
	if !t.commit() {
		// Aborted meanwhile (the stream outlived its bounds): the abort
		// removes the staged image, and Dragonboat's file stays whole.
		return ""
	}
	if len(c.Data) == 0 {
		// Dragonboat appends nothing more to the file, so it may be cut.
		if n, err := shrinkStaging(in.nodeHostDir, c, t.file, t.fed); err == nil {
			in.shrunk.Add(uint64(n))
		}
	}
	return name
}

// holds reports whether a Replicate for replica of shard must be dropped
// because a stream for it is in flight; it forgets streams past their
// bound.
func (in *inboundStreams) holds(shard, replica uint64) bool {
	if in.n.Load() == 0 {
		return false
	}
	now := time.Now()
	in.mu.Lock()
	defer in.mu.Unlock()
	hold := false
	for k, s := range in.streams {
		if !s.live(now) {
			if s.tee != nil {
				s.tee.abort()
			}
			if s.discard != nil && !s.discard.isHoley() {
				// A holey mark stays, so that a late chunk of the
				// stream is refused (chunk).
				unmarkDiscard(k, s.discard)
			}
			delete(in.streams, k)
			continue
		}
		if k.shard == shard && k.replica == replica {
			hold = true
		}
	}
	in.n.Store(int32(len(in.streams)))
	return hold
}
