package main

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keel-db/keel/internal/testkit/proctest"
)

// ackWriter writes keys of one shard in a loop, through every process in
// turn, and records the last acknowledged value of each key. A write that
// gets no answer is retried with the same value until it is acknowledged,
// so each key's last acknowledged value is the last value written to it.
type ackWriter struct {
	mu    sync.Mutex
	acked map[string]string // guarded by mu
	n     atomic.Int64      // acknowledged writes
	stop  chan struct{}
	done  chan error
}

func startAckWriter(nodes []*node, keys []string, limit int) *ackWriter {
	w := &ackWriter{acked: map[string]string{}, stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		w.done <- func() error {
			for i := 0; i < limit; i++ {
				select {
				case <-w.stop:
					return nil
				default:
				}
				k, v := keys[i%len(keys)], fmt.Sprintf("v%06d", i)
				if err := putRetry(nodes[i%len(nodes)], k, v); err != nil {
					return err
				}
				w.mu.Lock()
				w.acked[k] = v
				w.mu.Unlock()
				w.n.Add(1)
			}
			return errors.New("the writer reached its bound before the test stopped it")
		}()
	}()
	return w
}

// waitMore waits until n more writes than after were acknowledged, and
// fails the test if the writer stopped.
func (w *ackWriter) waitMore(t *testing.T, what string, after, n int64) {
	t.Helper()
	proctest.Eventually(t, what, 2*readyTimeout, func() error {
		select {
		case err := <-w.done:
			return proctest.Abort(fmt.Errorf("writer stopped: %v", err))
		default:
		}
		if got := w.n.Load() - after; got < n {
			return fmt.Errorf("%d writes acknowledged, want %d", got, n)
		}
		return nil
	})
}

// TestMoveShardReplica moves shard 1's replica from host 1 to host 4, which
// did not host it, by membership change while a writer keeps writing to
// the shard: add replica 4, join it on host 4 (POST
// /admin/shards/1/join), wait until it caught up (by snapshot: the log was
// compacted), delete replica 1 on host 1. No acknowledged write is lost,
// the new replica's StateHash equals the others', host 4 keeps the
// replica across a SIGKILL and restart with the old map, and host 1,
// restarted with the old map, does not start the removed replica again.
// README's recipe is these steps.
func TestMoveShardReplica(t *testing.T) {
	const hosts, shards, shard = 4, 4, 1
	m := startShardMap(t, hosts, shards, func(s int) []uint64 {
		return []uint64{uint64(s), uint64(s%hosts + 1), uint64((s+1)%hosts + 1)}
	}, "--log-keep-entries", "200")
	from, to := m.nodes[0], m.nodes[3]
	for _, s := range m.shardsOn(4) {
		if s == shard {
			t.Fatalf("host 4 already hosts shard %d", shard)
		}
	}

	tag := tagFor(t, shard, shards)
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprintf("mv{%s}%02d", tag, i)
	}
	w := startAckWriter(m.nodes, keys, 200000)
	stopped := false
	stopWriter := func() {
		if !stopped {
			stopped = true
			close(w.stop)
		}
	}
	t.Cleanup(stopWriter)

	// Enough writes that the compactor (window 200) has cut the log, so
	// the joining replica cannot be sent the log from the start.
	w.waitMore(t, "writes before the move", 0, 600)
	for _, n := range m.hostsOf(shard) {
		proctest.Eventually(t, fmt.Sprintf("%s compacted shard %d's log", n.name, shard), readyTimeout, func() error {
			lines, err := shardLines(n)
			if err != nil {
				return err
			}
			if lines[shard].LogFirstIndex > 1 {
				return nil
			}
			code, body := do(t, "POST", n.url(fmt.Sprintf("/admin/shards/%d/snapshot", shard)), nil)
			return fmt.Errorf("log_first_index %d (snapshot: %d %s)", lines[shard].LogFirstIndex, code, body)
		})
	}

	// 1. Add replica 4, through host 4 (which forwards it to a host of
	// the shard).
	mustDo(t, http.StatusOK, "POST", to.url(fmt.Sprintf("/admin/shards/%d/members/4?addr=%s", shard, to.raftAddr)), nil)
	// 2. Host 4 starts its replica, joining.
	mustDo(t, http.StatusOK, "POST", to.url(fmt.Sprintf("/admin/shards/%d/join", shard)), nil)
	code, body := do(t, "POST", to.url(fmt.Sprintf("/admin/shards/%d/join", shard)), nil)
	if code != http.StatusConflict {
		t.Fatalf("second join: %d %s, want 409", code, body)
	}
	// 3. Wait until it caught up with the leader as of now.
	var target uint64
	for _, n := range m.hostsOf(shard) {
		lines, err := shardLines(n)
		if err != nil {
			t.Fatal(err)
		}
		target = max(target, lines[shard].AppliedIndex)
	}
	proctest.Eventually(t, "the new replica caught up", 2*readyTimeout, func() error {
		lines, err := shardLines(to)
		if err != nil {
			return err
		}
		l, ok := lines[shard]
		if !ok {
			return fmt.Errorf("%s does not list shard %d", to.name, shard)
		}
		if l.AppliedIndex < target {
			return fmt.Errorf("applied index %d, want >= %d", l.AppliedIndex, target)
		}
		// The log was compacted, so it must have come by snapshot. The
		// counter moves just after the applied index does (the old image
		// is closed in between), hence checked in the same wait.
		if l.SnapshotsReceived == 0 {
			return fmt.Errorf("applied index %d reached without receiving a snapshot (log compacted)", l.AppliedIndex)
		}
		return nil
	})
	after := w.n.Load()
	w.waitMore(t, "writes with four replicas", after, 100)

	// 4. Remove replica 1, on host 1, which deletes its data.
	var del struct {
		Removed    uint64 `json:"removed"`
		FreedBytes *int64 `json:"freed_bytes"`
	}
	decode(t, mustDo(t, http.StatusOK, "DELETE", from.url(fmt.Sprintf("/admin/shards/%d/members/1", shard)), nil), &del)
	if del.Removed != 1 || del.FreedBytes == nil {
		t.Fatalf("DELETE replica 1: %+v, want it removed and its data freed", del)
	}
	after = w.n.Load()
	w.waitMore(t, "writes after the move", after, 200)
	stopWriter()
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}

	now := []*node{m.nodes[1], m.nodes[2], to}
	proctest.Eventually(t, "every replica sees the new membership", readyTimeout, func() error {
		for _, n := range now {
			lines, err := shardLines(n)
			if err != nil {
				return err
			}
			mem := lines[shard].Members
			if len(mem) != 3 || mem["4"] != to.raftAddr || mem["1"] != "" {
				return fmt.Errorf("%s: members %v", n.name, mem)
			}
		}
		return nil
	})
	checkAcked := func() {
		t.Helper()
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.acked) != len(keys) {
			t.Fatalf("%d keys acknowledged, want %d", len(w.acked), len(keys))
		}
		for k, v := range w.acked {
			for _, n := range m.nodes {
				if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/"+k), nil); string(got) != v {
					t.Fatalf("GET %s via %s = %q, last acknowledged %q", k, n.name, got, v)
				}
			}
		}
	}
	checkAcked()
	h := waitHashesEqual(t, shard, now)
	if code, body := do(t, "GET", from.url(fmt.Sprintf("/admin/shards/%d/hash", shard)), nil); code != http.StatusNotFound {
		t.Fatalf("hash of the removed replica: %d %s, want 404", code, body)
	}
	t.Logf("moved shard %d from host 1 to host 4 under %d acknowledged writes; %d keys, applied index %d", shard, w.n.Load(), h.Keys, h.AppliedIndex)

	// Host 4 restarts with the old map, which does not place shard 1 on
	// it: the joined replica comes back from its data.
	to.kill()
	to.start()
	waitShardsReady(t, to, len(m.shardsOn(4))+1)
	// Host 1 restarts with the old map too, which still places shard 1 on
	// it: it recorded the removal, so it does not start replica 1 anew
	// (from nothing, under a removed ID) and cannot join again.
	from.kill()
	from.start()
	waitShardsReady(t, from, len(m.shardsOn(1))-1)
	if lines, err := shardLines(from); err != nil || lines[shard].ShardID != 0 {
		t.Fatalf("host 1 after restart: %v, shard %d: %+v", err, shard, lines[shard])
	}
	if code, body := do(t, "POST", from.url(fmt.Sprintf("/admin/shards/%d/join", shard)), nil); code != http.StatusConflict {
		t.Fatalf("host 1 joining shard %d again: %d %s, want 409", shard, code, body)
	}
	checkAcked()
	waitHashesEqual(t, shard, now)
}
