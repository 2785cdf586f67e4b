package host

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/keel-db/keel/internal/gbsnap"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/lni/vfs"
)

func TestParseStagingPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want streamKey
		ok   bool
	}{
		{"/d/h/dep/snapshot-part-1/snapshot-3-7/snapshot-000000000000000A-2.receiving/x.gbsnap", streamKey{shard: 3, replica: 7, from: 2, index: 10}, true},
		{"/d/h/dep/snapshot-part-1/snapshot-3-7/snapshot-FFFFFFFFFFFFFFFF-12.receiving/x", streamKey{shard: 3, replica: 7, from: 12, index: 1<<64 - 1}, true},
		{"/d/h/dep/snapshot-part-1/snapshot-3-7/snapshot-000000000000000A-2/x.gbsnap", streamKey{}, false},         // not receiving
		{"/d/h/dep/snapshot-part-1/snapshot-3-7/snapshot-A-2.receiving/x.gbsnap", streamKey{}, false},              // index not 16 digits
		{"/d/h/dep/snapshot-part-1/snapshot-3/snapshot-000000000000000A-2.receiving/x.gbsnap", streamKey{}, false}, // no replica
		{"/d/h/dep/snapshot-part-1/snap-3-7/snapshot-000000000000000A-2.receiving/x.gbsnap", streamKey{}, false},
		{"x.gbsnap", streamKey{}, false},
	} {
		got, ok := parseStagingPath(tc.path)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: %+v %v, want %+v %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

// stagingPath returns the staging file of stream k under nodeHostDir, in
// Dragonboat's layout, with its dir created.
func stagingPath(t *testing.T, nodeHostDir string, k streamKey) string {
	t.Helper()
	dir := filepath.Join(nodeHostDir, "host", "dep", "snapshot-part-1",
		"snapshot-"+itoa(k.shard)+"-"+itoa(k.replica),
		"snapshot-"+hex16(k.index)+"-"+itoa(k.from)+".receiving")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "snapshot-"+hex16(k.index)+".gbsnap")
}

func itoa(v uint64) string  { return string(bytesOf(v, 10, 0)) }
func hex16(v uint64) string { return string(bytesOf(v, 16, 16)) }

func bytesOf(v uint64, base, width int) []byte {
	const digits = "0123456789ABCDEF"
	var b []byte
	for v > 0 || len(b) == 0 {
		b = append([]byte{digits[v%uint64(base)]}, b...)
		v /= uint64(base)
	}
	for len(b) < width {
		b = append([]byte{'0'}, b...)
	}
	return b
}

// allocated returns the bytes the filesystem allocated for path.
func allocated(t *testing.T, path string) (size, alloc int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size(), fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// A marked stream's staging file keeps its first ReceivedKeep bytes and
// its size; the rest is a hole. An unmarked one is written in full.
func TestStagingFSDropsMarkedBytes(t *testing.T) {
	nh := t.TempDir()
	k := streamKey{shard: 1, replica: 2, from: 1, index: 10}
	path := stagingPath(t, nh, k)
	fs := &stagingFS{vfs.Default}
	chunk := bytes.Repeat([]byte{0x5A}, 2<<20)
	write := func() {
		for i := 0; i < 4; i++ {
			var f vfs.File
			var err error
			if i == 0 {
				f, err = fs.Create(path)
			} else {
				f, err = fs.OpenForAppend(path)
			}
			if err != nil {
				t.Fatal(err)
			}
			if n, err := f.Write(chunk); err != nil || n != len(chunk) {
				t.Fatalf("write %d: %d, %v", i, n, err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	d := markDiscard(nh, k)
	write()
	size, alloc := allocated(t, path)
	if size != 4*int64(len(chunk)) || alloc > gbsnap.ReceivedKeep+1<<20 || !d.isHoley() || d.droppedBytes() != size-gbsnap.ReceivedKeep {
		t.Fatalf("marked: size %d, allocated %d, holey %v, dropped %d", size, alloc, d.isHoley(), d.droppedBytes())
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:gbsnap.ReceivedKeep], bytes.Repeat([]byte{0x5A}, gbsnap.ReceivedKeep)) {
		t.Fatal("the kept bytes are not the stream's")
	}
	if !unmarkDiscard(k, d) {
		t.Fatal("unmark does not report the holes")
	}

	// Unmarked, and a mark under another NodeHost's dir: written in full.
	markDiscard(t.TempDir(), k)
	defer unmarkDiscard(k, nil)
	write()
	if size, alloc := allocated(t, path); size != 4*int64(len(chunk)) || alloc < size {
		t.Fatalf("unmarked: size %d, allocated %d", size, alloc)
	}
}

// A holey stream whose image is not staged never reaches Dragonboat's
// handler with its last chunk; the replica's next stream is written in
// full and takes Dragonboat's ordinary path.
func TestHoleyStreamIsRefusedAtItsEnd(t *testing.T) {
	s, dir := openStager(t)
	nh := t.TempDir()
	in := inboundStreams{nodeHostDir: nh}
	lookup := stagerLookup(func(shard, replica uint64) imageStager { return s })
	in.stagers.Store(&lookup)
	k := streamKey{shard: 1, replica: 2, from: 1, index: 10}
	path := stagingPath(t, nh, k)
	fs := &stagingFS{vfs.Default}
	var lastSeen int
	// Dragonboat's chunk handler, as far as the file goes (chunk.go save).
	h := in.wrap(func(c pb.Chunk) bool {
		var f vfs.File
		var err error
		if c.ChunkId == 0 {
			f, err = fs.Create(path)
		} else {
			f, err = fs.OpenForAppend(path)
		}
		if err != nil {
			t.Error(err)
			return false
		}
		defer func() { _ = f.Close() }()
		if _, err := f.Write(c.Data); err != nil {
			t.Error(err)
			return false
		}
		if c.IsLastChunk() {
			lastSeen++
		}
		return true
	})
	// Not Dragonboat's format, so the staging fails.
	garbage := bytes.Repeat([]byte{0xA5}, 3<<20)
	stream := func() bool {
		for id := uint64(0); id < 3; id++ {
			if !h(pb.Chunk{ShardID: 1, ReplicaID: 2, From: 1, Index: 10, ChunkId: id, Data: garbage, Filepath: filepath.Base(path)}) {
				t.Fatalf("chunk %d refused", id)
			}
		}
		return h(pb.Chunk{ShardID: 1, ReplicaID: 2, From: 1, Index: 10, ChunkId: 3, ChunkCount: pb.LastChunkCount, Filepath: filepath.Base(path)})
	}
	if stream() || lastSeen != 0 {
		t.Fatalf("a holey stream whose staging failed was handed on (last chunk seen %d times)", lastSeen)
	}
	teesIdle(t)
	if in.holeyRefused.Load() != 1 || in.notWritten.Load() == 0 {
		t.Fatalf("refused %d, not written %d", in.holeyRefused.Load(), in.notWritten.Load())
	}
	if !stream() || lastSeen != 1 {
		t.Fatalf("the next stream was refused too (last chunk seen %d times)", lastSeen)
	}
	teesIdle(t)
	if size, alloc := allocated(t, path); size != 9<<20 || alloc < size {
		t.Fatalf("the next stream's file: size %d, allocated %d; want it written in full", size, alloc)
	}
	if l := stagedLeft(t, dir); len(l) != 0 {
		t.Fatalf("staged dirs left: %v", l)
	}
	discardMarks.mu.Lock()
	left := discardMarks.m[k]
	discardMarks.mu.Unlock()
	if left != nil {
		t.Fatalf("the stream's mark is left: %+v", left)
	}
}
