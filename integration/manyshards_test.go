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
	"github.com/keel-db/keel/internal/testkit/proctest"
	"github.com/keel-db/keel/internal/testkit/testcluster"
)

// This file tests many shards per NodeHost: three Hosts in one process,
// each running a replica of every shard, all tablets of a Host on one set of
// shared resources.

// manyShards is the shard count: a few hundred in CI (time), the full
// thousand with KEEL_MANY_SHARDS=1000 (and in the benchmark).
func manyShards(t *testing.T) int { return lcEnvInt(t, "KEEL_MANY_SHARDS", 200) }

type shardHosts struct {
	t      *testing.T
	dir    string
	addrs  []string
	hosts  []*host.Host
	shards int
}

func (s *shardHosts) open(i int) *host.Host {
	s.t.Helper()
	h, err := host.Open(host.Options{
		NodeHostDir: filepath.Join(s.dir, fmt.Sprint(i+1), "raft"),
		RaftAddress: s.addrs[i],
		Keel:        host.Config{RootDir: filepath.Join(s.dir, fmt.Sprint(i+1), "sm")},
	})
	if err != nil {
		s.t.Fatalf("host %d: %v", i+1, err)
	}
	return h
}

// startAll opens every Host and starts a replica of every shard on each.
// Shards restarted from their data dir get no member list.
func (s *shardHosts) startAll(fresh bool) {
	s.t.Helper()
	members := map[uint64]string{}
	for i, a := range s.addrs {
		members[uint64(i+1)] = a
	}
	s.hosts = make([]*host.Host, len(s.addrs))
	for i := range s.addrs {
		s.hosts[i] = s.open(i)
		for shard := 1; shard <= s.shards; shard++ {
			m := members
			if !fresh {
				m = nil
			}
			if err := s.hosts[i].StartReplica(m, false, host.ShardConfig(uint64(shard), uint64(i+1))); err != nil {
				s.t.Fatal(err)
			}
		}
	}
}

func (s *shardHosts) closeAll() {
	for _, h := range s.hosts {
		if h != nil {
			_ = h.Close()
		}
	}
	s.hosts = nil
}

// hashes returns each host's StateHash of shard, read locally.
func (s *shardHosts) hashes(shard uint64) ([]engine.StateHash, error) {
	out := make([]engine.StateHash, len(s.hosts))
	for i, h := range s.hosts {
		hs, err := client.NewClient(h.NodeHost(), shard).LocalHash()
		if err != nil {
			return nil, err
		}
		out[i] = hs
	}
	return out, nil
}

// waitConverged waits until every shard's replicas report one applied index
// and one hash, and returns the hashes by shard.
func (s *shardHosts) waitConverged(timeout time.Duration) map[uint64]engine.StateHash {
	s.t.Helper()
	out := map[uint64]engine.StateHash{}
	proctest.Eventually(s.t, "every shard converged", timeout, func() error {
		for shard := uint64(1); shard <= uint64(s.shards); shard++ {
			if _, ok := out[shard]; ok {
				continue
			}
			hs, err := s.hashes(shard)
			if err != nil {
				return fmt.Errorf("shard %d: %w", shard, err)
			}
			for _, h := range hs[1:] {
				if h != hs[0] {
					return fmt.Errorf("shard %d: replicas differ: %+v", shard, hs)
				}
			}
			out[shard] = hs[0]
		}
		return nil
	})
	return out
}

func TestManyShardsPerNodeHost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hundreds of Raft groups")
	}
	testcluster.Quiet()
	s := &shardHosts{t: t, dir: t.TempDir(), addrs: testcluster.FreeAddrs(t, 3), shards: manyShards(t)}
	s.startAll(true)
	t.Cleanup(s.closeAll)

	// Every shard gets writes through a client on a rotating host; the
	// client retries until a leader is elected.
	const perShard = 5
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, s.shards)
	sem := make(chan struct{}, 32)
	for shard := 1; shard <= s.shards; shard++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c := client.NewClient(s.hosts[shard%3].NodeHost(), uint64(shard))
			for k := 0; k < perShard; k++ {
				err := testcluster.Retry(ctx, func(ctx context.Context) error {
					return c.Put(ctx, []byte(fmt.Sprintf("s%d/k%d", shard, k)), []byte(fmt.Sprintf("v%d", shard*k)))
				})
				if err != nil {
					errc <- fmt.Errorf("shard %d key %d: %w", shard, k, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	before := s.waitConverged(2 * time.Minute)
	for shard, h := range before {
		if h.Keys != perShard {
			t.Fatalf("shard %d holds %d keys, want %d", shard, h.Keys, perShard)
		}
	}
	// Every replica's state machine comes from the Host's factory; its
	// open tablets are on the Host's shared resources. Idle tablets close
	// (host.Config.TabletIdleClose) down to the keep-open floor, so how
	// many are open depends on timing: at least the floor, at most all.
	floor := min(s.shards, host.DefaultTabletKeepOpen)
	for i, h := range s.hosts {
		if n := len(h.Factory().Replicas()); n != s.shards {
			t.Errorf("host %d: its factory made %d state machines, want %d", i+1, n, s.shards)
		}
		st := h.Factory().Shared().Stats()
		if st.Engines < floor || st.Engines > s.shards {
			t.Errorf("host %d: %d tablets open on its shared resources, want %d to %d", i+1, st.Engines, floor, s.shards)
		}
	}

	// Restart every host: each shard comes back to the same state.
	s.closeAll()
	s.startAll(false)
	after := s.waitConverged(2 * time.Minute)
	for shard, h := range before {
		if after[shard].Hash != h.Hash || after[shard].Keys != h.Keys {
			t.Fatalf("shard %d after restart: %+v, before %+v", shard, after[shard], h)
		}
	}
}
