package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/keel-db/keel/internal/testkit/proctest"
	"github.com/keel-db/keel/internal/testkit/testutil"
)

// jsonError sends a request that must fail with status want and a JSON
// error; it returns the message.
func jsonError(t *testing.T, want int, method, url string, body []byte) string {
	t.Helper()
	code, b := do(t, method, url, body)
	var e struct{ Error string }
	if code != want || json.Unmarshal(b, &e) != nil || e.Error == "" {
		t.Fatalf("%s %s: %d %s; want %d with a JSON error", method, url, code, b, want)
	}
	return e.Error
}

// TestQueryParamsRefused: a query parameter an endpoint does not read, one
// given twice, or a bad percent-escape is refused with a JSON 400 and does
// nothing. These were ignored: ?prefx= scanned everything and
// POST /admin/export?dir=X wrote to --export-dir with 200.
func TestQueryParamsRefused(t *testing.T) {
	exportDir := filepath.Join(t.TempDir(), "exports")
	n := startSingle(t, "--export-dir", exportDir)
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/a"), []byte("1"))
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/kv?prefx=a", `unknown query parameter "prefx"`},
		{"GET", "/kv?start=%%%", "invalid URL escape"},
		{"GET", "/kv?limit=1&limit=2", "given 2 times"},
		{"GET", "/kv?prefix=a;b", "semicolon"},
		{"GET", "/kv/a?stael=true", `unknown query parameter "stael"`},
		{"PUT", "/kv/a?stale=true", "takes none"},
		{"DELETE", "/kv/a?x=1", "takes none"},
		{"POST", "/txn?dry_run=1", "takes none"},
		{"GET", "/status?verbose=1", "takes members"},
		{"GET", "/metrics?name=x", "takes none"},
		{"POST", "/admin/snapshot?x=1", "takes none"},
		{"POST", "/admin/export?dir=" + url.QueryEscape(t.TempDir()), `unknown query parameter "dir"`},
		{"POST", "/admin/members/5?adr=127.0.0.1:1", `unknown query parameter "adr"`},
		{"DELETE", "/admin/members/5?force=1", "takes none"},
	} {
		msg := jsonError(t, http.StatusBadRequest, c.method, n.url(c.path), nil)
		if !strings.Contains(msg, c.want) {
			t.Errorf("%s %s: error %q lacks %q", c.method, c.path, msg, c.want)
		}
	}
	if _, err := os.Stat(exportDir); !os.IsNotExist(err) {
		t.Fatalf("a refused export wrote %s: %v", exportDir, err)
	}
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/a"), nil); string(got) != "1" {
		t.Fatalf("a = %q after refused requests", got)
	}
}

// TestScanBinaryKeysPaging is a property test: random binary keys (with
// 0x00, 0xFF, invalid UTF-8, and keys that prefix each other), paged with
// encoding=base64 and a small limit, come back each exactly once and in
// order, with start and prefix given in base64. Before, start was read raw
// while next_key came back base64, so paging jumped or repeated.
func TestScanBinaryKeysPaging(t *testing.T) {
	rng := rand.New(rand.NewPCG(testutil.Seed(t), 0))
	n := startSingle(t)
	keys := map[string]bool{}
	alphabet := []byte{0x00, 0x01, 'a', 0x7f, 0x80, 0xc3, 0xfe, 0xff}
	for len(keys) < 60 {
		k := make([]byte, 1+rng.IntN(4))
		for i := range k {
			k[i] = alphabet[rng.IntN(len(alphabet))]
		}
		keys[string(k)] = true
	}
	for k := range keys {
		mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/"+url.PathEscape(k)), []byte(k))
	}
	want := make([]string, 0, len(keys))
	for k := range keys {
		want = append(want, k)
	}
	sort.Strings(want) // bytewise, as Pebble orders keys

	type page struct {
		Pairs []struct{ Key, Value []byte } `json:"pairs"`
		More  bool                          `json:"more"`
		Next  []byte                        `json:"next_key"`
	}
	scanAll := func(prefix []byte) []string {
		var got []string
		var start []byte
		for pages := 0; ; pages++ {
			if pages > len(keys)+1 {
				t.Fatalf("prefix %x: paging did not end after %d pages", prefix, pages)
			}
			q := url.Values{"encoding": {"base64"}, "limit": {fmt.Sprint(1 + rng.IntN(4))}}
			if prefix != nil {
				q.Set("prefix", base64.StdEncoding.EncodeToString(prefix))
			}
			if start != nil {
				q.Set("start", base64.StdEncoding.EncodeToString(start))
			}
			var p page
			decode(t, mustDo(t, http.StatusOK, "GET", n.url("/kv?"+q.Encode()), nil), &p)
			for _, kv := range p.Pairs {
				if !bytes.Equal(kv.Key, kv.Value) {
					t.Fatalf("key %x has value %x", kv.Key, kv.Value)
				}
				got = append(got, string(kv.Key))
			}
			if !p.More {
				return got
			}
			start = p.Next
		}
	}
	if got := scanAll(nil); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("paged scan:\n got %q\nwant %q", got, want)
	}
	prefix := []byte(want[rng.IntN(len(want))][:1])
	var wantP []string
	for _, k := range want {
		if strings.HasPrefix(k, string(prefix)) {
			wantP = append(wantP, k)
		}
	}
	if got := scanAll(prefix); strings.Join(got, "|") != strings.Join(wantP, "|") {
		t.Fatalf("paged scan of prefix %x:\n got %q\nwant %q", prefix, got, wantP)
	}

	// Without base64 a key that is not UTF-8 cannot be a JSON string: the
	// scan is refused with a pointer to encoding=base64 rather than
	// answered with U+FFFD in its place.
	if msg := jsonError(t, http.StatusBadRequest, "GET", n.url("/kv"), nil); !strings.Contains(msg, "encoding=base64") {
		t.Fatalf("non-UTF-8 scan without base64: %q", msg)
	}
	// A start that is not base64, and a "+" sent unescaped (a space).
	jsonError(t, http.StatusBadRequest, "GET", n.url("/kv?encoding=base64&start=%%21"), nil)
	if msg := jsonError(t, http.StatusBadRequest, "GET", n.url("/kv?encoding=base64&start=a+b="), nil); !strings.Contains(msg, "%2B") {
		t.Fatalf("unescaped + in base64: %q", msg)
	}
}

// TestTxnStrictJSON: a name given twice, text that is not UTF-8 and lone
// surrogate escapes are refused (encoding/json let the last "then" win and
// turned both kinds of bytes into U+FFFD); error messages name no Go
// types; with "encoding":"base64" binary keys and values go through.
func TestTxnStrictJSON(t *testing.T) {
	n := startSingle(t)
	for _, c := range []struct {
		name, body, want string
	}{
		{"then twice", `{"then":[{"put":"a","value":"1"}],"then":[{"put":"b","value":"2"}]}`, `"then" twice`},
		{"key twice in op", `{"then":[{"put":"a","put":"b","value":"1"}]}`, `"put" twice`},
		{"invalid utf-8", "{\"then\":[{\"put\":\"\xff\",\"value\":\"1\"}]}", "UTF-8"},
		{"lone high surrogate", `{"then":[{"put":"\ud800","value":"1"}]}`, "surrogate"},
		{"lone low surrogate", `{"then":[{"put":"\udc00x","value":"1"}]}`, "surrogate"},
		{"array body", `[]`, "must be a JSON object, not an array"},
		{"string body", `"x"`, "must be a JSON object, not a string"},
		{"null body", `null`, "must be a JSON object"},
		{"wrong type", `{"then":[{"put":1,"value":"v"}]}`, `"then.put" must be a string, not a number`},
		{"then not array", `{"then":{}}`, `"then" must be an array, not an object`},
		{"bad encoding", `{"encoding":"hex","then":[{"delete":"a"}]}`, "only \"base64\""},
		{"bad base64", `{"encoding":"base64","then":[{"delete":"!!"}]}`, "then[0].delete is not standard base64"},
	} {
		msg := jsonError(t, http.StatusBadRequest, "POST", n.url("/txn"), []byte(c.body))
		if !strings.Contains(msg, c.want) || strings.Contains(msg, "main.") || strings.Contains(msg, "Go ") {
			t.Errorf("%s: error %q; want it to say %q and name no Go types", c.name, msg, c.want)
		}
	}
	// A valid surrogate pair is one character, not refused.
	mustDo(t, http.StatusOK, "POST", n.url("/txn"), []byte(`{"then":[{"put":"\ud83d\ude00","value":"smile"}]}`))
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/"+url.PathEscape("\U0001F600")), nil); string(got) != "smile" {
		t.Fatalf("surrogate-pair key = %q", got)
	}
	b64 := base64.StdEncoding.EncodeToString
	k1, k2, v := []byte{0xff, 0x00}, []byte{0xff, 0x01}, []byte{0x80, 0x81}
	body := fmt.Sprintf(`{"encoding":"base64","if":[{"key":%q,"absent":true}],"then":[{"put":%q,"value":%q},{"put":%q,"value":%q}]}`,
		b64(k1), b64(k1), b64(v), b64(k2), b64(k1))
	var tr txnBody
	decode(t, mustDo(t, http.StatusOK, "POST", n.url("/txn"), []byte(body)), &tr)
	if !tr.Succeeded {
		t.Fatalf("base64 txn: %+v", tr)
	}
	for k, want := range map[string][]byte{string(k1): v, string(k2): k1} {
		if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/"+url.PathEscape(k)), nil); !bytes.Equal(got, want) {
			t.Fatalf("key %x = %x, want %x", k, got, want)
		}
	}
	body = fmt.Sprintf(`{"encoding":"base64","if":[{"key":%q,"equals":%q}],"then":[{"delete":%q}]}`, b64(k1), b64(v), b64(k2))
	decode(t, mustDo(t, http.StatusOK, "POST", n.url("/txn"), []byte(body)), &tr)
	if !tr.Succeeded {
		t.Fatalf("base64 equals txn: %+v", tr)
	}
	mustDo(t, http.StatusNotFound, "GET", n.url("/kv/"+url.PathEscape(string(k2))), nil)
}

// TestAdminErrors: removing an ID that was never a member is 404 and
// leaves the ID usable (Dragonboat would mark it removed for good); adding
// a member at an address in use, or an ID already a member, is 409 with
// the reason; a second export with nothing new says so.
func TestAdminErrors(t *testing.T) {
	n := startSingle(t, "--export-dir", filepath.Join(t.TempDir(), "exports"))
	if msg := jsonError(t, http.StatusNotFound, "DELETE", n.url("/admin/members/7"), nil); !strings.Contains(msg, "not a member") {
		t.Fatalf("delete non-member: %q", msg)
	}
	for _, c := range []struct{ path, want string }{
		{"/admin/members/2?addr=" + n.raftAddr, "in use by replica 1"},
		{"/admin/members/1?addr=127.0.0.1:1", "already a member"},
	} {
		if msg := jsonError(t, http.StatusConflict, "POST", n.url(c.path), nil); !strings.Contains(msg, c.want) {
			t.Fatalf("POST %s: %q, want %q", c.path, msg, c.want)
		}
	}
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/a"), []byte("1"))
	mustDo(t, http.StatusOK, "POST", n.url("/admin/export"), nil)
	if msg := jsonError(t, http.StatusConflict, "POST", n.url("/admin/export"), nil); !strings.Contains(msg, "nothing was applied since the last") {
		t.Fatalf("second export: %q", msg)
	}
	// ID 7 was not burnt by the refused delete.
	var st statusBody
	decode(t, mustDo(t, http.StatusOK, "GET", n.url("/status"), nil), &st)
	if len(st.Members) != 1 {
		t.Fatalf("members after refused changes: %v", st.Members)
	}
}

// TestTermWithoutLeader: a replica that cannot win an election (its one
// peer never starts) campaigns in ever higher terms; /status shows that
// term with leader 0, where it showed term 0.
func TestTermWithoutLeader(t *testing.T) {
	a := proctest.FreeAddrs(t, 3)
	n := &node{t: t, name: "keeld", dataDir: filepath.Join(t.TempDir(), "data"), httpAddr: a[0], raftAddr: a[1],
		extra: []string{"--members", "1=" + a[1] + ",2=" + a[2]}}
	n.start()
	err := proctest.WaitJSON(n.proc, httpc, n.url("/status"), readyTimeout, func(st struct {
		LeaderID uint64 `json:"leader_id"`
		Term     uint64 `json:"term"`
	}) error {
		if st.LeaderID != 0 {
			return proctest.Abort(fmt.Errorf("leader %d without a quorum", st.LeaderID))
		}
		if st.Term == 0 {
			return errors.New("term 0")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("/status while campaigning: %v", err)
	}
}

// TestDataDirLocked: a second keeld on a data directory a running one
// holds exits 1 saying so.
func TestDataDirLocked(t *testing.T) {
	n := startSingle(t)
	a := proctest.FreeAddrs(t, 2)
	code, out := runKeeld(t, "", "--data-dir", n.dataDir, "--http", a[0], "--raft-addr", a[1])
	if code != 1 || !strings.Contains(out, "another keeld holds "+n.dataDir) {
		t.Fatalf("second keeld on %s: exit %d, output %q", n.dataDir, code, out)
	}
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/still"), []byte("served"))
}
