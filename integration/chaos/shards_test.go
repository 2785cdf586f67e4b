package chaos

// The suite runs keeld with --shards N (CHAOS_SHARDS, default 4): every
// process hosts a replica of every shard. The workload's keys are chosen so
// each shard holds some, the end checks run per shard, and the shard of a
// key is computed here with keeld's rule (tools/keeld/shardmap.go), which
// is part of its data format.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/keel-db/keel/internal/testkit/proctest"
)

// defaultShards is the shard count when CHAOS_SHARDS is not set.
const defaultShards = 4

// envShards reads CHAOS_SHARDS.
func envShards(t *testing.T) int {
	v := os.Getenv("CHAOS_SHARDS")
	if v == "" {
		return defaultShards
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > numKeys {
		t.Fatalf("CHAOS_SHARDS=%q: want a number from 1 to %d (every shard gets workload keys)", v, numKeys)
	}
	return n
}

// shardOf is keeld's key-to-shard rule: 1 + FNV-1a-64 of the key's
// non-empty {hash tag}, or of the whole key, mod n.
func shardOf(key string, n int) int {
	if n <= 1 {
		return 1
	}
	part := []byte(key)
	if open := bytes.IndexByte(part, '{'); open >= 0 {
		if end := bytes.IndexByte(part[open+1:], '}'); end > 0 {
			part = part[open+1 : open+1+end]
		}
	}
	h := fnv.New64a()
	_, _ = h.Write(part)
	return 1 + int(h.Sum64()%uint64(n))
}

// keyInShard returns the first of format's keys (format takes one integer)
// that falls in shard s of n.
func keyInShard(format string, s, n int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf(format, i); shardOf(k, n) == s {
			return k
		}
	}
}

// workloadKeys picks numKeys keys named k<i>, the same number in every
// shard (numKeys/n, the first shards one more when it does not divide), so
// the clients contend on every shard.
func workloadKeys(n int) []string {
	per := map[int]int{}
	var keys []string
	for i := 0; len(keys) < numKeys; i++ {
		k := fmt.Sprintf("k%d", i)
		s := shardOf(k, n)
		if want := numKeys / n; per[s] < want || (per[s] == want && s <= numKeys%n) {
			per[s]++
			keys = append(keys, k)
		}
	}
	return keys
}

// shardStatus is one entry of keeld's /status shards[].
type shardStatus struct {
	ShardID       int    `json:"shard_id"`
	LeaderID      uint64 `json:"leader_id"`
	IsLeader      bool   `json:"is_leader"`
	AppliedIndex  uint64 `json:"applied_index"`
	LogFirstIndex uint64 `json:"log_first_index"`
	LogLastIndex  uint64 `json:"log_last_index"`
}

// shard returns st's entry for shard s.
func (st status) shard(s int) (shardStatus, bool) {
	for _, ss := range st.Shards {
		if ss.ShardID == s {
			return ss, true
		}
	}
	return shardStatus{}, false
}

// allLed reports an error unless st lists every shard with a known leader.
func (c *cluster) allLed(st status) error {
	if len(st.Shards) != c.shards {
		return fmt.Errorf("%d shards listed, want %d", len(st.Shards), c.shards)
	}
	for _, ss := range st.Shards {
		if ss.LeaderID == 0 {
			return fmt.Errorf("shard %d: no leader", ss.ShardID)
		}
	}
	return nil
}

// converged reports an error unless every replica knows a leader of every
// shard and all replicas of each shard are at the same applied index; a
// replica that crashed aborts the wait (proctest.Poll).
func (c *cluster) converged() error {
	applied := map[int][]uint64{}
	for _, r := range c.replicas {
		if p := r.current(); p != nil && p.Crashed() {
			_, err := p.Exited()
			return proctest.Abort(fmt.Errorf("replica %d exited unexpectedly: %v", r.id, err))
		}
		st, err := r.status()
		if err != nil {
			return err
		}
		if err := c.allLed(st); err != nil {
			return fmt.Errorf("replica %d: %w", r.id, err)
		}
		for _, ss := range st.Shards {
			applied[ss.ShardID] = append(applied[ss.ShardID], ss.AppliedIndex)
		}
	}
	for s, a := range applied {
		for _, x := range a {
			if x != a[0] {
				return fmt.Errorf("shard %d: applied indexes differ: %v", s, a)
			}
		}
	}
	return nil
}

// leaderOf returns the running replica that reports itself leader of
// shard s, or nil.
func (c *cluster) leaderOf(s int) *replica {
	for _, r := range c.replicas {
		if r.getState() != stateUp {
			continue
		}
		if st, err := r.status(); err == nil {
			if ss, ok := st.shard(s); ok && ss.IsLeader {
				return r
			}
		}
	}
	return nil
}

// stopOrder lists the replicas by how many shards each leads, fewest
// first, so the fewest elections follow a stop. An election after the
// workload ended appends only a no-op entry, which Dragonboat does not
// pass to the state machine: applied indexes and hashes stay comparable.
func (c *cluster) stopOrder() []*replica {
	leads := map[*replica]int{}
	for _, r := range c.replicas {
		if st, err := r.status(); err == nil {
			for _, ss := range st.Shards {
				if ss.IsLeader {
					leads[r]++
				}
			}
		}
	}
	out := append([]*replica(nil), c.replicas...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && leads[out[j]] < leads[out[j-1]]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// hashOut is `keelctl hash --json` for one replica of one shard.
type hashOut struct {
	AppliedIndex uint64 `json:"applied_index"`
	Keys         uint64 `json:"keys"`
	Hash         any    `json:"hash"`
}

// shardHashes runs `keelctl check` and `keelctl hash` on every shard of
// every stopped replica; byShard[s][i] is replica i's hash of shard s
// (missing when keelctl failed, which is reported as a problem).
func (c *cluster) shardHashes(problem func(string, ...any)) map[int]map[int]hashOut {
	byShard := map[int]map[int]hashOut{}
	for s := 1; s <= c.shards; s++ {
		byShard[s] = map[int]hashOut{}
		for _, r := range c.replicas {
			shard := []string{"--shard", strconv.Itoa(s)}
			out, err := exec.Command(keelctlBin, append(append([]string{"check"}, shard...), r.dataDir)...).CombinedOutput()
			if err != nil {
				problem("keelctl check shard %d replica %d: %v\n%s", s, r.id, err, out)
			}
			cmd := exec.Command(keelctlBin, append(append([]string{"hash", "--json"}, shard...), r.dataDir)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err = cmd.Output()
			if err != nil {
				problem("keelctl hash shard %d replica %d: %v: %s", s, r.id, err, stderr.Bytes())
				continue
			}
			var ho hashOut
			if err := json.Unmarshal(out, &ho); err != nil {
				problem("keelctl hash shard %d replica %d: %v: %s", s, r.id, err, out)
				continue
			}
			byShard[s][r.id] = ho
		}
	}
	return byShard
}

// errHashes marks a per-shard comparison that found a difference.
var errHashes = errors.New("replicas differ")

// compareShardHashes returns one message per shard whose replicas differ
// in applied index, key count or StateHash, or hold no keys at all (the
// workload writes to every shard), and per shard some replica could not
// be hashed (want replicas each).
func compareShardHashes(byShard map[int]map[int]hashOut, shards, replicas int) []error {
	var errs []error
	for s := 1; s <= shards; s++ {
		hs := byShard[s]
		if len(hs) != replicas {
			errs = append(errs, fmt.Errorf("%w: shard %d: %d of %d replicas hashed", errHashes, s, len(hs), replicas))
		}
		first, base := 0, hashOut{}
		for id := 1; id <= replicas; id++ {
			h, ok := hs[id]
			if !ok {
				continue
			}
			if first == 0 {
				first, base = id, h
				if h.Keys == 0 {
					errs = append(errs, fmt.Errorf("%w: shard %d holds no keys on replica %d; the workload writes to every shard", errHashes, s, id))
				}
				continue
			}
			switch {
			case h.AppliedIndex != base.AppliedIndex:
				errs = append(errs, fmt.Errorf("%w: shard %d: stopped replicas at different applied indexes: replica %d at %d, replica %d at %d",
					errHashes, s, first, base.AppliedIndex, id, h.AppliedIndex))
			case fmt.Sprint(h.Hash) != fmt.Sprint(base.Hash) || h.Keys != base.Keys:
				errs = append(errs, fmt.Errorf("%w: shard %d at applied index %d: replica %d has %v (%d keys), replica %d %v (%d keys)",
					errHashes, s, h.AppliedIndex, first, base.Hash, base.Keys, id, h.Hash, h.Keys))
			}
		}
	}
	return errs
}

// TestCompareShardHashes checks the end check: a difference on any one
// shard, a missing replica or an empty shard is reported, naming the
// shard; and shardOf and workloadKeys follow keeld's rule.
func TestCompareShardHashes(t *testing.T) {
	const shards, replicas = 4, 3
	healthy := func() map[int]map[int]hashOut {
		m := map[int]map[int]hashOut{}
		for s := 1; s <= shards; s++ {
			m[s] = map[int]hashOut{}
			for id := 1; id <= replicas; id++ {
				m[s][id] = hashOut{AppliedIndex: uint64(100 + s), Keys: uint64(10 * s), Hash: fmt.Sprintf("h%d", s)}
			}
		}
		return m
	}
	if errs := compareShardHashes(healthy(), shards, replicas); len(errs) != 0 {
		t.Fatalf("healthy replicas reported: %v", errs)
	}
	for s := 1; s <= shards; s++ {
		for name, breakIt := range map[string]func(m map[int]map[int]hashOut){
			"hash":    func(m map[int]map[int]hashOut) { h := m[s][3]; h.Hash = "other"; m[s][3] = h },
			"applied": func(m map[int]map[int]hashOut) { h := m[s][2]; h.AppliedIndex++; m[s][2] = h },
			"keys":    func(m map[int]map[int]hashOut) { h := m[s][1]; h.Keys++; m[s][1] = h },
			"missing": func(m map[int]map[int]hashOut) { delete(m[s], 2) },
			"empty": func(m map[int]map[int]hashOut) {
				for id := range m[s] {
					h := m[s][id]
					h.Keys, h.Hash = 0, "empty"
					m[s][id] = h
				}
			},
		} {
			m := healthy()
			breakIt(m)
			errs := compareShardHashes(m, shards, replicas)
			if len(errs) == 0 {
				t.Errorf("%s differs on shard %d: nothing reported", name, s)
			}
			for _, err := range errs {
				if !errors.Is(err, errHashes) || !strings.Contains(err.Error(), fmt.Sprintf("shard %d", s)) {
					t.Errorf("%s differs on shard %d: reported %v, want errors naming the shard", name, s, err)
				}
			}
		}
	}
	// The values keeld's TestShardForIsStable pins for its rule.
	if got := []int{shardOf("a", 8), shardOf("hello", 8), shardOf("user:{42}:x", 8), shardOf("42", 8)}; fmt.Sprint(got) != "[5 4 4 4]" {
		t.Fatalf("shardOf differs from keeld's rule: %v, want [5 4 4 4]", got)
	}
	if keys := workloadKeys(shards); len(keys) != numKeys {
		t.Fatalf("workload keys %v", keys)
	} else {
		per := map[int]int{}
		for _, k := range keys {
			per[shardOf(k, shards)]++
		}
		for s := 1; s <= shards; s++ {
			if per[s] != numKeys/shards {
				t.Errorf("shard %d gets %d workload keys, want %d: %v", s, per[s], numKeys/shards, keys)
			}
		}
	}
}
