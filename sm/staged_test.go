package sm

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/snapshot"
)

// streamOf returns a snapshot stream of src at its applied index.
func streamOf(t *testing.T, src *StateMachine) []byte {
	t.Helper()
	ctx, err := src.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := src.SaveSnapshot(ctx, &buf, make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func stagedDirs(t *testing.T, dir string) []engine.Staged {
	t.Helper()
	l, err := engine.NewRoot(dir, nil).ListStaged()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A replica that staged an image while its stream arrived and then died
// before Raft asked for it (the window in which Dragonboat's own copy of
// the stream is already cut short, host/snaptee.go) keeps the staged image
// across the restart, and RecoverFromSnapshot publishes it having read
// only the stream's header: the rest of the reader is garbage here, as the
// cut staging file would be.
func TestStagedImageSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	src, _ := openSM(t, filepath.Join(dir, "src"), 1, 1)
	update(t, src, entries(1, put(t, "a", "1"), put(t, "b", "2"), put(t, "c", "3")))
	stream := streamOf(t, src)
	want := hashOf(t, src)

	dstDir := filepath.Join(dir, "dst")
	dst := New(Config{Dir: dstDir, ShardID: 1, ReplicaID: 2})
	if _, err := dst.Open(make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	name, index, err := dst.StageImage(bytes.NewReader(stream), make(chan struct{}))
	if err != nil {
		t.Fatal(err)
	}
	if index != 3 || len(stagedDirs(t, dstDir)) != 1 {
		t.Fatalf("staged %s at %d, dirs %v", name, index, stagedDirs(t, dstDir))
	}
	must(t, dst.Close())

	// The restart: Open must keep the staged image (its index is above
	// the applied index, 0).
	dst = New(Config{Dir: dstDir, ShardID: 1, ReplicaID: 2})
	t.Cleanup(func() { _ = dst.Close() })
	applied, err := dst.Open(make(chan struct{}))
	if err != nil {
		t.Fatal(err)
	}
	if applied != 0 || len(stagedDirs(t, dstDir)) != 1 {
		t.Fatalf("after restart applied %d, staged %v", applied, stagedDirs(t, dstDir))
	}
	garbage := io.MultiReader(bytes.NewReader(stream[:snapshot.HeaderSize]), strings.NewReader(strings.Repeat("x", 4096)))
	if err := dst.RecoverFromSnapshot(garbage, make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	st := dst.SnapshotStats()
	if st.Adopted != 1 || st.Received != 1 || dst.AppliedIndex() != 3 {
		t.Fatalf("stats %+v, applied %d", st, dst.AppliedIndex())
	}
	if got := hashOf(t, dst); got != want {
		t.Fatalf("adopted image hash %+v, want %+v", got, want)
	}
	if l := stagedDirs(t, dstDir); len(l) != 0 {
		t.Fatalf("staged dirs left after the adoption: %v", l)
	}
}

// Without a staged image for the header, RecoverFromSnapshot installs from
// the stream as before; an image staged from another header (another
// sender, another index) is not taken for it.
func TestRecoverIgnoresOtherStagedImages(t *testing.T) {
	dir := t.TempDir()
	src, _ := openSM(t, filepath.Join(dir, "src"), 1, 1)
	update(t, src, entries(1, put(t, "a", "1")))
	older := streamOf(t, src)
	update(t, src, entries(2, put(t, "b", "2")))
	newer := streamOf(t, src)

	dst, _ := openSM(t, filepath.Join(dir, "dst"), 1, 2)
	if _, _, err := dst.StageImage(bytes.NewReader(older), make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if err := dst.RecoverFromSnapshot(bytes.NewReader(newer), make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if st := dst.SnapshotStats(); st.Adopted != 0 || dst.AppliedIndex() != 2 {
		t.Fatalf("stats %+v, applied %d", st, dst.AppliedIndex())
	}
	if got, want := hashOf(t, dst), hashOf(t, src); got != want {
		t.Fatalf("hash %+v, want %+v", got, want)
	}
	// The install pruned the image staged for index 1, below the new
	// applied index.
	if l := stagedDirs(t, filepath.Join(dir, "dst")); len(l) != 0 {
		t.Fatalf("staged dirs left: %v", l)
	}
}

// Open prunes staged dirs at or below the applied index and unfinished
// ones (a staging cut off by a crash), and keeps those above.
func TestOpenPrunesStagedImages(t *testing.T) {
	dir := t.TempDir()
	src, _ := openSM(t, filepath.Join(dir, "src"), 1, 1)
	update(t, src, entries(1, put(t, "a", "1"), put(t, "b", "2")))
	s2 := streamOf(t, src)
	update(t, src, entries(3, put(t, "c", "3")))
	s3 := streamOf(t, src)

	dstDir := filepath.Join(dir, "dst")
	dst := New(Config{Dir: dstDir, ShardID: 1, ReplicaID: 2})
	if _, err := dst.Open(make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	// Applied index 2 by an ordinary install; then a staged image for 3
	// (kept), one for 2 (pruned) and an unfinished one (pruned).
	if err := dst.RecoverFromSnapshot(bytes.NewReader(s2), make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	keep, _, err := dst.StageImage(bytes.NewReader(s3), make(chan struct{}))
	must(t, err)
	if _, _, err := dst.StageImage(bytes.NewReader(s2), make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	root := engine.NewRoot(dstDir, nil)
	if _, err := root.StageDir(engine.NewStagedName(9)); err != nil {
		t.Fatal(err)
	}
	if l := stagedDirs(t, dstDir); len(l) != 3 {
		t.Fatalf("staged dirs before the restart: %v", l)
	}
	must(t, dst.Close())
	dst = New(Config{Dir: dstDir, ShardID: 1, ReplicaID: 2})
	t.Cleanup(func() { _ = dst.Close() })
	if applied, err := dst.Open(make(chan struct{})); err != nil || applied != 2 {
		t.Fatalf("open: applied %d, %v", applied, err)
	}
	l := stagedDirs(t, dstDir)
	if len(l) != 1 || l[0].Name != keep {
		t.Fatalf("staged dirs after Open: %v, want only %s", l, keep)
	}
}

// A hostile or damaged stream stages nothing and leaves nothing behind;
// the live image is untouched.
func TestStageImageRefusesBadStreams(t *testing.T) {
	dir := t.TempDir()
	src, _ := openSM(t, filepath.Join(dir, "src"), 1, 1)
	update(t, src, entries(1, put(t, "a", "1")))
	good := streamOf(t, src)
	other, _ := openSM(t, filepath.Join(dir, "other"), 7, 1)
	update(t, other, entries(1, put(t, "z", "9")))
	foreign := streamOf(t, other)

	dstDir := filepath.Join(dir, "dst")
	dst, _ := openSM(t, dstDir, 1, 2)
	update(t, dst, entries(1, put(t, "mine", "1")))
	before := hashOf(t, dst)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0xff
	for name, s := range map[string][]byte{
		"foreign shard": foreign,
		"flipped":       flipped,
		"cut":           good[:len(good)-1],
		"header only":   good[:snapshot.HeaderSize],
	} {
		_, _, err := dst.StageImage(bytes.NewReader(s), make(chan struct{}))
		if err == nil {
			t.Fatalf("%s: staged", name)
		}
		if !errors.Is(err, snapshot.ErrCorrupt) && !errors.Is(err, snapshot.ErrWrongShard) {
			t.Fatalf("%s: %v, want ErrCorrupt or ErrWrongShard", name, err)
		}
		if l := stagedDirs(t, dstDir); len(l) != 0 {
			t.Fatalf("%s: left %v", name, l)
		}
	}
	if st := dst.SnapshotStats(); st.StageFailed != 4 || st.Staged != 0 {
		t.Fatalf("stats %+v", st)
	}
	if got := hashOf(t, dst); got != before {
		t.Fatalf("live image changed: %+v, was %+v", got, before)
	}
}

// A staged image whose snapshot Raft never asks for (the replica caught
// up by log entries past its index) is pruned once Update passes it, not
// left on disk until the next Open or install.
func TestUpdatePastStagedImagePrunesIt(t *testing.T) {
	dir := t.TempDir()
	src, _ := openSM(t, filepath.Join(dir, "src"), 1, 1)
	update(t, src, entries(1, put(t, "a", "1"), put(t, "b", "2")))
	stream := streamOf(t, src)

	dstDir := filepath.Join(dir, "dst")
	dst, _ := openSM(t, dstDir, 1, 2)
	if _, _, err := dst.StageImage(bytes.NewReader(stream), make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	update(t, dst, entries(1, put(t, "a", "1")))
	if l := stagedDirs(t, dstDir); len(l) != 1 {
		t.Fatalf("pruned before the applied index reached it: %v", l)
	}
	update(t, dst, entries(2, put(t, "b", "2")))
	deadline := time.Now().Add(10 * time.Second)
	for len(stagedDirs(t, dstDir)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("staged image at index 2 still there at applied index %d: %v", dst.AppliedIndex(), stagedDirs(t, dstDir))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
