package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
)

// ssLoad writes total keys prefix%08d with values of valueSize bytes, 100
// keys per transaction, from workers goroutines.
func ssLoad(t *testing.T, cl *client.Client, prefix string, total, workers, valueSize int) {
	t.Helper()
	const perTxn = 100
	txnLoad(t, cl, "load "+prefix, (total+perTxn-1)/perTxn, workers, func(_ *rand.Rand, j int) []client.TxnOp {
		var ops []client.TxnOp
		for i := j * perTxn; i < (j+1)*perTxn && i < total; i++ {
			val := make([]byte, valueSize)
			copy(val, fmt.Sprintf("%s%08d", prefix, i))
			ops = append(ops, client.PutOp([]byte(fmt.Sprintf("%s%08d", prefix, i)), val))
		}
		return ops
	})
}

// txnLoad proposes txns transactions, build(rng, j) making the j-th (each
// worker has its own seeded rng), from workers goroutines, retrying each
// until its deadline; the first error fails the test.
func txnLoad(t *testing.T, cl *client.Client, what string, txns, workers int, build func(rng *rand.Rand, j int) []client.TxnOp) {
	t.Helper()
	jobs := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 0))
			for j := range jobs {
				ops := build(rng, j)
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
		}(uint64(w) + 1)
	}
	for j := 0; j < txns; j++ {
		select {
		case jobs <- j:
		case err := <-errs:
			close(jobs)
			wg.Wait()
			t.Fatalf("%s: %v", what, err)
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("%s: %v", what, err)
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
// index and StateHash, and returns it; on timeout it says where they
// differ.
func ssConverged(t *testing.T, nodes []*client.Client, timeout time.Duration) engine.StateHash {
	t.Helper()
	var got engine.StateHash
	testutil.Eventually(t, timeout, func() error {
		var last []engine.StateHash
		for i, n := range nodes {
			h, err := n.LocalHash()
			if err != nil {
				return fmt.Errorf("node %d: %w", i, err)
			}
			last = append(last, h)
		}
		for i, h := range last[1:] {
			if h != last[0] {
				return fmt.Errorf("replicas not converged: node 0 at %+v, node %d at %+v", last[0], i+1, h)
			}
		}
		got = last[0]
		return nil
	})
	return got
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
