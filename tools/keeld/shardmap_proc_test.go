package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/keel-db/keel/internal/testkit/proctest"
)

// shardSummary is one shard's line in /status, for comparing replicas.
type shardSummary struct {
	ShardID      uint64 `json:"shard_id"`
	LeaderID     uint64 `json:"leader_id"`
	AppliedIndex uint64 `json:"applied_index"`
	Keys         uint64 `json:"keys"`
}

func shardLines(n *node) (map[uint64]shardSummary, error) {
	var st struct {
		Shards []shardSummary `json:"shards"`
	}
	if err := proctest.GetJSON(httpc, n.url("/status"), &st); err != nil {
		return nil, err
	}
	out := map[uint64]shardSummary{}
	for _, s := range st.Shards {
		out[s.ShardID] = s
	}
	return out, nil
}

// TestShardMapCluster: six processes, twelve shards, each shard on three of
// the six (a shard map). Every process answers for every key (forwarding
// what it does not host); with one process SIGKILLed every shard still
// serves; restarted, its shards catch up to the same applied index and
// keys as their other replicas.
func TestShardMapCluster(t *testing.T) {
	const hosts, shards = 6, 12
	dir := t.TempDir()
	nodes := make([]*node, hosts)
	type mh struct {
		ID       uint64 `json:"id"`
		RaftAddr string `json:"raft_addr"`
		HTTPAddr string `json:"http_addr"`
	}
	type ms struct {
		ID    uint64   `json:"id"`
		Hosts []uint64 `json:"hosts"`
	}
	var m struct {
		Hosts  []mh `json:"hosts"`
		Shards []ms `json:"shards"`
	}
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("host-%d", i+1), filepath.Join(dir, fmt.Sprint("h", i+1)))
		m.Hosts = append(m.Hosts, mh{uint64(i + 1), nodes[i].raftAddr, nodes[i].httpAddr})
	}
	placed := map[uint64][]uint64{} // host -> shards
	for s := 1; s <= shards; s++ {
		h := []uint64{uint64((s-1)%hosts + 1), uint64(s%hosts + 1), uint64((s+1)%hosts + 1)}
		m.Shards = append(m.Shards, ms{uint64(s), h})
		for _, id := range h {
			placed[id] = append(placed[id], uint64(s))
		}
	}
	mapFile := filepath.Join(dir, "map.json")
	b, _ := json.Marshal(m)
	if err := os.WriteFile(mapFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		n.extra = []string{"--shard-map", mapFile, "--log-keep-entries", "200"}
		n.start()
	}
	for i, n := range nodes {
		waitShardsReady(t, n, len(placed[uint64(i+1)]))
	}

	const total = 1200
	key := func(i int) string { return fmt.Sprintf("m-%05d", i) }
	for i := 0; i < total; i++ {
		if err := putRetry(nodes[i%hosts], key(i), "v1"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < total; i += 37 {
		for _, n := range nodes {
			if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/"+key(i)), nil); string(got) != "v1" {
				t.Fatalf("GET %s via %s = %q", key(i), n.name, got)
			}
		}
	}
	if got := scanAll(t, nodes[4], 250); len(got) != total {
		t.Fatalf("scan via %s: %d keys, want %d", nodes[4].name, len(got), total)
	}

	// Kill one process: its shards keep a quorum elsewhere.
	victim := nodes[0]
	victim.kill()
	for i := 0; i < total; i++ {
		if err := putRetry(nodes[1+i%(hosts-1)], key(i), "v2"); err != nil {
			t.Fatal(err)
		}
	}
	victim.start()
	waitShardsReady(t, victim, len(placed[1]))
	proctest.Eventually(t, "the restarted host's shards caught up", readyTimeout, func() error {
		mine, err := shardLines(victim)
		if err != nil {
			return err
		}
		for _, shard := range placed[1] {
			for _, other := range m.Shards[shard-1].Hosts {
				if other == 1 {
					continue
				}
				theirs, err := shardLines(nodes[other-1])
				if err != nil {
					return err
				}
				if mine[shard].AppliedIndex != theirs[shard].AppliedIndex || mine[shard].Keys != theirs[shard].Keys {
					return fmt.Errorf("shard %d: restarted %+v, host %d %+v", shard, mine[shard], other, theirs[shard])
				}
			}
		}
		return nil
	})
	for i := 0; i < total; i += 41 {
		q := "/kv/" + key(i) + "?stale=true"
		for _, n := range nodes {
			code, got := do(t, "GET", n.url(q), nil)
			if code != http.StatusOK || string(got) != "v2" {
				t.Fatalf("stale GET %s via %s after catch-up = %d %q", key(i), n.name, code, got)
			}
		}
	}
}
