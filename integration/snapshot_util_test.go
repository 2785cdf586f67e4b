package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
)

// ssLoad writes total keys prefix%08d with values of valueSize bytes, 100
// keys per transaction, from workers goroutines.
func ssLoad(t *testing.T, cl *client.Client, prefix string, total, workers, valueSize int) {
	t.Helper()
	const perTxn = 100
	jobs := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			val := make([]byte, valueSize)
			for start := range jobs {
				var ops []client.TxnOp
				for i := start; i < start+perTxn && i < total; i++ {
					copy(val, fmt.Sprintf("%s%08d", prefix, i))
					ops = append(ops, client.PutOp([]byte(fmt.Sprintf("%s%08d", prefix, i)), append([]byte(nil), val...)))
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				err := testcluster.Retry(ctx, func(ctx context.Context) error {
					_, err := cl.Txn(ctx, nil, ops)
					return err
				})
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for start := 0; start < total; start += perTxn {
		select {
		case jobs <- start:
		case err := <-errs:
			close(jobs)
			wg.Wait()
			t.Fatalf("load %s: %v", prefix, err)
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("load %s: %v", prefix, err)
	default:
	}
}

func ssPut(t *testing.T, cl *client.Client, k, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		return cl.Put(ctx, []byte(k), []byte(v))
	}); err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
}

// ssConverged waits until every node in nodes reports the same applied
// index and StateHash, and returns it.
func ssConverged(t *testing.T, c interface {
	WaitFor(time.Duration, string, func() bool)
}, nodes []*client.Client, timeout time.Duration) engine.StateHash {
	t.Helper()
	var last []engine.StateHash
	var got engine.StateHash
	c.WaitFor(timeout, "replicas to converge", func() bool {
		last = last[:0]
		for _, n := range nodes {
			h, err := n.LocalHash()
			if err != nil {
				return false
			}
			last = append(last, h)
		}
		for _, h := range last[1:] {
			if h != last[0] {
				return false
			}
		}
		got = last[0]
		return true
	})
	return got
}

// ssWaitFor polls cond every 10ms until it holds, failing after timeout.
type ssWaiter struct{ t *testing.T }

func (w ssWaiter) WaitFor(timeout time.Duration, what string, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ssNode is a NodeHost started outside testcluster (for imports, which must
// run before the NodeHost exists).
type ssNode struct {
	id      uint64
	nh      *dragonboat.NodeHost
	factory *host.Factory
	client  *client.Client
}

func ssNodeHostConfig(dir, addr string) config.NodeHostConfig {
	return config.NodeHostConfig{
		NodeHostDir:    filepath.Join(dir, "raft"),
		RTTMillisecond: 5,
		RaftAddress:    addr,
		Expert:         config.ExpertConfig{LogDB: host.LogDBConfig()},
	}
}

// ssStartImported starts replica id after host.Import into dir.
func ssStartImported(t *testing.T, dir string, shard, id uint64, members map[uint64]string) *ssNode {
	t.Helper()
	nh, err := dragonboat.NewNodeHost(ssNodeHostConfig(dir, members[id]))
	if err != nil {
		t.Fatalf("replica %d: NodeHost: %v", id, err)
	}
	t.Cleanup(nh.Close)
	f, err := host.NewFactory(host.Config{RootDir: filepath.Join(dir, "sm")})
	if err != nil {
		t.Fatal(err)
	}
	// An imported replica restarts like a rebooted one: its membership
	// comes from the imported snapshot, so the initial members are empty.
	if err := nh.StartOnDiskReplica(nil, false, f.Create, host.ShardConfig(shard, id)); err != nil {
		t.Fatalf("replica %d: start: %v", id, err)
	}
	return &ssNode{id: id, nh: nh, factory: f, client: client.NewClient(nh, shard)}
}

func ssStats(f *host.Factory, shard, id uint64) sm.SnapshotStats {
	if s := f.StateMachine(shard, id); s != nil {
		return s.SnapshotStats()
	}
	return sm.SnapshotStats{}
}
