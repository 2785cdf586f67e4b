package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/proctest"
)

// catchUpTimeout bounds how long a restarted or joining replica may take to
// see a value.
const catchUpTimeout = 60 * time.Second

// startCluster starts three keeld processes forming one shard, retrying with
// fresh ports when one lost a port race.
func startCluster(t *testing.T) []*node { t.Helper(); return startClusterWith(t) }

// startClusterWith is startCluster with more flags for every process.
func startClusterWith(t *testing.T, extra ...string) []*node {
	t.Helper()
	dir := t.TempDir()
	dirs := make([]string, 3)
	for i := range dirs {
		dirs[i] = filepath.Join(dir, fmt.Sprintf("r%d", i+1))
	}
	return startClusterOn(t, dirs, extra...)
}

// staleValue reads key from n's local replica.
func staleValue(n *node, key string) error {
	resp, err := httpc.Get(n.url("/kv/" + key + "?stale=true"))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b [64]byte
	m, _ := resp.Body.Read(b[:])
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b[:m])
	}
	return nil
}

func TestThreeReplicaCluster(t *testing.T) {
	nodes := startCluster(t)

	// Write through one replica, read linearizably through another: the
	// read must see the acknowledged write whichever replica leads.
	mustDo(t, http.StatusNoContent, "PUT", nodes[0].url("/kv/x"), []byte("1"))
	if got := mustDo(t, http.StatusOK, "GET", nodes[1].url("/kv/x"), nil); string(got) != "1" {
		t.Fatalf("linearizable read via replica 2 = %q, want 1", got)
	}
	st := nodes[2].status()
	if len(st.Members) != 3 {
		t.Fatalf("members %v, want 3", st.Members)
	}

	// Crash a follower, write while it is down, restart it: it catches up
	// from the leader's log.
	var follower, other *node
	for _, n := range nodes {
		if follower == nil && !n.status().IsLeader {
			follower = n
		} else if other == nil {
			other = n
		}
	}
	follower.kill()
	for i := 0; i < 10; i++ {
		mustDo(t, http.StatusNoContent, "PUT", other.url(fmt.Sprintf("/kv/down-%d", i)), []byte("v"))
	}
	follower.start()
	if err := follower.waitReady(); err != nil {
		t.Fatal(err)
	}
	proctest.Eventually(t, "restarted follower sees the writes made while it was down", catchUpTimeout, func() error {
		return staleValue(follower, "down-9")
	})
	if got := mustDo(t, http.StatusOK, "GET", follower.url("/kv/x"), nil); string(got) != "1" {
		t.Fatalf("x on restarted follower = %q", got)
	}
	// Writes through the restarted replica work too.
	mustDo(t, http.StatusNoContent, "PUT", follower.url("/kv/y"), []byte("2"))
	for _, n := range nodes {
		proctest.Eventually(t, n.name+" sees y", catchUpTimeout, func() error { return staleValue(n, "y") })
	}

	// Without a quorum, writes and linearizable reads answer 503 with a
	// JSON error once their deadline passes; stale reads still answer.
	last := nodes[2]
	nodes[0].kill()
	nodes[1].kill()
	for _, req := range []struct{ method, path string }{{"PUT", "/kv/z"}, {"GET", "/kv/y"}} {
		resp, err := httpc.Do(mustRequest(t, req.method, last.url(req.path), []byte("v")))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		derr := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || derr != nil || e.Error == "" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s %s without quorum: %d %q (%v), want 503 with a JSON error and Retry-After", req.method, req.path, resp.StatusCode, e.Error, derr)
		}
	}
	if err := staleValue(last, "y"); err != nil {
		t.Fatalf("stale read without quorum: %v", err)
	}
}

func mustRequest(t *testing.T, method, url string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestJoinAndRemove grows a one-replica shard through the admin API and a
// --join process, then removes the new member again.
func TestJoinAndRemove(t *testing.T) {
	first := startSingle(t)
	mustDo(t, http.StatusNoContent, "PUT", first.url("/kv/before-join"), []byte("v"))

	// A replica ID cannot be reused once removed, so a port clash on the
	// joining process is retried under the next ID.
	var second *node
	var id uint64
	for id = 2; ; id++ {
		second = newNode(t, fmt.Sprintf("replica-%d", id), filepath.Join(t.TempDir(), "joiner"),
			"--replica-id", fmt.Sprint(id), "--join")
		// The addr goes in the body as a form, as curl -d would send it.
		mustDo(t, http.StatusOK, "POST", first.url(fmt.Sprintf("/admin/members/%d", id)), []byte("addr="+second.raftAddr))
		second.start()
		err := second.waitReady()
		if err == nil {
			break
		}
		if !errors.Is(err, errAddrInUse) || id >= 5 {
			t.Fatal(err)
		}
		t.Logf("port clash, retrying")
		mustDo(t, http.StatusOK, "DELETE", first.url(fmt.Sprintf("/admin/members/%d", id)), nil)
	}
	proctest.Eventually(t, "joined replica catches up", catchUpTimeout, func() error {
		return staleValue(second, "before-join")
	})
	st := first.status()
	if st.Members[fmt.Sprint(id)] != second.raftAddr {
		t.Fatalf("members %v lack replica %d at %s", st.Members, id, second.raftAddr)
	}

	// Restarting a joined replica works with the same flags.
	second.stopWith(syscall.SIGTERM)
	second.start()
	if err := second.waitReady(); err != nil {
		t.Fatal(err)
	}

	mustDo(t, http.StatusOK, "DELETE", first.url(fmt.Sprintf("/admin/members/%d", id)), nil)
	proctest.Eventually(t, "the joined replica leaves the membership", catchUpTimeout, func() error {
		if m := first.status().Members; len(m) != 1 {
			return fmt.Errorf("members %v", m)
		}
		return nil
	})
	// The shard still takes writes with one replica.
	mustDo(t, http.StatusNoContent, "PUT", first.url("/kv/after-remove"), []byte("v"))
}
