package snapshot_test

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/snapshot"
)

// A stream that would leave less than the reserve free is refused before
// a byte of it is written; one that fits is received.
func TestReadStreamRefusesWhatDoesNotFit(t *testing.T) {
	r := newReplica(t, 1, 1)
	r.fill("a", 200, 100)
	b, _ := r.stream(nil)
	dir := t.TempDir()
	du, err := vfs.Default.GetDiskUsage(dir)
	if err != nil {
		t.Skipf("no disk usage here: %v", err)
	}
	// A reserve equal to the free space leaves no room for any image.
	_, err = snapshot.ReadStream(bytes.NewReader(b), vfs.Default, dir, 1, snapshot.Options{ReserveBytes: du.AvailBytes}, nil)
	if !errors.Is(err, snapshot.ErrNoSpace) {
		t.Fatalf("stream over the reserve: %v, want ErrNoSpace", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused stream wrote %d files", len(ents))
	}
	// An absurd reserve (past the free space) is refused the same way, not
	// wrapped around.
	_, err = snapshot.ReadStream(bytes.NewReader(b), vfs.Default, dir, 1, snapshot.Options{ReserveBytes: du.TotalBytes * 2}, nil)
	if !errors.Is(err, snapshot.ErrNoSpace) {
		t.Fatalf("reserve past the disk: %v, want ErrNoSpace", err)
	}
	if _, err := snapshot.ReadStream(bytes.NewReader(b), vfs.Default, dir, 1, snapshot.Options{ReserveBytes: 1 << 20}, nil); err != nil {
		t.Fatalf("a stream that fits: %v", err)
	}
}
