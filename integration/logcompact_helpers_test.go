package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/logcompact"
)

// lcEnvInt reads a positive integer from the environment, or def.
func lcEnvInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// lcListDir logs the files under dir with their allocated sizes.
func lcListDir(t *testing.T, dir string) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, _ := logcompact.AllocatedBytes(path)
		fi, _ := d.Info()
		if fi != nil {
			t.Logf("  %10d allocated %10d apparent  %s", b, fi.Size(), path[len(dir):])
		}
		return nil
	})
}

// lcRaftDir is where testcluster puts a node's NodeHostDir.
func lcRaftDir(n *testcluster.Node) string { return filepath.Join(n.Dir, "raft") }

// lcStartCompactors runs a logcompact.Compactor on every running replica
// until the test ends (stopped before the cluster closes: cleanups run in
// reverse order).
func lcStartCompactors(t *testing.T, c *testcluster.Cluster, p logcompact.Policy, interval time.Duration) map[uint64]*logcompact.Compactor {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	out := map[uint64]*logcompact.Compactor{}
	for _, n := range c.Running() {
		comp, err := logcompact.New(logcompact.Config{
			NodeHost: n.NH, ShardID: c.ShardID, ReplicaID: n.ReplicaID,
			Policy: p, Dirs: []string{lcRaftDir(n)}, Interval: interval,
		})
		if err != nil {
			t.Fatal(err)
		}
		out[n.ReplicaID] = comp
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = comp.Run(ctx)
		}()
	}
	return out
}

// lcLoad proposes total puts through client from workers goroutines, keys
// <prefix><seq>, values of valueSize bytes starting with the prefix. It returns the number of
// acknowledged writes; on error it stops and reports the first one.
func lcLoad(ctx context.Context, cl *client.Client, prefix string, total, workers, valueSize int, acked func(key []byte)) (int64, error) {
	var next, done atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	val := make([]byte, valueSize)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	copy(val, prefix)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(total) || ctx.Err() != nil {
					return
				}
				key := []byte(fmt.Sprintf("%s%09d", prefix, i))
				err := testcluster.Retry(ctx, func(ctx context.Context) error {
					return cl.Put(ctx, key, val)
				})
				if err != nil {
					once.Do(func() { first = fmt.Errorf("put %s: %w", key, err) })
					return
				}
				if acked != nil {
					acked(key)
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return done.Load(), first
}
