package logcompact

import (
	"os"
	"path/filepath"
	"testing"
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
