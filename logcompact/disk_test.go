package logcompact

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestAllocatedBytes checks that a sparse file counts its allocated blocks,
// not its apparent size, and that a hard link is counted once.
func TestAllocatedBytes(t *testing.T) {
	dir := t.TempDir()
	sparse, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sparse.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	_ = sparse.Close()
	dense := filepath.Join(dir, "sub", "dense")
	if err := os.MkdirAll(filepath.Dir(dense), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dense, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(dense, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	got, err := AllocatedBytes(dir, filepath.Join(dir, "missing"))
	if err != nil {
		t.Fatal(err)
	}
	if got < 1<<20 || got > 2<<20 {
		t.Fatalf("allocated %d bytes, want about 1 MiB (sparse 64 MiB file holds no blocks, link counted once)", got)
	}
}

// Compactors of one host share a disk figure younger than maxAge instead of
// each walking the Raft directory (one snapshot directory per shard).
func TestSharedAllocatedBytes(t *testing.T) {
	dir := t.TempDir()
	write := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{1}, 64<<10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a")
	if n, at, ok := lastSharedAllocatedBytes(dir); ok {
		t.Fatalf("a figure (%d at %v) before any measurement", n, at)
	}
	first, err := sharedAllocatedBytes(time.Hour, dir)
	if err != nil || first <= 0 {
		t.Fatalf("first: %d %v", first, err)
	}
	write("b")
	if cached, err := sharedAllocatedBytes(time.Hour, dir); err != nil || cached != first {
		t.Fatalf("within maxAge: %d %v, want the shared %d", cached, err, first)
	}
	fresh, err := sharedAllocatedBytes(0, dir)
	if err != nil || fresh <= first {
		t.Fatalf("past maxAge: %d %v, want more than %d", fresh, err, first)
	}
	if exact, err := AllocatedBytes(dir); err != nil || exact != fresh {
		t.Fatalf("AllocatedBytes %d %v, shared %d", exact, err, fresh)
	}
	// A quiet Compactor takes the latest figure without walking.
	write("c")
	if last, at, ok := lastSharedAllocatedBytes(dir); !ok || last != fresh || at.IsZero() {
		t.Fatalf("latest: %d at %v (%v), want %d", last, at, ok, fresh)
	}
}
