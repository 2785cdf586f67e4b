package main

// Sharding: which shard a key belongs to, and which processes host which
// shards.
//
// # The key-to-shard rule (part of the data format)
//
// With N shards (--shards N, shard IDs 1..N), key k belongs to shard
//
//	1 + FNV-1a-64(hashPart(k)) mod N
//
// where hashPart(k) is the bytes between the first '{' in k and the first
// '}' after it when that section is not empty (Redis Cluster's hash-tag
// rule), and the whole key otherwise. So "user:{42}:name" and
// "user:{42}:email" always share a shard and may be written in one
// transaction. Changing the rule or N moves keys between shards: a data
// dir is bound to the N it was bootstrapped with.
//
// # Shard maps (--shard-map FILE)
//
// A JSON file placing shards on processes. Every process reads the same
// file, finds itself by its --raft-addr, and starts the replicas placed on
// it; a shard's replica ID on a host is the host's ID, so (shard, replica)
// always resolves to that host's Raft address:
//
//	{
//	  "hosts": [
//	    {"id": 1, "raft_addr": "127.0.0.1:63001", "http_addr": "127.0.0.1:8081"},
//	    ...
//	  ],
//	  "shards": [
//	    {"id": 1, "hosts": [1, 2, 3]},
//	    ...
//	  ]
//	}
//
// Shard IDs must be exactly 1..N (N = the number of shards listed), which
// is the N of the key rule.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"sort"

	"github.com/keel-db/keel/host"
)

// shardFor returns the shard (1..n) key belongs to.
func shardFor(key []byte, n uint64) uint64 {
	if n <= 1 {
		return 1
	}
	h := fnv.New64a()
	_, _ = h.Write(hashPart(key))
	return 1 + h.Sum64()%n
}

// hashPart is the part of key that is hashed: a non-empty {hash tag}, or
// the whole key.
func hashPart(key []byte) []byte {
	open := bytes.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := bytes.IndexByte(key[open+1:], '}')
	if end <= 0 {
		return key
	}
	return key[open+1 : open+1+end]
}

// shardMap is a parsed, validated --shard-map file.
//
// Invariants after parseShardMap: host IDs are unique and non-zero, Raft
// and HTTP addresses unique and valid host:port; shard IDs are exactly
// 1..len(Shards) in order; each shard has at least one host, every one of
// them listed in Hosts and none twice.
type shardMap struct {
	Hosts  []mapHost  `json:"hosts"`
	Shards []mapShard `json:"shards"`
}

type mapHost struct {
	ID       uint64 `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

type mapShard struct {
	ID    uint64   `json:"id"`
	Hosts []uint64 `json:"hosts"`
}

// loadShardMap reads and validates a shard map file. Errors wrap errUsage
// and name what is wrong in one line.
func loadShardMap(path string) (*shardMap, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --shard-map: %v", errUsage, err)
	}
	defer f.Close()
	m, err := parseShardMap(io.LimitReader(f, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: --shard-map %s: %v", errUsage, path, err)
	}
	return m, nil
}

func parseShardMap(r io.Reader) (*shardMap, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var m shardMap
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("not a shard map: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the shard map")
	}
	if len(m.Hosts) == 0 {
		return nil, fmt.Errorf("no hosts")
	}
	if len(m.Shards) == 0 {
		return nil, fmt.Errorf("no shards")
	}
	ids := map[uint64]bool{}
	addrs := map[string]uint64{}
	for _, h := range m.Hosts {
		if h.ID == 0 {
			return nil, fmt.Errorf("host ID 0 (IDs start at 1)")
		}
		if ids[h.ID] {
			return nil, fmt.Errorf("host %d is listed twice", h.ID)
		}
		ids[h.ID] = true
		for _, a := range []struct{ flag, addr string }{{"raft_addr", h.RaftAddr}, {"http_addr", h.HTTPAddr}} {
			if err := host.CheckHostPort(a.addr, false); err != nil {
				return nil, fmt.Errorf("host %d %s: %v", h.ID, a.flag, err)
			}
			if other, dup := addrs[a.addr]; dup {
				return nil, fmt.Errorf("address %s is used by hosts %d and %d", a.addr, other, h.ID)
			}
			addrs[a.addr] = h.ID
		}
	}
	for i, s := range m.Shards {
		if s.ID != uint64(i+1) {
			return nil, fmt.Errorf("shard IDs must be 1..%d in order; entry %d has ID %d", len(m.Shards), i+1, s.ID)
		}
		if len(s.Hosts) == 0 {
			return nil, fmt.Errorf("shard %d has no replicas", s.ID)
		}
		seen := map[uint64]bool{}
		for _, h := range s.Hosts {
			if !ids[h] {
				return nil, fmt.Errorf("shard %d names unknown host %d", s.ID, h)
			}
			if seen[h] {
				return nil, fmt.Errorf("shard %d lists host %d twice", s.ID, h)
			}
			seen[h] = true
		}
	}
	return &m, nil
}

// hostByRaftAddr returns the host with the given Raft address.
func (m *shardMap) hostByRaftAddr(addr string) (mapHost, bool) {
	for _, h := range m.Hosts {
		if h.RaftAddr == addr {
			return h, true
		}
	}
	return mapHost{}, false
}

func (m *shardMap) hostByID(id uint64) (mapHost, bool) {
	for _, h := range m.Hosts {
		if h.ID == id {
			return h, true
		}
	}
	return mapHost{}, false
}

// members is shard's initial membership: host ID (= replica ID) to Raft
// address.
func (m *shardMap) members(shard uint64) map[uint64]string {
	out := map[uint64]string{}
	for _, id := range m.Shards[shard-1].Hosts {
		h, _ := m.hostByID(id)
		out[id] = h.RaftAddr
	}
	return out
}

// shardsOn lists the shards placed on host id, in order.
func (m *shardMap) shardsOn(id uint64) []uint64 {
	var out []uint64
	for _, s := range m.Shards {
		for _, h := range s.Hosts {
			if h == id {
				out = append(out, s.ID)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
