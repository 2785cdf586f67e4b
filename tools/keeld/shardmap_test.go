package main

import (
	"fmt"
	"strings"
	"testing"
)

func TestShardForHashTag(t *testing.T) {
	const n = 16
	// Keys sharing a non-empty tag always share a shard.
	for i := 0; i < 200; i++ {
		a := shardFor([]byte(fmt.Sprintf("user:{%d}:name", i)), n)
		b := shardFor([]byte(fmt.Sprintf("user:{%d}:email-%d", i, i*7)), n)
		if a != b {
			t.Fatalf("tag %d: shards %d and %d", i, a, b)
		}
		if a < 1 || a > n {
			t.Fatalf("shard %d out of 1..%d", a, n)
		}
	}
	for _, tc := range []struct{ key, part string }{
		{"plain", "plain"},
		{"a{b}c", "b"},
		{"a{}c", "a{}c"},       // an empty tag hashes the whole key
		{"a{b", "a{b"},         // no closing brace
		{"}a{b}", "b"},         // the first '{', the first '}' after it
		{"x{y}z{w}", "y"},      // only the first section counts
		{"{{x}}", "{x"},        // the section may hold a '{'
		{"a}b{c}d", "c"},       // a '}' before the '{' is not a close
		{"\xff{\x00}", "\x00"}, // binary keys too
	} {
		if got := string(hashPart([]byte(tc.key))); got != tc.part {
			t.Errorf("hashPart(%q) = %q, want %q", tc.key, got, tc.part)
		}
	}
	// The rule spreads keys: with 16 shards no shard is empty among 2,000 keys.
	counts := map[uint64]int{}
	for i := 0; i < 2000; i++ {
		counts[shardFor([]byte(fmt.Sprintf("k%06d", i)), n)]++
	}
	if len(counts) != n {
		t.Fatalf("2,000 keys landed in %d of %d shards: %v", len(counts), n, counts)
	}
	if shardFor([]byte("anything"), 1) != 1 {
		t.Fatal("one shard: every key in shard 1")
	}
}

// The key rule is part of the data format: these values must never change.
func TestShardForIsStable(t *testing.T) {
	got := []uint64{shardFor([]byte("a"), 8), shardFor([]byte("hello"), 8), shardFor([]byte("user:{42}:x"), 8), shardFor([]byte("42"), 8)}
	if got[2] != got[3] {
		t.Fatalf("tag {42} and key 42 differ: %v", got)
	}
	// Computed once from the rule in shardmap.go; a change here moves data.
	want := []uint64{5, 4, 4, 4}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("shardFor moved keys: got %v, want %v", got, want)
		}
	}
}

func TestParseShardMap(t *testing.T) {
	good := `{"hosts":[{"id":1,"raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"},
	                  {"id":2,"raft_addr":"127.0.0.1:3","http_addr":"127.0.0.1:4"}],
	          "shards":[{"id":1,"hosts":[1,2]},{"id":2,"hosts":[2]}]}`
	m, err := parseShardMap(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.shardsOn(2); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("shards on host 2: %v", got)
	}
	if got := m.members(1); len(got) != 2 || got[2] != "127.0.0.1:3" {
		t.Fatalf("members of shard 1: %v", got)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown host", `{"hosts":[{"id":1,"raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"}],"shards":[{"id":1,"hosts":[9]}]}`, "unknown host 9"},
		{"duplicate address", `{"hosts":[{"id":1,"raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"},{"id":2,"raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:4"}],"shards":[{"id":1,"hosts":[1]}]}`, "used by hosts 1 and 2"},
		{"no replicas", `{"hosts":[{"id":1,"raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"}],"shards":[{"id":1,"hosts":[]}]}`, "shard 1 has no replicas"},
		{"duplicate host id", `{"hosts":[{"id":1,"raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"},{"id":1,"raft_addr":"127.0.0.1:3","http_addr":"127.0.0.1:4"}],"shards":[{"id":1,"hosts":[1]}]}`, "host 1 is listed twice"},
		{"shard ids out of order", `{"hosts":[{"id":1,"raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"}],"shards":[{"id":2,"hosts":[1]}]}`, "shard IDs must be 1..1"},
		{"replica twice", `{"hosts":[{"id":1,"raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"}],"shards":[{"id":1,"hosts":[1,1]}]}`, "lists host 1 twice"},
		{"bad address", `{"hosts":[{"id":1,"raft_addr":"nope","http_addr":"127.0.0.1:2"}],"shards":[{"id":1,"hosts":[1]}]}`, "raft_addr"},
		{"unknown field", `{"hosts":[],"shardz":[]}`, "unknown field"},
		{"no hosts", `{"hosts":[],"shards":[{"id":1,"hosts":[1]}]}`, "no hosts"},
		{"trailing", good + `{}`, "trailing"},
		{"not json", `nope`, "not a shard map"},
	} {
		_, err := parseShardMap(strings.NewReader(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
