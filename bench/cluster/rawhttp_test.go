//go:build linux

package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRawConn drives rawConn against a real net/http server on loopback:
// empty (204), sized, chunked and closing answers on one connection, and a
// request body the server must see whole.
func TestRawConn(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/kv/a000000000000001":
			if string(body) != "value" || r.Method != "PUT" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		case "/txn":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"succeeded":true}`+"\n")
		case "/chunked":
			w.WriteHeader(http.StatusOK)
			for i := 0; i < 3; i++ {
				_, _ = io.WriteString(w, strings.Repeat("x", 5000))
				w.(http.Flusher).Flush()
			}
		case "/close":
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	c := newRawConn(strings.TrimPrefix(srv.URL, "http://"), 5*time.Second)
	defer c.close()
	path := string(appendKey([]byte("/kv/"), 'a', 1))
	if path != "/kv/"+key('a', 1) {
		t.Fatalf("appendKey %q, key %q", path, key('a', 1))
	}
	for i := 0; i < 3; i++ {
		if code, err := rawPut(c, path, []byte("value")); err != nil || code != 204 {
			t.Fatalf("put %d: %d %v", i, code, err)
		}
	}
	if code, err := rawTxn(c, []byte(`{}`)); err != nil || code != 200 {
		t.Fatalf("txn: %d %v", code, err)
	}
	if code, err := c.do("GET", "/chunked", "", nil); err != nil || code != 200 || len(c.body) != 15000 {
		t.Fatalf("chunked: %d %v, %d bytes", code, err, len(c.body))
	}
	if code, err := rawPut(c, "/close", nil); code != 503 || err == nil || c.conn != nil {
		t.Fatalf("close: %d %v, conn kept %v", code, err, c.conn != nil)
	}
	// The next request dials again.
	if code, err := rawPut(c, path, []byte("value")); err != nil || code != 204 {
		t.Fatalf("put after close: %d %v", code, err)
	}
}
