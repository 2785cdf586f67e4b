//go:build linux

package main

import (
	"errors"
	"strconv"
	"testing"
)

// The benchmark's copy of keeld's key rule must place keys where keeld
// does: these are the values tools/keeld's TestShardForIsStable pins.
func TestShardForMatchesKeeld(t *testing.T) {
	for k, want := range map[string]uint64{"a": 5, "hello": 4, "user:{42}:x": 4, "42": 4} {
		if got := shardFor(k, 8); got != want {
			t.Errorf("shardFor(%q, 8) = %d, want %d", k, got, want)
		}
	}
	if got := shardFor("anything", 1); got != 1 {
		t.Errorf("shardFor with one shard = %d", got)
	}
}

func TestProbeKeysCoverEveryShard(t *testing.T) {
	for _, n := range []int{1, 4, 16, 100} {
		keys, err := probeKeys('r', n)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if len(keys) != n {
			t.Fatalf("n=%d: %d keys", n, len(keys))
		}
		for i, k := range keys {
			if len(k) != 16 || k[0] != 'r' {
				t.Errorf("n=%d: key %q is not a benchmark key", n, k)
			}
			if s := shardFor(k, n); s != uint64(i+1) {
				t.Errorf("n=%d: probe %d (%q) is in shard %d", n, i+1, k, s)
			}
		}
	}
	// The single-shard probe is the restart phase's old one.
	if keys, _ := probeKeys('r', 1); keys[0] != key('r', 0) {
		t.Errorf("probe of one shard = %q", keys[0])
	}
}

// statusJSON is the shape of keeld's GET /status with --shards 3 on
// replica 2, shards out of order.
const statusJSON = `{"shard_id":1,"replica_id":2,"leader_id":1,"is_leader":false,"applied_index":50,
"log_first_index":10,"log_last_index":50,"raft_log":{"first_index":10,"last_index":50},
"snapshots":{"received":1},"keys":7,"bytes":70,"shard_count":3,"shards":[
{"shard_id":3,"replica_id":2,"leader_id":2,"is_leader":true,"applied_index":30,"log_first_index":3,"log_last_index":30,"keys":3,"bytes":30,"snapshots_received":0},
{"shard_id":1,"replica_id":2,"leader_id":1,"is_leader":false,"applied_index":50,"log_first_index":10,"log_last_index":50,"keys":7,"bytes":70,"snapshots_received":1},
{"shard_id":2,"replica_id":2,"leader_id":3,"is_leader":false,"applied_index":20,"log_first_index":2,"log_last_index":20,"keys":2,"bytes":20,"snapshots_received":2}]}`

func mustStatus(t *testing.T, body string) status {
	t.Helper()
	st, err := parseStatus([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestStatusShardList(t *testing.T) {
	st := mustStatus(t, statusJSON)
	l := st.shardList()
	if len(l) != 3 || l[0].ShardID != 1 || l[1].ShardID != 2 || l[2].ShardID != 3 {
		t.Fatalf("shard list not in shard order: %+v", l)
	}
	sh, ok := st.shard(2)
	if !ok || sh.AppliedIndex != 20 || sh.LeaderID != 3 || sh.SnapshotsReceived != 2 || sh.LogFirstIndex != 2 {
		t.Fatalf("shard 2 = %+v, %v", sh, ok)
	}
	if _, ok := st.shard(4); ok {
		t.Fatal("shard 4 is not hosted")
	}
	// A keeld without the shards list hosts shard 1: its top-level
	// fields, the log's first index from raft_log when present.
	old := mustStatus(t, `{"replica_id":1,"leader_id":1,"is_leader":true,"applied_index":9,"log_first_index":4,"raft_log":{"first_index":5},"keys":3}`)
	l = old.shardList()
	if len(l) != 1 || l[0].ShardID != 1 || !l[0].IsLeader || l[0].AppliedIndex != 9 || l[0].LogFirstIndex != 5 || l[0].Keys != 3 {
		t.Fatalf("fallback shard list = %+v", l)
	}
}

// threeProcesses is a view of three processes hosting shards 1-3: shard
// 1 led by r1, shards 2 and 3 by r2, r3 leading none.
func threeProcesses(t *testing.T) ([]*replica, shardView) {
	reps := []*replica{{id: 1}, {id: 2}, {id: 3}}
	itoa := func(v uint64) string { return strconv.FormatUint(v, 10) }
	entry := func(shard, rep, leader, applied, first uint64) string {
		return `{"shard_id":` + itoa(shard) + `,"replica_id":` + itoa(rep) + `,"leader_id":` + itoa(leader) +
			`,"is_leader":` + map[bool]string{true: "true", false: "false"}[rep == leader] +
			`,"applied_index":` + itoa(applied) + `,"log_first_index":` + itoa(first) + `}`
	}
	v := shardView{}
	for _, r := range reps {
		v[r] = mustStatus(t, `{"shards":[`+entry(1, r.id, 1, 100+r.id, 40)+`,`+entry(2, r.id, 2, 200+r.id, 50)+`,`+entry(3, r.id, 2, 300+r.id, 60)+`]}`)
	}
	return reps, v
}

func TestShardViewLeaders(t *testing.T) {
	reps, v := threeProcesses(t)
	l := v.leaders()
	if len(l) != 3 || l[1] != reps[0] || l[2] != reps[1] || l[3] != reps[1] {
		t.Fatalf("leaders = %v", l)
	}
	if ids := v.shardIDs(); len(ids) != 3 || ids[0] != 1 || ids[2] != 3 {
		t.Fatalf("shard IDs = %v", ids)
	}
	// The leaders' own applied indexes, not the followers'.
	if a := v.leaderApplied(); a[1] != 101 || a[2] != 202 || a[3] != 302 {
		t.Fatalf("leader applied = %v", a)
	}
	if f := v.fewestLeads(reps); f != reps[2] {
		t.Fatalf("fewest leads = replica %d, want 3", f.id)
	}
	if lp := leaderProcesses(v, reps); len(lp) != 2 || lp[0] != reps[0] || lp[1] != reps[1] {
		t.Fatalf("leader processes = %v", lp)
	}
	// Without replica 3 in the view, the lowest ID among equals: r1 leads
	// one shard, r2 two.
	delete(v, reps[2])
	if f := v.fewestLeads(reps); f != reps[0] {
		t.Fatalf("fewest leads without r3 = replica %d, want 1", f.id)
	}
}

func TestAppliedAll(t *testing.T) {
	st := mustStatus(t, statusJSON)
	met, done := appliedAll(st, map[uint64]uint64{1: 50, 2: 20, 3: 30})
	if !done || !met[1] || !met[2] || !met[3] {
		t.Fatalf("all at target: %v %v", met, done)
	}
	met, done = appliedAll(st, map[uint64]uint64{1: 50, 2: 21})
	if done || !met[1] || met[2] {
		t.Fatalf("shard 2 behind: %v %v", met, done)
	}
	// A shard the process does not host is never met.
	if _, done = appliedAll(st, map[uint64]uint64{4: 0}); done {
		t.Fatal("shard 4 is not hosted")
	}
}

func TestBehindPassed(t *testing.T) {
	reps, v := threeProcesses(t)
	delete(v, reps[2]) // the stopped follower
	b := behind{shards: []shardCatchUp{{ShardID: 1, StoppedAt: 38}, {ShardID: 2, StoppedAt: 48}, {ShardID: 3, StoppedAt: 58}}}
	if !b.passed(v) {
		t.Fatalf("every leader's log starts past the follower: %+v", b.shards)
	}
	if b.stoppedAt != 38 || b.leaderFirst != 40 || b.shards[2].LeaderFirst != 60 {
		t.Fatalf("recorded %d/%d, %+v", b.stoppedAt, b.leaderFirst, b.shards)
	}
	// The follower's next entry (59) is still in shard 3's leader's log.
	b.shards[2].StoppedAt = 59
	if b.passed(v) {
		t.Fatal("shard 3 still holds the follower's next entry")
	}
	if (&behind{}).passed(v) {
		t.Fatal("no shards is not passed")
	}
}

func TestCaughtUpBySnapshot(t *testing.T) {
	st := mustStatus(t, statusJSON)
	res := catchUpResult{Shards: []shardCatchUp{{ShardID: 1}, {ShardID: 2}}}
	if err := res.caughtUpBySnapshot(st); err != nil {
		t.Fatal(err)
	}
	if res.SnapshotsReceived != 3 || res.Shards[1].SnapshotsReceived != 2 {
		t.Fatalf("counted %+v", res)
	}
	res = catchUpResult{Shards: []shardCatchUp{{ShardID: 1}, {ShardID: 3}}}
	if err := res.caughtUpBySnapshot(st); !errors.Is(err, errNoSnapshot) {
		t.Fatalf("shard 3 installed nothing: %v", err)
	}
	// A keeld without per-shard counters is not checked.
	old := mustStatus(t, `{"applied_index":9}`)
	if err := (&catchUpResult{Shards: []shardCatchUp{{ShardID: 1}}}).caughtUpBySnapshot(old); err != nil {
		t.Fatal(err)
	}
}
