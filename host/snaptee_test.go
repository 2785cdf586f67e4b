package host

import (
	"bytes"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/sm"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// openStager opens a real state machine to stage into.
func openStager(t *testing.T) (*sm.StateMachine, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sm")
	s := sm.New(sm.Config{Dir: dir, ShardID: 1, ReplicaID: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if _, err := s.Open(make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, dir
}

// teesIdle waits until no tee holds a slot: every staging goroutine and
// pump has ended.
func teesIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(teeSlots) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d tees still running", len(teeSlots))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func stagedLeft(t *testing.T, dir string) []engine.Staged {
	t.Helper()
	l, err := engine.NewRoot(dir, nil).ListStaged()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A stream the tee cannot decode, or one Dragonboat refuses half-way,
// still reaches Dragonboat's handler chunk by chunk, as without the tee;
// the tee stages nothing, cuts no file, leaves no staged dir and gives its
// slot back.
func TestTeeFailuresLeaveDragonboatsPath(t *testing.T) {
	s, dir := openStager(t)
	var in inboundStreams
	lookup := stagerLookup(func(shard, replica uint64) imageStager {
		if shard == 1 && replica == 2 {
			return s
		}
		return nil
	})
	in.stagers.Store(&lookup)
	var seen int
	refuseAt := -1
	h := in.wrap(func(c pb.Chunk) bool {
		seen++
		return int(c.ChunkId) != refuseAt
	})
	chunk := func(id uint64, last bool, data []byte) pb.Chunk {
		c := pb.Chunk{ShardID: 1, ReplicaID: 2, From: 1, Index: 10, ChunkId: id, Data: data, Filepath: "snapshot-000000000000000A.gbsnap"}
		if last {
			c.ChunkCount = pb.LastChunkCount
		}
		return c
	}
	garbage := bytes.Repeat([]byte{0xA5}, 3<<20)

	// Not Dragonboat's format: every chunk is passed on, nothing staged.
	for id := uint64(0); id < 3; id++ {
		if !h(chunk(id, false, garbage)) {
			t.Fatalf("chunk %d refused", id)
		}
	}
	if !h(chunk(3, true, nil)) {
		t.Fatal("last chunk refused")
	}
	teesIdle(t)
	if seen != 4 || in.teeFailed.Load() != 1 || in.teed.Load() != 0 || in.shrunk.Load() != 0 {
		t.Fatalf("seen %d, failed %d, teed %d, shrunk %d", seen, in.teeFailed.Load(), in.teed.Load(), in.shrunk.Load())
	}

	// Refused by Dragonboat at chunk 1: the tee is aborted.
	refuseAt = 1
	h(chunk(0, false, garbage))
	if h(chunk(1, false, garbage)) {
		t.Fatal("want chunk 1 refused")
	}
	teesIdle(t)
	if l := stagedLeft(t, dir); len(l) != 0 {
		t.Fatalf("staged dirs left: %v", l)
	}
	if st := s.SnapshotStats(); st.Staged != 0 {
		t.Fatalf("staged %d", st.Staged)
	}
}

// No more than maxTees streams are staged at once; the others pass as
// without the tee.
func TestTeeSlotsBounded(t *testing.T) {
	s, _ := openStager(t)
	var in inboundStreams
	lookup := stagerLookup(func(uint64, uint64) imageStager { return s })
	in.stagers.Store(&lookup)
	h := in.wrap(func(pb.Chunk) bool { return true })
	for i := 0; i < maxTees+3; i++ {
		h(pb.Chunk{ShardID: 1, ReplicaID: 2, From: uint64(i + 1), Index: 10, ChunkId: 0, Data: []byte("x")})
	}
	in.mu.Lock()
	var tees int
	for _, st := range in.streams {
		if st.tee != nil {
			tees++
		}
	}
	in.mu.Unlock()
	if tees != maxTees || len(in.streams) != maxTees+3 {
		t.Fatalf("%d streams, %d staged; want %d staged", len(in.streams), tees, maxTees)
	}
	// Cut them all off: their tees end and give the slots back.
	in.mu.Lock()
	for _, st := range in.streams {
		if st.tee != nil {
			st.tee.abort()
		}
	}
	in.mu.Unlock()
	teesIdle(t)
}
