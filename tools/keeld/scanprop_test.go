package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/keel-db/keel/internal/testkit/testutil"
)

// TestMergedScanPagingBinaryKeys is a property test of the merged scan:
// two processes with a shard map, four single-replica shards, two on each,
// so every scan merges local pages with pages forwarded from the other
// process. Random binary keys (0x00, 0xFF, '{' and '}' so hash tags move
// keys between shards, keys that prefix one another, key+0x00 beside key,
// runs of keys behind one hash tag, so some ranges live in one shard)
// are paged with encoding=base64, random limits and random prefix, start
// and end bounds (empty and inverted ranges included) until more=false:
// every run returns exactly the keys in range, in bytewise order, each
// once, and each next_key is past the page it follows.
func TestMergedScanPagingBinaryKeys(t *testing.T) {
	const shards = 4
	rng := rand.New(rand.NewPCG(testutil.Seed(t), 0))
	dir := t.TempDir()
	nodes := []*node{
		newNode(t, "host-1", filepath.Join(dir, "h1")),
		newNode(t, "host-2", filepath.Join(dir, "h2")),
	}
	var m shardMap // shardmap.go's own format
	for i, n := range nodes {
		m.Hosts = append(m.Hosts, mapHost{uint64(i + 1), n.raftAddr, n.httpAddr})
	}
	for s := uint64(1); s <= shards; s++ {
		m.Shards = append(m.Shards, mapShard{s, []uint64{1 + (s-1)/2}}) // 1,2 on host 1; 3,4 on host 2
	}
	mapFile := filepath.Join(dir, "map.json")
	b, _ := json.Marshal(m)
	if err := os.WriteFile(mapFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		n.extra = []string{"--shard-map", mapFile}
		n.start()
	}
	for _, n := range nodes {
		waitShardsReady(t, n, 2)
	}

	// Keys: random short strings over a small alphabet, a third of them
	// an earlier key extended (so keys prefix one another), a sixth behind
	// one of three hash tags.
	alphabet := []byte{0x00, 0x01, '{', '}', 'a', 0x7f, 0x80, 0xfe, 0xff}
	randBytes := func(maxLen int) []byte {
		k := make([]byte, 1+rng.IntN(maxLen))
		for i := range k {
			k[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return k
	}
	tags := []byte{0x00, 'a', 0xff}
	set := map[string]bool{}
	var keys []string
	for len(keys) < 150 {
		k := randBytes(4)
		switch r := rng.IntN(6); {
		case r < 2 && len(keys) > 0:
			k = append([]byte(keys[rng.IntN(len(keys))]), randBytes(2)...)
		case r == 2:
			// A hash tag: runs of keys in one shard, so a page can be
			// one shard's alone.
			k = append([]byte{'{', tags[rng.IntN(len(tags))], '}'}, k...)
		}
		if !set[string(k)] {
			set[string(k)] = true
			keys = append(keys, string(k))
		}
	}
	perShard := map[uint64]int{}
	for i, k := range keys {
		perShard[shardFor([]byte(k), shards)]++
		if err := putRetry(nodes[i%2], k, k); err != nil {
			t.Fatal(err)
		}
	}
	if len(perShard) != shards {
		t.Fatalf("keys fall in %d shards, want all %d: %v", len(perShard), shards, perShard)
	}
	sort.Strings(keys) // bytewise, as Pebble orders keys

	// bound is a random scan bound: none, a key, a key's prefix, a key
	// followed by 0x00, or random bytes.
	bound := func() []byte {
		k := []byte(keys[rng.IntN(len(keys))])
		switch rng.IntN(5) {
		case 0:
			return nil
		case 1:
			return k
		case 2:
			return k[:1+rng.IntN(len(k))]
		case 3:
			return append(k, 0)
		default:
			return randBytes(3)
		}
	}
	type page struct {
		Pairs []struct{ Key, Value []byte } `json:"pairs"`
		More  bool                          `json:"more"`
		Next  []byte                        `json:"next_key"`
	}
	b64 := base64.StdEncoding.EncodeToString
	const rounds = 100
	totalPages, totalKeys, empty := 0, 0, 0
	for round := 0; round < rounds; round++ {
		prefix, start, end := bound(), bound(), bound()
		if rng.IntN(3) != 0 {
			prefix = nil
		}
		// Mostly start <= end; an inverted range now and then.
		if start != nil && end != nil && bytes.Compare(start, end) > 0 && rng.IntN(10) != 0 {
			start, end = end, start
		}
		var want []string
		for _, k := range keys {
			if bytes.HasPrefix([]byte(k), prefix) && k >= string(start) && (end == nil || k < string(end)) {
				want = append(want, k)
			}
		}
		via := nodes[rng.IntN(len(nodes))]
		desc := fmt.Sprintf("round %d via %s: prefix %x start %x end %x", round, via.name, prefix, start, end)
		var got []string
		cursor := start
		for pages := 0; ; pages++ {
			if pages > len(want)+1 {
				t.Fatalf("%s: paging did not end after %d pages (%d keys in range)", desc, pages, len(want))
			}
			limit := 1 + rng.IntN(6)
			if rng.IntN(10) == 0 {
				limit = 1 + rng.IntN(200)
			}
			q := url.Values{"encoding": {"base64"}, "limit": {fmt.Sprint(limit)}}
			for name, v := range map[string][]byte{"prefix": prefix, "start": cursor, "end": end} {
				if v != nil {
					q.Set(name, b64(v))
				}
			}
			totalPages++
			var p page
			decode(t, mustDo(t, http.StatusOK, "GET", via.url("/kv?"+q.Encode()), nil), &p)
			if len(p.Pairs) > limit {
				t.Fatalf("%s: page of %d pairs for limit %d", desc, len(p.Pairs), limit)
			}
			for _, kv := range p.Pairs {
				if !bytes.Equal(kv.Key, kv.Value) {
					t.Fatalf("%s: key %x has value %x", desc, kv.Key, kv.Value)
				}
				got = append(got, string(kv.Key))
			}
			if !p.More {
				break
			}
			if len(p.Pairs) > 0 && bytes.Compare(p.Next, p.Pairs[len(p.Pairs)-1].Key) <= 0 {
				t.Fatalf("%s: next_key %x is not past the page's last key %x", desc, p.Next, p.Pairs[len(p.Pairs)-1].Key)
			}
			cursor = p.Next
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("%s:\n got %q\nwant %q", desc, got, want)
		}
		totalKeys += len(got)
		if len(want) == 0 {
			empty++
		}
	}
	t.Logf("%d keys (per shard %v), %d scans (%d with nothing in range) in %d pages returned %d keys", len(keys), perShard, rounds, empty, totalPages, totalKeys)
}
