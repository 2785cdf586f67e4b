package host_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/proctest"
)

func openHost(t *testing.T, dir string) *host.Host {
	t.Helper()
	host.UseSlog(slog.New(slog.NewTextHandler(io.Discard, nil)), slog.LevelWarn)
	h, err := host.Open(host.Options{
		NodeHostDir: filepath.Join(dir, "raft"),
		RaftAddress: freeAddr(),
		Keel:        host.Config{RootDir: filepath.Join(dir, "sm")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func putRetry(t *testing.T, c *client.Client, k, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	proctest.Eventually(t, "a write to shard "+k, 30*time.Second, func() error {
		return c.Put(ctx, []byte(k), []byte(v))
	})
}

// RemoveReplica deletes Keel's tablet as well as Dragonboat's data, gives the
// disk back, and leaves the other shards of the host serving.
func TestRemoveReplicaDeletesTablet(t *testing.T) {
	dir := t.TempDir()
	h := openHost(t, dir)
	addr := h.NodeHost().RaftAddress()
	for shard := uint64(1); shard <= 2; shard++ {
		if err := h.StartReplica(map[uint64]string{1: addr}, false, host.ShardConfig(shard, 1)); err != nil {
			t.Fatal(err)
		}
	}
	// Random values: zeros would compress to nothing in the sstables.
	val := make([]byte, 64<<10)
	_, _ = rand.Read(val)
	for i := 0; i < 40; i++ {
		putRetry(t, client.NewClient(h.NodeHost(), 2), "k"+string(rune('a'+i%26))+string(rune('a'+i/26)), string(val))
	}
	putRetry(t, client.NewClient(h.NodeHost(), 1), "one", "1")
	// The data must be on disk for the removal to free it.
	if err := h.Factory().StateMachine(2, 1).Sync(); err != nil {
		t.Fatal(err)
	}
	tablet := h.Factory().Config().DataDir(2, 1)
	if _, err := h.Factory().RemoveTablet(2, 1); !errors.Is(err, host.ErrReplicaRunning) {
		t.Fatalf("RemoveTablet of a running replica: %v, want ErrReplicaRunning", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	freed, err := h.RemoveReplica(ctx, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if freed < 40*64<<10 {
		t.Fatalf("freed %d bytes, want at least the %d written", freed, 40*64<<10)
	}
	if _, err := os.Stat(tablet); !os.IsNotExist(err) {
		t.Fatalf("tablet %s still there: %v", tablet, err)
	}
	if h.Factory().StateMachine(2, 1) != nil {
		t.Fatal("factory still lists the removed replica")
	}
	if h.NodeHost().HasNodeInfo(2, 1) {
		t.Fatal("Dragonboat still holds replica 1 of shard 2")
	}
	v, found, err := client.NewClient(h.NodeHost(), 1).Get(ctx, []byte("one"))
	if err != nil || !found || string(v) != "1" {
		t.Fatalf("shard 1 after removing shard 2: %q %v %v", v, found, err)
	}
	t.Logf("removing a replica with %d KiB written freed %d KiB of its tablet", 40*64, freed>>10)
}

// Closing a Host closes the NodeHost before the shared resources: every
// tablet is closed by then, so Close reports no error, and a second Close
// is harmless.
func TestHostCloseOrder(t *testing.T) {
	h := openHost(t, t.TempDir())
	addr := h.NodeHost().RaftAddress()
	for shard := uint64(1); shard <= 5; shard++ {
		if err := h.StartReplica(map[uint64]string{1: addr}, false, host.ShardConfig(shard, 1)); err != nil {
			t.Fatal(err)
		}
	}
	putRetry(t, client.NewClient(h.NodeHost(), 3), "k", "v")
	if n := h.Factory().Shared().Stats().Engines; n != 5 {
		t.Fatalf("%d tablets on the shared resources, want 5", n)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
