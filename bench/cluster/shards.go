//go:build linux

package main

// Many shards per process: keeld --shards N runs N Raft groups in every
// process, each with its own leader, applied index and log window. The
// catch-up and restart phases read every shard from /status's shards list
// and wait for all of them, not for shard 1 alone.

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"time"
)

// replicaFields are what /status says of one replica, at the top level
// (the first shard) and in each entry of its shards list.
type replicaFields struct {
	ReplicaID     uint64 `json:"replica_id"`
	LeaderID      uint64 `json:"leader_id"`
	IsLeader      bool   `json:"is_leader"`
	AppliedIndex  uint64 `json:"applied_index"`
	LogFirstIndex uint64 `json:"log_first_index"`
	LogLastIndex  uint64 `json:"log_last_index"`
	Keys          uint64 `json:"keys"`
	Bytes         uint64 `json:"bytes"`
}

// shardStatus is one entry of /status's shards list.
type shardStatus struct {
	ShardID uint64 `json:"shard_id"`
	replicaFields
	// SnapshotsReceived counts snapshot images installed since the
	// process started.
	SnapshotsReceived uint64 `json:"snapshots_received"`
}

// shardList is every shard the process hosts, in shard order. A keeld
// without the shards list hosts shard 1 only: its top-level fields.
func (s status) shardList() []shardStatus {
	if len(s.Shards) > 0 {
		out := slices.Clone(s.Shards)
		sort.Slice(out, func(i, j int) bool { return out[i].ShardID < out[j].ShardID })
		return out
	}
	first := shardStatus{ShardID: 1, replicaFields: s.replicaFields}
	first.LogFirstIndex = s.firstIndex()
	return []shardStatus{first}
}

// shard returns the entry of shard id, if the process hosts it.
func (s status) shard(id uint64) (shardStatus, bool) {
	for _, sh := range s.shardList() {
		if sh.ShardID == id {
			return sh, true
		}
	}
	return shardStatus{}, false
}

// shardView is the statuses of a cluster's running processes at one moment.
type shardView map[*replica]status

// leaders maps every shard to the process that says it leads it. A shard
// whose leader is not among the statuses is missing.
func (v shardView) leaders() map[uint64]*replica {
	out := map[uint64]*replica{}
	for r, st := range v {
		for _, sh := range st.shardList() {
			if sh.IsLeader {
				out[sh.ShardID] = r
			}
		}
	}
	return out
}

// shardIDs is the union of the shards the processes host, sorted.
func (v shardView) shardIDs() []uint64 {
	seen := map[uint64]bool{}
	for _, st := range v {
		for _, sh := range st.shardList() {
			seen[sh.ShardID] = true
		}
	}
	out := make([]uint64, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// leaderApplied maps every shard to its leader's applied index.
func (v shardView) leaderApplied() map[uint64]uint64 {
	out := map[uint64]uint64{}
	for id, r := range v.leaders() {
		if sh, ok := v[r].shard(id); ok {
			out[id] = sh.AppliedIndex
		}
	}
	return out
}

// fewestLeads returns the process leading the fewest shards, lowest
// replica ID first among equals: a follower when there is one shard. It
// is the process the catch-up phase stops, so the fewest shards elect
// again while it is down.
func (v shardView) fewestLeads(reps []*replica) *replica {
	count := map[*replica]int{}
	for _, r := range v.leaders() {
		count[r]++
	}
	var best *replica
	for _, r := range reps {
		if _, ok := v[r]; !ok {
			continue
		}
		if best == nil || count[r] < count[best] {
			best = r
		}
	}
	return best
}

// appliedAll reports which shards of st have applied at least their
// target; done is true when every target is met.
func appliedAll(st status, targets map[uint64]uint64) (met map[uint64]bool, done bool) {
	met = map[uint64]bool{}
	done = true
	for id, want := range targets {
		sh, ok := st.shard(id)
		met[id] = ok && sh.AppliedIndex >= want
		done = done && met[id]
	}
	return met, done
}

// view reads the status of every running replica; those that do not
// answer are left out.
func (c *cluster) view(ctx context.Context) shardView {
	v := shardView{}
	for _, r := range c.reps {
		if !r.alive() {
			continue
		}
		if st, err := c.status(ctx, r); err == nil {
			v[r] = st
		}
	}
	return v
}

// waitLeaders polls until every shard hosted by the running processes has
// a leader among them, and returns that view.
func (c *cluster) waitLeaders(ctx context.Context, limit time.Duration) (shardView, error) {
	var v shardView
	err := poll(ctx, limit, 20*time.Millisecond, func() bool {
		v = c.view(ctx)
		ids := v.shardIDs()
		return len(ids) > 0 && len(v.leaders()) == len(ids)
	})
	if err != nil {
		return v, fmt.Errorf("cluster %s: %d of %d shards have a leader: %w", c.name, len(v.leaders()), len(v.shardIDs()), err)
	}
	return v, nil
}

// waitAppliedAll polls r until every shard in targets has applied its
// target index, and returns when each shard got there (from start).
func (c *cluster) waitAppliedAll(ctx context.Context, r *replica, targets map[uint64]uint64, start time.Time, limit time.Duration) (map[uint64]time.Duration, error) {
	at := map[uint64]time.Duration{}
	var met map[uint64]bool
	err := poll(ctx, limit, 25*time.Millisecond, func() bool {
		st, err := c.status(ctx, r)
		if err != nil {
			return false
		}
		var done bool
		met, done = appliedAll(st, targets)
		for id, ok := range met {
			if _, seen := at[id]; ok && !seen {
				at[id] = time.Since(start)
			}
		}
		return done
	})
	if err != nil {
		return at, fmt.Errorf("replica %d: %d of %d shards caught up: %w", r.id, len(at), len(targets), err)
	}
	return at, nil
}

// shardFor is keeld's key-to-shard rule (tools/keeld/shardmap.go, part of
// the data format): 1 + FNV-1a-64(hash part) mod n, the hash part being a
// non-empty {hash tag} or the whole key. The benchmark's keys carry no
// braces, so the whole key is hashed.
func shardFor(key string, n int) uint64 {
	if n <= 1 {
		return 1
	}
	h := fnv.New64a()
	part := key
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			part = key[open+1 : open+1+end]
		}
	}
	_, _ = h.Write([]byte(part))
	return 1 + h.Sum64()%uint64(n)
}

// probeKeys returns one key of each shard 1..n (key(prefix, i) for the
// smallest i landing there), for reads that must reach every shard.
func probeKeys(prefix byte, n int) ([]string, error) {
	out := make([]string, n)
	left := n
	for i := int64(0); left > 0 && i < int64(n)*1000; i++ {
		k := key(prefix, i)
		if s := shardFor(k, n); out[s-1] == "" {
			out[s-1] = k
			left--
		}
	}
	if left > 0 {
		return nil, fmt.Errorf("no probe key for %d of %d shards", left, n)
	}
	return out, nil
}

// serving returns how long after start every probe was answered by a
// linearizable GET from at least one of reps. A read sent before a leader
// exists waits out its own timeout instead of answering when one is
// elected, so reads are sent every probeEvery, overlapping, each bounded
// by probeTimeout and at most probeInFlight at a time.
func serving(ctx context.Context, c *cluster, probes []string, reps []*replica, start time.Time, limit time.Duration) (time.Duration, error) {
	const (
		probeEvery    = 5 * time.Millisecond
		probeTimeout  = 500 * time.Millisecond
		probeInFlight = 96
	)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	type answer struct {
		i  int
		at time.Duration
	}
	answered := make(chan answer, len(probes))
	done := make([]bool, len(probes))
	left := len(probes)
	var last time.Duration
	sem := make(chan struct{}, probeInFlight)
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		for i, p := range probes {
			if done[i] {
				continue
			}
			for _, r := range reps {
				select {
				case sem <- struct{}{}:
				default:
					continue // enough reads in flight; skip this tick
				}
				go func() {
					defer func() { <-sem }()
					gctx, gcancel := context.WithTimeout(ctx, probeTimeout)
					defer gcancel()
					if get(gctx, c.f.hc, r, p) == nil {
						select {
						case answered <- answer{i, time.Since(start)}:
						case <-ctx.Done():
						}
					}
				}()
			}
		}
		for drained := false; !drained; {
			select {
			case a := <-answered:
				if !done[a.i] {
					done[a.i], last = true, max(last, a.at)
					left--
				}
			default:
				drained = true
			}
		}
		if left == 0 {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w after %s: %d of %d shards answered", errTimeout, limit, len(probes)-left, len(probes))
		case <-t.C:
		}
	}
}
