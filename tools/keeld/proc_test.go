package main

// Helpers that run keeld as a real process: build once in TestMain, start
// with per-test ports and data directories, wait for readiness by polling
// /status, stop with signals or SIGKILL. Every process is killed in
// t.Cleanup, whatever the outcome.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testutil"
)

// keeldBin is the binary built by TestMain.
var keeldBin string

// Deadlines for waiting on events; generous because two cores are shared.
const (
	readyTimeout = 60 * time.Second
	exitTimeout  = 30 * time.Second
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keeld-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	keeldBin = filepath.Join(dir, "keeld")
	args := []string{"build", "-o", keeldBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if testing.CoverMode() != "" {
		args = append(args, "-cover")
	}
	args = append(args, ".")
	out, err := exec.Command(testutil.GoTool(), args...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building keeld: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago. Another
// process may take it before keeld binds it; callers retry on a clash.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// node is one keeld process and the flags it was started with; restart
// starts it again with the same flags.
type node struct {
	t        *testing.T
	name     string
	dataDir  string
	httpAddr string
	raftAddr string
	extra    []string

	cmd    *exec.Cmd
	stderr *testutil.LockedBuffer
	done   chan struct{} // closed when cmd.Wait returned
	err    error         // cmd.Wait's result, valid after done
}

func (n *node) url(path string) string { return "http://" + n.httpAddr + path }

func (n *node) args() []string {
	return append([]string{"--data-dir", n.dataDir, "--http", n.httpAddr, "--raft-addr", n.raftAddr}, n.extra...)
}

// start runs the process; it does not wait for readiness.
func (n *node) start() {
	n.t.Helper()
	n.cmd = exec.Command(keeldBin, n.args()...)
	n.stderr = &testutil.LockedBuffer{}
	n.cmd.Stdout = n.stderr
	n.cmd.Stderr = n.stderr
	if err := n.cmd.Start(); err != nil {
		n.t.Fatalf("%s: start: %v", n.name, err)
	}
	n.done = make(chan struct{})
	cmd, done, buf := n.cmd, n.done, n.stderr
	go func() {
		n.err = cmd.Wait()
		close(done)
	}()
	t := n.t
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s (%s) output:\n%s", n.name, strings.Join(cmd.Args, " "), buf.String())
		}
	})
}

func (n *node) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// errAddrInUse marks a start that lost a race for its ports.
var errAddrInUse = errors.New("address already in use")

// waitReady polls /status until the replica knows a leader. It returns
// errAddrInUse when the process exited because a port was taken.
func (n *node) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if n.exited() {
			if strings.Contains(n.stderr.String(), "address already in use") {
				return errAddrInUse
			}
			return fmt.Errorf("%s exited before ready: %v", n.name, n.err)
		}
		st, err := n.statusOnce()
		if err == nil && st.LeaderID != 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	return fmt.Errorf("%s: no leader within %v", n.name, readyTimeout)
}

// statusBody is the part of /status the tests read.
type statusBody struct {
	LeaderID     uint64            `json:"leader_id"`
	IsLeader     bool              `json:"is_leader"`
	ReplicaID    uint64            `json:"replica_id"`
	AppliedIndex uint64            `json:"applied_index"`
	Members      map[string]string `json:"members"`
	Keys         uint64            `json:"keys"`
	RaftAddr     string            `json:"raft_addr"`
	DataDir      string            `json:"data_dir"`
	RaftLog      struct {
		FirstIndex uint64 `json:"first_index"`
		LastIndex  uint64 `json:"last_index"`
		DiskBytes  uint64 `json:"disk_bytes"`
		Compaction bool   `json:"compaction"`
	} `json:"raft_log"`
	Snapshots struct {
		Saved      uint64 `json:"saved"`
		TimerTaken uint64 `json:"timer_taken"`
	} `json:"snapshots"`
}

var httpc = &http.Client{Timeout: 15 * time.Second}

func (n *node) statusOnce() (statusBody, error) {
	var st statusBody
	resp, err := httpc.Get(n.url("/status"))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (n *node) status() statusBody {
	n.t.Helper()
	st, err := n.statusOnce()
	if err != nil {
		n.t.Fatalf("%s: /status: %v", n.name, err)
	}
	return st
}

// signal sends sig and waits for the process to exit with status 0.
func (n *node) stopWith(sig syscall.Signal) {
	n.t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("%s: signal: %v", n.name, err)
	}
	select {
	case <-n.done:
	case <-time.After(exitTimeout):
		n.t.Fatalf("%s: still running %v after %v", n.name, exitTimeout, sig)
	}
	if n.err != nil {
		n.t.Fatalf("%s: after %v: %v, want exit status 0", n.name, sig, n.err)
	}
}

// kill sends SIGKILL and waits for the process to die.
func (n *node) kill() {
	n.t.Helper()
	_ = n.cmd.Process.Kill()
	select {
	case <-n.done:
	case <-time.After(exitTimeout):
		n.t.Fatalf("%s: still running after SIGKILL", n.name)
	}
}

// startSingle starts a one-replica keeld on fresh ports, retrying when a
// port was taken between choosing and binding it.
func startSingle(t *testing.T, extra ...string) *node {
	t.Helper()
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		n := &node{t: t, name: "keeld", dataDir: filepath.Join(dir, fmt.Sprint("data", attempt)),
			httpAddr: freeAddr(t), raftAddr: freeAddr(t), extra: extra}
		n.start()
		err := n.waitReady()
		if err == nil {
			return n
		}
		if errors.Is(err, errAddrInUse) && attempt < 3 {
			t.Logf("port clash, retrying: %s", n.stderr.String())
			continue
		}
		t.Fatal(err)
	}
}

// do sends a request and returns the status code and body.
func do(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp.StatusCode, b
}

// mustDo is do, failing the test unless the status is want.
func mustDo(t *testing.T, want int, method, url string, body []byte) []byte {
	t.Helper()
	code, b := do(t, method, url, body)
	if code != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, url, code, want, b)
	}
	return b
}

// decode unmarshals JSON into v, failing the test on error.
func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decoding %q: %v", b, err)
	}
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}
