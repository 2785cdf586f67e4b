package main

// Fuzz targets for keeld's HTTP request handling. FuzzHTTP drives a real
// single-replica keeld (serve: NodeHost, Keel state machine, HTTP server)
// started in this process; FuzzDecodeTxn hits the txn body parser alone,
// which is fast enough to explore deep JSON shapes.
//
//	go test -run '^$' -fuzz FuzzHTTP -fuzztime 60s ./tools/keeld
//	go test -run '^$' -fuzz FuzzDecodeTxn -fuzztime 60s ./tools/keeld

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keel-db/keel/sm"
)

// startFuzzServer runs serve on loopback ports in a temporary data
// directory and waits for its replica to elect itself. Cleanup stops it and
// removes the directory.
func startFuzzServer(f *testing.F) string {
	f.Helper()
	dir, err := os.MkdirTemp("", "keeld-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	var addrs []string
	for i := 0; i < 2; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	cfg, err := parseFlags([]string{"--data-dir", dir, "--http", addrs[0], "--raft-addr", addrs[1], "--log-level", "error"})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- serve(ctx, cancel, cfg, logger, io.Discard) }()
	f.Cleanup(func() {
		cancel()
		<-done
		os.RemoveAll(dir)
	})
	base := "http://" + addrs[0]
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case err := <-done:
			done <- err // the cleanup waits on done too
			f.Fatalf("keeld stopped during start-up: %v", err)
		default:
		}
		resp, err := httpc.Get(base + "/status")
		if err == nil {
			var st statusBody
			derr := json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if derr == nil && st.LeaderID != 0 {
				return base
			}
		}
		if time.Now().After(deadline) {
			f.Fatalf("in-process keeld not ready within %v", readyTimeout)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

var fuzzMethods = []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost,
	http.MethodDelete, http.MethodPatch, http.MethodOptions}

// fuzzAllowed are the statuses keeld may answer with to any request while
// its replica is healthy. A 500 means an error escaped classification.
var fuzzAllowed = map[int]bool{200: true, 204: true, 400: true, 404: true, 405: true, 409: true, 413: true, 503: true}

// FuzzHTTP sends arbitrary method, path, query and body combinations to a
// live keeld. It must never panic (net/http would recover and drop the
// connection, which shows here as a transport error), must answer with a
// status from fuzzAllowed, and every error must be a JSON {"error": ...}.
// Membership changes, snapshots and exports are not sent: they would change
// the shard's shape (a second voter that never starts leaves no quorum) or
// fill the disk, not exercise request handling.
func FuzzHTTP(f *testing.F) {
	seeds := []struct {
		m       uint8
		path, q string
		body    []byte
	}{
		{0, "/kv/a", "", nil},
		{0, "/kv/a", "stale=true", nil},
		{0, "/kv/a", "stale=maybe", nil},
		{2, "/kv/a", "", []byte("value")},
		{2, "/kv/dir//x/../y%2Fz", "", []byte("v")},
		{2, "/kv/%zz", "", nil},
		{2, "/kv/", "", nil},
		{4, "/kv/a", "", nil},
		{0, "/kv", "prefix=a&limit=10", nil},
		{0, "/kv", "start=a&end=b&limit=0&encoding=base64", nil},
		{0, "/kv", "limit=-1&encoding=hex", nil},
		{3, "/txn", "", []byte(`{"if":[{"key":"a","equals":"v"}],"then":[{"put":"a","value":"w"}]}`)},
		{3, "/txn", "", []byte(`{"if":[{"key":"a","absent":true,"exists":true}],"then":[{"delete":"a"}]}`)},
		{3, "/txn", "", []byte(`{"then":[]}`)},
		{3, "/txn", "", []byte(`{"then":[{"put":"a"}]} trailing`)},
		{0, "/status", "", nil},
		{0, "/metrics", "", nil},
		{5, "/kv/a", "", nil},
		{0, "/admin/members/x", "", nil},
		{0, "/nothing", "", nil},
		{2, "/kv/" + strings.Repeat("k", sm.MaxKeySize+1), "", nil},
	}
	for _, s := range seeds {
		f.Add(s.m, s.path, s.q, s.body)
	}
	base := startFuzzServer(f)
	client := &http.Client{Timeout: 30 * time.Second}
	f.Fuzz(func(t *testing.T, m uint8, path, query string, body []byte) {
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		if strings.HasPrefix(path, "/admin") && method != http.MethodGet && method != http.MethodHead {
			return
		}
		target := base + path
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequest(method, target, bytes.NewReader(body))
		if err != nil || req.URL.Host != strings.TrimPrefix(base, "http://") {
			return // not a request a client can send to this server
		}
		resp, err := client.Do(req)
		if err != nil {
			var uerr interface{ Timeout() bool }
			if errors.As(err, &uerr) && uerr.Timeout() {
				t.Fatalf("%s %q: no answer within 30s", method, target)
			}
			t.Fatalf("%s %q: connection failed (handler panic?): %v", method, target, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s %q: reading answer: %v", method, target, err)
		}
		if !fuzzAllowed[resp.StatusCode] {
			t.Fatalf("%s %q body %q: status %d: %s", method, target, body, resp.StatusCode, b)
		}
		// net/http refuses a request it cannot parse (say, a space in the
		// request target) before keeld's handler runs, with a plain-text
		// "400 Bad Request"; everything keeld answers itself is JSON.
		netHTTP400 := resp.StatusCode == http.StatusBadRequest && strings.HasPrefix(string(b), "400 Bad Request")
		if resp.StatusCode >= 400 && method != http.MethodHead && !netHTTP400 {
			var eb errorBody
			if err := json.Unmarshal(b, &eb); err != nil || eb.Error == "" {
				t.Fatalf("%s %q: status %d with a body that is not a JSON error: %q", method, target, resp.StatusCode, b)
			}
		}
	})
}

// FuzzDecodeTxn checks that the txn parser never panics, refuses with
// errBadRequest or errTooLarge only, and accepts only what the state
// machine's limits allow.
func FuzzDecodeTxn(f *testing.F) {
	for _, s := range []string{
		`{"if":[{"key":"a","equals":"v"}],"then":[{"put":"a","value":"w"}]}`,
		`{"if":[{"key":"a","absent":true}],"then":[{"delete":"a"},{"put":"b","value":""}]}`,
		`{"if":[{"key":"a","exists":true,"absent":true}],"then":[{"delete":"a"}]}`,
		`{"then":[{"put":"a","value":"w","delete":"a"}]}`,
		`{"if":null,"then":null}`,
		`{"then":[{"put":""}]}`,
		`{"then":[{"put":"a","value":"b"}]}{}`,
		`{"unknown":1}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		conds, ops, err := decodeTxn(body)
		if err != nil {
			if !errors.Is(err, errBadRequest) && !errors.Is(err, errTooLarge) {
				t.Fatalf("error %v wraps neither errBadRequest nor errTooLarge", err)
			}
			return
		}
		if len(ops) == 0 || len(conds)+len(ops) > sm.MaxTxnItems {
			t.Fatalf("accepted %d conditions and %d operations", len(conds), len(ops))
		}
	})
}
