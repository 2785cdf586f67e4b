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
	ShardID           uint64            `json:"shard_id"`
	LeaderID          uint64            `json:"leader_id"`
	AppliedIndex      uint64            `json:"applied_index"`
	LogFirstIndex     uint64            `json:"log_first_index"`
	Members           map[string]string `json:"members"`
	Keys              uint64            `json:"keys"`
	SnapshotsReceived uint64            `json:"snapshots_received"`
	SnapshotsStaged   uint64            `json:"snapshots_staged"`
	SnapshotsAdopted  uint64            `json:"snapshots_adopted"`
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

// testMap is a shard map the tests write and the processes it names.
type testMap struct {
	Hosts []struct {
		ID       uint64 `json:"id"`
		RaftAddr string `json:"raft_addr"`
		HTTPAddr string `json:"http_addr"`
	} `json:"hosts"`
	Shards []struct {
		ID    uint64   `json:"id"`
		Hosts []uint64 `json:"hosts"`
	} `json:"shards"`

	file  string
	nodes []*node // nodes[i] is host i+1
}

// startShardMap starts hosts keeld processes on a shard map of shards
// shards, shard s on hosts place(s), and waits until every replica knows
// its leader.
func startShardMap(t *testing.T, hosts, shards int, place func(s int) []uint64, extra ...string) *testMap {
	t.Helper()
	dir := t.TempDir()
	m := &testMap{file: filepath.Join(dir, "map.json"), nodes: make([]*node, hosts)}
	m.Hosts = make([]struct {
		ID       uint64 `json:"id"`
		RaftAddr string `json:"raft_addr"`
		HTTPAddr string `json:"http_addr"`
	}, hosts)
	for i := range m.nodes {
		n := newNode(t, fmt.Sprintf("host-%d", i+1), filepath.Join(dir, fmt.Sprint("h", i+1)))
		m.nodes[i] = n
		m.Hosts[i].ID, m.Hosts[i].RaftAddr, m.Hosts[i].HTTPAddr = uint64(i+1), n.raftAddr, n.httpAddr
	}
	m.Shards = make([]struct {
		ID    uint64   `json:"id"`
		Hosts []uint64 `json:"hosts"`
	}, shards)
	for s := 1; s <= shards; s++ {
		m.Shards[s-1].ID, m.Shards[s-1].Hosts = uint64(s), place(s)
	}
	m.write(t)
	for _, n := range m.nodes {
		n.extra = append([]string{"--shard-map", m.file}, extra...)
		n.start()
	}
	for i, n := range m.nodes {
		waitShardsReady(t, n, len(m.shardsOn(uint64(i+1))))
	}
	return m
}

func (m *testMap) write(t *testing.T) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// shardsOn lists the shards the map places on host.
func (m *testMap) shardsOn(host uint64) []uint64 {
	var out []uint64
	for _, s := range m.Shards {
		for _, h := range s.Hosts {
			if h == host {
				out = append(out, s.ID)
			}
		}
	}
	return out
}

// hostsOf lists the nodes hosting shard, by the map.
func (m *testMap) hostsOf(shard uint64) []*node {
	var out []*node
	for _, h := range m.Shards[shard-1].Hosts {
		out = append(out, m.nodes[h-1])
	}
	return out
}

// tagFor returns a hash tag whose keys ("x{tag}y") all belong to shard.
func tagFor(t *testing.T, shard uint64, shards int) string {
	t.Helper()
	for i := 0; i < 100000; i++ {
		tag := fmt.Sprint("t", i)
		if shardFor([]byte(tag), uint64(shards)) == shard {
			return tag
		}
	}
	t.Fatalf("no hash tag found for shard %d", shard)
	return ""
}

// waitHashesEqual waits until every replica of shard in nodes reports its
// StateHash (GET /admin/shards/{id}/hash) at one applied index, and fails
// the test if the hashes then differ. It returns the hash.
func waitHashesEqual(t *testing.T, shard uint64, nodes []*node) hashResponse {
	t.Helper()
	var got hashResponse
	proctest.Eventually(t, fmt.Sprintf("shard %d's replicas at one applied index", shard), readyTimeout, func() error {
		hs := make([]hashResponse, len(nodes))
		for i, n := range nodes {
			if err := proctest.GetJSON(httpc, n.url(fmt.Sprintf("/admin/shards/%d/hash", shard)), &hs[i]); err != nil {
				return err
			}
			if hs[i].ShardID != shard || hs[i].Hash == "" {
				return proctest.Abort(fmt.Errorf("%s: hash answer %+v", n.name, hs[i]))
			}
			if hs[i].AppliedIndex != hs[0].AppliedIndex {
				return fmt.Errorf("%s at applied index %d, %s at %d", nodes[0].name, hs[0].AppliedIndex, n.name, hs[i].AppliedIndex)
			}
		}
		for i, n := range nodes {
			if hs[i].Hash != hs[0].Hash || hs[i].Keys != hs[0].Keys {
				return proctest.Abort(fmt.Errorf("shard %d at applied index %d: %s has %d keys, hash %s; %s has %d keys, hash %s",
					shard, hs[0].AppliedIndex, nodes[0].name, hs[0].Keys, hs[0].Hash, n.name, hs[i].Keys, hs[i].Hash))
			}
		}
		got = hs[0]
		return nil
	})
	return got
}

// TestShardMapCluster: six processes, twelve shards, each shard on three of
// the six (a shard map). Every process answers for every key (forwarding
// what it does not host); with one process SIGKILLed every shard still
// serves. While it is down, its shards' logs are compacted past anything
// it could have applied (writes plus per-shard snapshots on the other
// replicas), so on restart each of its shards must catch up by receiving
// a snapshot; then every shard's StateHash is the same on its replicas.
func TestShardMapCluster(t *testing.T) {
	const hosts, shards = 6, 12
	m := startShardMap(t, hosts, shards, func(s int) []uint64 {
		return []uint64{uint64((s-1)%hosts + 1), uint64(s%hosts + 1), uint64((s+1)%hosts + 1)}
	}, "--log-keep-entries", "200")
	nodes := m.nodes

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
	victimShards := m.shardsOn(1)
	victim.kill()
	for i := 0; i < total; i++ {
		if err := putRetry(nodes[1+i%(hosts-1)], key(i), "v2"); err != nil {
			t.Fatal(err)
		}
	}
	// Every write above was proposed after the kill and acknowledged, so
	// applied on its shard's leader: the highest applied index among the
	// survivors now is past the last entry the victim can hold.
	others := func(shard uint64) []*node {
		var out []*node
		for _, n := range m.hostsOf(shard) {
			if n != victim {
				out = append(out, n)
			}
		}
		return out
	}
	behind := map[uint64]uint64{}
	for _, shard := range victimShards {
		for _, n := range others(shard) {
			lines, err := shardLines(n)
			if err != nil {
				t.Fatal(err)
			}
			behind[shard] = max(behind[shard], lines[shard].AppliedIndex)
		}
	}
	// Compact every surviving replica's log of the victim's shards past
	// that index: more than the compactor's window (--log-keep-entries)
	// of writes, then per-shard snapshots on each replica, which compact
	// to the window.
	for _, shard := range victimShards {
		tag := tagFor(t, shard, shards)
		for i := 0; i < 400; i++ {
			if err := putRetry(nodes[1+i%(hosts-1)], fmt.Sprintf("c{%s}%04d", tag, i), "c"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, shard := range victimShards {
		for _, n := range others(shard) {
			proctest.Eventually(t, fmt.Sprintf("%s compacted shard %d's log past index %d", n.name, shard, behind[shard]), readyTimeout, func() error {
				lines, err := shardLines(n)
				if err != nil {
					return err
				}
				if first := lines[shard].LogFirstIndex; first > behind[shard]+1 {
					return nil
				}
				// 409 (nothing applied since the last snapshot) and 503
				// (the compactor's own request is running) are fine: the
				// next round asks again.
				code, body := do(t, "POST", n.url(fmt.Sprintf("/admin/shards/%d/snapshot", shard)), nil)
				return fmt.Errorf("log_first_index %d, want > %d (snapshot: %d %s)", lines[shard].LogFirstIndex, behind[shard]+1, code, body)
			})
		}
	}

	victim.start()
	waitShardsReady(t, victim, len(victimShards))
	proctest.Eventually(t, "the restarted host's shards caught up by snapshot", readyTimeout, func() error {
		mine, err := shardLines(victim)
		if err != nil {
			return err
		}
		for _, shard := range victimShards {
			if mine[shard].SnapshotsReceived == 0 {
				return fmt.Errorf("shard %d: the restarted replica received no snapshot (applied index %d, others compacted past %d)", shard, mine[shard].AppliedIndex, behind[shard])
			}
			if mine[shard].AppliedIndex <= behind[shard] {
				return fmt.Errorf("shard %d: restarted replica at applied index %d, want > %d", shard, mine[shard].AppliedIndex, behind[shard])
			}
		}
		return nil
	})
	for shard := uint64(1); shard <= shards; shard++ {
		waitHashesEqual(t, shard, m.hostsOf(shard))
	}
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
