package main

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/keel-db/keel/internal/testkit/testutil"
)

func TestCheckLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.1:6060", "127.1.2.3:1", "[::1]:0", "[::1]:6060"} {
		if err := checkLoopback(addr); err != nil {
			t.Errorf("%q refused: %v", addr, err)
		}
	}
	for _, addr := range []string{
		"0.0.0.0:6060", "[::]:6060", ":6060", "10.0.0.1:1", "192.168.1.1:6060",
		// A name is refused even when it resolves to loopback: what it
		// resolves to is not ours to trust.
		"localhost:1",
		"127.0.0.1", "garbage", "", "[::1", "127.0.0.1:6060:1",
	} {
		if err := checkLoopback(addr); err == nil {
			t.Errorf("%q accepted", addr)
		}
	}
}

// pprofLogs starts the profiling listener with KEEL_PPROF=env and returns
// its stop func and the records it logged.
func pprofLogs(t *testing.T, env string) (func(), []map[string]any) {
	t.Helper()
	t.Setenv(pprofEnv, env)
	var buf testutil.LockedBuffer
	stop := startPprof(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(stop)
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		recs = append(recs, rec)
	}
	return stop, recs
}

// TestStartPprofServes: KEEL_PPROF=127.0.0.1:0 serves the pprof index on
// the address it logs, and the returned func closes the listener.
func TestStartPprofServes(t *testing.T) {
	stop, recs := pprofLogs(t, "127.0.0.1:0")
	if len(recs) != 1 || recs[0]["msg"] != "profiling on" {
		t.Fatalf("logged %v, want one \"profiling on\" record", recs)
	}
	addr, _ := recs[0]["addr"].(string)
	if host, port, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("logged address %q, want 127.0.0.1 and the bound port", addr)
	}
	get := func(path string) (int, string, error) {
		resp, err := httpc.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	code, body, err := get("/debug/pprof/")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("GET /debug/pprof/: %d %v\n%s", code, err, body)
	}
	code, body, err = get("/debug/pprof/goroutine?debug=1")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Fatalf("GET /debug/pprof/goroutine: %d %v\n%.200s", code, err, body)
	}
	// Only the profiles: nothing of the API lives on this listener.
	if code, _, err := get("/kv/x"); err != nil || code != http.StatusNotFound {
		t.Fatalf("GET /kv/x on the profiling listener: %d %v, want 404", code, err)
	}
	stop()
	if _, _, err := get("/debug/pprof/"); err == nil {
		t.Fatal("the profiling listener still serves after stop")
	}
}

// TestStartPprofRefuses: unset does nothing; an address that is not
// loopback, or cannot be bound, is reported and nothing listens.
func TestStartPprofRefuses(t *testing.T) {
	if _, recs := pprofLogs(t, ""); len(recs) != 0 {
		t.Fatalf("KEEL_PPROF unset logged %v", recs)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, env := range []string{"0.0.0.0:0", "localhost:0", "nonsense", taken.Addr().String()} {
		_, recs := pprofLogs(t, env)
		if len(recs) != 1 || recs[0]["msg"] != "profiling listener refused" || recs[0]["level"] != "WARN" {
			t.Errorf("KEEL_PPROF=%q logged %v, want one refusal warning", env, recs)
		}
	}
}
