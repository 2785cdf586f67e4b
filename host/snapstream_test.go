package host

import (
	"testing"
	"time"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// The hold on a replica's Replicate messages lasts exactly while a stream
// for it is in flight, and never longer than its bounds: it ends when the
// last chunk is handed over, when a chunk is refused, when the stream goes
// silent for streamIdle, and when one handler call outlasts streamBusyMax.
// It never touches another shard or replica.
func TestSnapshotStreamHoldIsBounded(t *testing.T) {
	var in inboundStreams
	accept := true
	var during func()
	h := in.wrap(func(pb.Chunk) bool {
		if during != nil {
			during()
		}
		return accept
	})
	chunk := func(index, id, count uint64) pb.Chunk {
		return pb.Chunk{ShardID: 1, ReplicaID: 2, From: 3, Index: index, ChunkId: id, ChunkCount: count}
	}
	want := func(what string, shard, replica uint64, hold bool) {
		t.Helper()
		if got := in.holds(shard, replica); got != hold {
			t.Fatalf("%s: holds(%d, %d) = %v, want %v", what, shard, replica, got, hold)
		}
	}
	want("no stream", 1, 2, false)

	// A stream delivered in full.
	h(chunk(10, 0, 3))
	want("after the first chunk", 1, 2, true)
	want("another replica", 1, 3, false)
	want("another shard", 2, 2, false)
	during = func() { want("inside the last chunk's handler", 1, 2, true) }
	h(chunk(10, 1, 3))
	h(chunk(10, 2, 3))
	during = nil
	want("after the last chunk", 1, 2, false)

	// A chunk Dragonboat refuses ends the stream.
	h(chunk(11, 0, 3))
	accept = false
	h(chunk(11, 1, 3))
	accept = true
	want("after a refused chunk", 1, 2, false)
	// Its later chunks (Dragonboat closed the connection; a stale one
	// could still arrive) do not start a hold.
	h(chunk(11, 2, 3))
	want("a chunk of a forgotten stream", 1, 2, false)

	// A stream that goes silent half-way holds for streamIdle only.
	h(chunk(12, 0, 3))
	want("a live stream", 1, 2, true)
	in.mu.Lock()
	for _, s := range in.streams {
		s.last = s.last.Add(-streamIdle)
	}
	in.mu.Unlock()
	want("a stream silent for streamIdle", 1, 2, false)
	if in.n.Load() != 0 || len(in.streams) != 0 {
		t.Fatalf("a dead stream is still tracked: %d", len(in.streams))
	}

	// A handler call that never ends holds for streamBusyMax only.
	during = func() {
		want("inside a handler call", 1, 2, true)
		in.mu.Lock()
		for _, s := range in.streams {
			s.since = time.Now().Add(-streamBusyMax)
		}
		in.mu.Unlock()
		want("inside a handler call older than streamBusyMax", 1, 2, false)
	}
	h(chunk(13, 0, 3))
	during = nil
	want("after that call returned", 1, 2, false)
	if in.n.Load() != 0 {
		t.Fatalf("streams left tracked: %d", in.n.Load())
	}
}
