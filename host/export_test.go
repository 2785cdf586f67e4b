package host_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4/config"
)

// TestImportRefusesDamagedExport: tools.ImportSnapshot panics on a damaged
// header or metadata and copies a .gbsnap whose data bytes are damaged
// without noticing. host.Import must verify first: a damaged export is
// an ErrBadSnapshot, never a panic, and the target replica's directories
// are left exactly as they were. The undamaged export then imports.
func TestImportRefusesDamagedExport(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Leader()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 200; i++ {
		if err := n.Client.Put(ctx, []byte(fmt.Sprintf("k%04d", i)), []byte(strings.Repeat("v", 100))); err != nil {
			t.Fatal(err)
		}
	}
	_, exp, err := host.Export(ctx, n.NH, c.ShardID, filepath.Join(t.TempDir(), "export"))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	nhc := config.NodeHostConfig{
		NodeHostDir:    filepath.Join(n.Dir, "raft"),
		RTTMillisecond: 5,
		RaftAddress:    n.Addr,
		Expert:         config.ExpertConfig{LogDB: host.LogDBConfig()},
	}
	members := map[uint64]string{n.ReplicaID: n.Addr}
	gbsnapOf := func(dir string) string {
		m, _ := filepath.Glob(filepath.Join(dir, "*.gbsnap"))
		if len(m) != 1 {
			t.Fatalf("want one .gbsnap in %s, got %v", dir, m)
		}
		return m[0]
	}
	edit := func(path string, f func([]byte) []byte) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, f(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]func(dir string){
		"truncated gbsnap": func(dir string) { edit(gbsnapOf(dir), func(b []byte) []byte { return b[:len(b)/2] }) },
		"gbsnap header bit flipped": func(dir string) {
			edit(gbsnapOf(dir), func(b []byte) []byte { b[20] ^= 0x04; return b })
		},
		// Dragonboat's own completeness check sums the block checksums
		// only, so a flipped data bit gets through it.
		"gbsnap data bit flipped": func(dir string) {
			edit(gbsnapOf(dir), func(b []byte) []byte { b[1024+len(b[1024:])/2] ^= 0x10; return b })
		},
		"garbage metadata": func(dir string) {
			edit(filepath.Join(dir, "snapshot.metadata"), func([]byte) []byte { return []byte("this is not snapshot metadata") })
		},
		"metadata missing": func(dir string) {
			if err := os.Remove(filepath.Join(dir, "snapshot.metadata")); err != nil {
				t.Fatal(err)
			}
		},
	}
	before := testutil.Tree(t, n.Dir)
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), filepath.Base(exp))
			if err := os.CopyFS(dir, os.DirFS(exp)); err != nil {
				t.Fatal(err)
			}
			damage(dir)
			err := importNoPanic(t, nhc, dir, members, n.ReplicaID)
			if !errors.Is(err, host.ErrBadSnapshot) {
				t.Fatalf("Import of a damaged export: got %v, want ErrBadSnapshot", err)
			}
			t.Logf("refused: %v", err)
			if after := testutil.Tree(t, n.Dir); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Fatalf("a refused import changed the replica's directories:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	if err := importNoPanic(t, nhc, exp, members, n.ReplicaID); err != nil {
		t.Fatalf("Import of the undamaged export: %v", err)
	}
	if after := testutil.Tree(t, n.Dir); strings.Join(after, "\n") == strings.Join(before, "\n") {
		t.Fatalf("the undamaged import changed nothing")
	}
}

func importNoPanic(t *testing.T, nhc config.NodeHostConfig, dir string, members map[uint64]string, id uint64) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Import panicked: %v", r)
		}
	}()
	return host.Import(nhc, dir, members, id)
}
