//go:build keelfixture

package engine

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGenerateWALFixture writes engine/testdata/wal-v1.tar.gz: a replica
// root written by Keel while it still ran Pebble with a WAL (commit
// 51cad07 and earlier), closed without flushing its memtable, so most of
// its batches exist only in the WAL. It was run once at that commit:
//
//	go test -tags keelfixture -run TestGenerateWALFixture ./engine/
//
// Running it on a later Keel would not reproduce a WAL-era directory.
func TestGenerateWALFixture(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "replica")
	e, err := OpenRoot(root, Options{Logger: quietLogger()})
	must(t, err)
	must(t, e.SetIdentity(Identity{ShardID: 7, ReplicaID: 3}))
	r := rand.New(rand.NewPCG(2026, 12))
	for i := 1; i <= 200; i++ {
		commitNumbered(t, e, i, r)
		switch i {
		case 80:
			must(t, e.DB().Flush()) // some batches in an sstable
		case 120:
			must(t, e.Sync()) // 121..200 only in the WAL, never synced
		}
	}
	v, err := e.NewView()
	must(t, err)
	h, err := v.Hash(nil)
	must(t, err)
	must(t, v.Close())
	must(t, e.Close())
	js, err := json.MarshalIndent(h, "", "  ")
	must(t, err)
	must(t, os.WriteFile("testdata/wal-v1.json", append(js, '\n'), 0o644))
	abs, err := filepath.Abs("testdata/wal-v1.tar.gz")
	must(t, err)
	out, err := exec.Command("tar", "-C", dir, "--sort=name", "--owner=0", "--group=0", "--mtime=2026-12-01", "-czf", abs, "replica").CombinedOutput()
	if err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
}
