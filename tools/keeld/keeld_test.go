package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/keel-db/keel/internal/testkit/proctest"
)

type scanBody struct {
	Pairs []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"pairs"`
	More    bool   `json:"more"`
	NextKey string `json:"next_key"`
}

type txnBody struct {
	Succeeded  bool `json:"succeeded"`
	FailedCond *int `json:"failed_cond"`
}

func TestKVOverHTTP(t *testing.T) {
	n := startSingle(t)

	// /status reads the membership through the leader, or locally when
	// asked (members=local: a monitor's poll then wakes no shard).
	if st := n.status(); st.MembersFrom != "consensus" || len(st.Members) != 1 {
		t.Fatalf("/status members %v from %q, want one member by consensus", st.Members, st.MembersFrom)
	}
	var local statusBody
	if err := proctest.GetJSON(httpc, n.url("/status?members=local"), &local); err != nil {
		t.Fatal(err)
	}
	if local.MembersFrom != "local" || len(local.Members) != 1 || local.LeaderID == 0 {
		t.Fatalf("/status?members=local: members %v from %q, leader %d", local.Members, local.MembersFrom, local.LeaderID)
	}
	if code, body := do(t, "GET", n.url("/status?members=all"), nil); code != http.StatusBadRequest {
		t.Fatalf("/status?members=all: %d %s, want 400", code, body)
	}

	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/hello"), []byte("world"))
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/hello"), nil); string(got) != "world" {
		t.Fatalf("GET hello = %q, want world", got)
	}
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/hello?stale=true"), nil); string(got) != "world" {
		t.Fatalf("stale GET hello = %q, want world", got)
	}
	// An empty value is a value, not a missing key.
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/empty"), nil)
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/empty"), nil); len(got) != 0 {
		t.Fatalf("GET empty = %q, want empty", got)
	}
	// The key is the raw path after /kv/, unescaped: slashes, dots and
	// escaped bytes survive without being cleaned.
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/dir//a/../b%2Fc%20d"), []byte("odd"))
	body := mustDo(t, http.StatusOK, "GET", n.url("/kv?prefix=dir/"), nil)
	var sc scanBody
	decode(t, body, &sc)
	if len(sc.Pairs) != 1 || sc.Pairs[0].Key != "dir//a/../b/c d" || sc.Pairs[0].Value != "odd" {
		t.Fatalf("scan prefix dir/ = %s", body)
	}

	code, body := do(t, "GET", n.url("/kv/missing"), nil)
	if code != http.StatusNotFound || !bytes.Contains(body, []byte(`"error"`)) {
		t.Fatalf("GET missing: %d %s, want 404 with a JSON error", code, body)
	}

	// Scan: pages, limit, more and next_key.
	for i := 0; i < 5; i++ {
		mustDo(t, http.StatusNoContent, "PUT", n.url(fmt.Sprintf("/kv/s/%d", i)), []byte(fmt.Sprint("v", i)))
	}
	decode(t, mustDo(t, http.StatusOK, "GET", n.url("/kv?prefix=s/&limit=2"), nil), &sc)
	if len(sc.Pairs) != 2 || sc.Pairs[0].Key != "s/0" || sc.Pairs[1].Value != "v1" || !sc.More || sc.NextKey != "s/2" {
		t.Fatalf("first page: %+v", sc)
	}
	decode(t, mustDo(t, http.StatusOK, "GET", n.url("/kv?prefix=s/&start="+sc.NextKey+"&limit=10"), nil), &sc)
	if len(sc.Pairs) != 3 || sc.Pairs[0].Key != "s/2" || sc.More {
		t.Fatalf("second page: %+v", sc)
	}
	decode(t, mustDo(t, http.StatusOK, "GET", n.url("/kv?start=s/1&end=s/3&stale=true"), nil), &sc)
	if len(sc.Pairs) != 2 || sc.Pairs[0].Key != "s/1" || sc.Pairs[1].Key != "s/2" {
		t.Fatalf("range [s/1, s/3): %+v", sc)
	}

	// Txn: success, then a precondition failure that reports its position
	// and writes nothing.
	var tr txnBody
	decode(t, mustDo(t, http.StatusOK, "POST", n.url("/txn"),
		[]byte(`{"if":[{"key":"hello","equals":"world"},{"key":"lock","absent":true}],
		         "then":[{"put":"lock","value":"me"},{"delete":"hello"}]}`)), &tr)
	if !tr.Succeeded || tr.FailedCond != nil {
		t.Fatalf("txn: %+v, want success", tr)
	}
	mustDo(t, http.StatusNotFound, "GET", n.url("/kv/hello"), nil)
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/lock"), nil); string(got) != "me" {
		t.Fatalf("lock = %q", got)
	}
	decode(t, mustDo(t, http.StatusOK, "POST", n.url("/txn"),
		[]byte(`{"if":[{"key":"lock","exists":true},{"key":"lock","absent":true}],"then":[{"put":"lock","value":"you"}]}`)), &tr)
	if tr.Succeeded || tr.FailedCond == nil || *tr.FailedCond != 1 {
		t.Fatalf("txn: %+v, want failure at condition 1", tr)
	}
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/lock"), nil); string(got) != "me" {
		t.Fatalf("failed txn wrote: lock = %q", got)
	}

	mustDo(t, http.StatusNoContent, "DELETE", n.url("/kv/lock"), nil)
	mustDo(t, http.StatusNotFound, "GET", n.url("/kv/lock"), nil)
	// Deleting a missing key succeeds.
	mustDo(t, http.StatusNoContent, "DELETE", n.url("/kv/lock"), nil)

	st := n.status()
	if !st.IsLeader || st.ReplicaID != 1 || st.Keys != 7 || st.Members["1"] != n.raftAddr {
		t.Fatalf("status: %+v, want leader 1 with 7 keys and itself as member", st)
	}

	var snap struct{ Index uint64 }
	decode(t, mustDo(t, http.StatusOK, "POST", n.url("/admin/snapshot"), nil), &snap)
	if snap.Index == 0 {
		t.Fatal("snapshot index 0")
	}
	// Dragonboat refuses a second snapshot at the same index: 409, JSON.
	if code, body := do(t, "POST", n.url("/admin/snapshot"), nil); code != http.StatusConflict || !bytes.Contains(body, []byte(`"error"`)) {
		t.Fatalf("repeated snapshot: %d %s, want 409 with a JSON error", code, body)
	}
	metrics := string(mustDo(t, http.StatusOK, "GET", n.url("/metrics"), nil))
	for _, want := range []string{
		`keel_http_requests_total{code="204",endpoint="kv"}`,
		`keel_proposal_duration_seconds_count{op="txn"} 2`,
		`keel_is_leader{replica="1",shard="1"} 1`, `keel_engine_keys{replica="1",shard="1"} 7`,
		`keel_disk_usage_bytes{component="sm"}`, `keel_applied_index{replica="1",shard="1"} `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestRestartKeepsData(t *testing.T) {
	n := startSingle(t)
	for i := 0; i < 20; i++ {
		mustDo(t, http.StatusNoContent, "PUT", n.url(fmt.Sprintf("/kv/k%02d", i)), []byte(fmt.Sprint("v", i)))
	}
	// A snapshot compacts the Raft log behind the state machine, so the
	// restart below must rely on Keel's own durable state for those entries.
	mustDo(t, http.StatusOK, "POST", n.url("/admin/snapshot"), nil)
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/after-snapshot"), []byte("x"))

	n.stopWith(syscall.SIGTERM)
	n.start()
	if err := n.waitReady(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		got := mustDo(t, http.StatusOK, "GET", n.url(fmt.Sprintf("/kv/k%02d", i)), nil)
		if want := fmt.Sprint("v", i); string(got) != want {
			t.Fatalf("k%02d = %q after restart, want %q", i, got, want)
		}
	}
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/after-snapshot"), nil); string(got) != "x" {
		t.Fatalf("after-snapshot = %q", got)
	}
	// Writes keep working after the restart, and SIGINT stops cleanly too.
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/again"), []byte("y"))
	n.stopWith(syscall.SIGINT)
}

func TestMalformedRequests(t *testing.T) {
	n := startSingle(t)
	big := bytes.Repeat([]byte("x"), 3<<20)
	overValue := bytes.Repeat([]byte("x"), 1<<20+1)
	longKey := strings.Repeat("k", 4097)
	cases := []struct {
		name   string
		method string
		path   string
		body   []byte
		want   int
	}{
		{"txn not JSON", "POST", "/txn", []byte("{nope"), 400},
		{"txn trailing data", "POST", "/txn", []byte(`{"then":[{"delete":"a"}]} {}`), 400},
		{"txn unknown field", "POST", "/txn", []byte(`{"then":[{"delete":"a"}],"else":[]}`), 400},
		{"txn no ops", "POST", "/txn", []byte(`{"if":[{"key":"a","absent":true}],"then":[]}`), 400},
		{"txn two kinds", "POST", "/txn", []byte(`{"if":[{"key":"a","absent":true,"exists":true}],"then":[{"delete":"a"}]}`), 400},
		{"txn no kind", "POST", "/txn", []byte(`{"if":[{"key":"a"}],"then":[{"delete":"a"}]}`), 400},
		{"txn cond no key", "POST", "/txn", []byte(`{"if":[{"absent":true}],"then":[{"delete":"a"}]}`), 400},
		{"txn put no value", "POST", "/txn", []byte(`{"then":[{"put":"a"}]}`), 400},
		{"txn put and delete", "POST", "/txn", []byte(`{"then":[{"put":"a","value":"1","delete":"b"}]}`), 400},
		{"txn empty key", "POST", "/txn", []byte(`{"then":[{"delete":""}]}`), 400},
		{"txn wrong type", "POST", "/txn", []byte(`{"then":[{"put":1,"value":2}]}`), 400},
		{"txn null", "POST", "/txn", []byte(`null`), 400},
		{"txn oversized", "POST", "/txn", big, 413},
		{"put empty key", "PUT", "/kv/", []byte("v"), 400},
		{"get empty key", "GET", "/kv/", nil, 400},
		{"put key too long", "PUT", "/kv/" + longKey, []byte("v"), 400},
		{"put oversized body", "PUT", "/kv/big", big, 413},
		{"put value over limit", "PUT", "/kv/big", overValue, 413},
		{"bad stale", "GET", "/kv/a?stale=maybe", nil, 400},
		{"unknown path", "GET", "/nope", nil, 404},
		{"unknown admin path", "POST", "/admin/nope", nil, 404},
		{"bad limit", "GET", "/kv?limit=ten", nil, 400},
		{"negative limit", "GET", "/kv?limit=-1", nil, 400},
		{"limit too big", "GET", "/kv?limit=10001", nil, 400},
		{"bad encoding", "GET", "/kv?encoding=hex", nil, 400},
		{"wrong method kv", "POST", "/kv/a", []byte("v"), 405},
		{"wrong method txn", "GET", "/txn", nil, 405},
		{"wrong method scan", "DELETE", "/kv", nil, 405},
		{"wrong method status", "POST", "/status", nil, 405},
		{"bad member id", "POST", "/admin/members/zero?addr=127.0.0.1:1", nil, 400},
		{"member without addr", "POST", "/admin/members/5", nil, 400},
		{"member bad addr", "POST", "/admin/members/5", []byte("addr=nope"), 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := do(t, c.method, n.url(c.path), c.body)
			if code != c.want {
				t.Fatalf("status %d, want %d; body %s", code, c.want, body)
			}
			var e struct{ Error string }
			decode(t, body, &e)
			if e.Error == "" {
				t.Fatalf("no error message in %s", body)
			}
		})
	}
	// Nothing above broke the server or wrote anything.
	st := n.status()
	if st.Keys != 0 {
		t.Fatalf("malformed requests wrote %d keys", st.Keys)
	}
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/ok"), []byte("v"))
}

func TestBadFlagsExit2(t *testing.T) {
	cases := [][]string{
		{"--no-such-flag"},
		{"--shard-id", "0"},
		{"--replica-id", "x"},
		{"--members", "1=127.0.0.1"},
		{"--members", "1=127.0.0.1:5,1=127.0.0.1:6"},
		{"--members", "2=127.0.0.1:5"},
		{"--join", "--members", "1=127.0.0.1:5"},
		{"--http", "localhost"},
		{"--raft-addr", "127.0.0.1:0"},
		{"--log-level", "loud"},
		{"--data-dir", ""},
		{"stray"},
	}
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := t.TempDir()
			code, out := runKeeld(t, dir, args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2; output %q", code, out)
			}
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "keeld: ") {
				t.Fatalf("want one line starting with %q, got %q", "keeld: ", out)
			}
			if strings.Contains(out, "panic") {
				t.Fatalf("panicked: %s", out)
			}
			// A refused command line leaves nothing behind.
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("created %s in the working directory", ents[0].Name())
			}
		})
	}
}

// TestWrongReplicaOnDataDir: a data directory belongs to one replica; keeld
// refuses to start another replica ID (or another Raft address) on it,
// with exit status 1 and a message, and leaves the data usable.
func TestWrongReplicaOnDataDir(t *testing.T) {
	n := startSingle(t)
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/k"), []byte("v"))
	n.stopWith(syscall.SIGTERM)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--replica-id", "2", "--members", "2=" + n.raftAddr}, "holds replica 1 of shard 1"},
		{[]string{"--raft-addr", proctest.FreeAddrs(t, 1)[0]}, "another --raft-addr"},
	} {
		args := append([]string{"--data-dir", n.dataDir, "--http", proctest.FreeAddrs(t, 1)[0], "--raft-addr", n.raftAddr}, c.args...)
		if code, out := runKeeld(t, "", args...); code != 1 || !strings.Contains(out, c.want) {
			t.Fatalf("%v: exit %d, output %q; want exit 1 mentioning %q", c.args, code, out, c.want)
		}
	}

	n.start()
	if err := n.waitReady(); err != nil {
		t.Fatal(err)
	}
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/k"), nil); string(got) != "v" {
		t.Fatalf("k = %q", got)
	}
}
