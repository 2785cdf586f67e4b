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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/proctest"
	"github.com/keel-db/keel/internal/testkit/testutil"
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

// node is one keeld process and the flags it was started with; start runs
// it again with the same flags.
type node struct {
	t        *testing.T
	name     string
	dataDir  string
	httpAddr string
	raftAddr string
	extra    []string
	// env is added to the process's environment.
	env []string

	proc *proctest.Proc // the current run, replaced by start
}

// newNode describes a keeld on fresh loopback ports; start runs it.
func newNode(t *testing.T, name, dataDir string, extra ...string) *node {
	a := proctest.FreeAddrs(t, 2)
	return &node{t: t, name: name, dataDir: dataDir, httpAddr: a[0], raftAddr: a[1], extra: extra}
}

func (n *node) url(path string) string { return "http://" + n.httpAddr + path }

func (n *node) args() []string {
	return append([]string{"--data-dir", n.dataDir, "--http", n.httpAddr, "--raft-addr", n.raftAddr}, n.extra...)
}

// start runs the process; it does not wait for readiness.
func (n *node) start() {
	n.t.Helper()
	cmd := exec.Command(keeldBin, n.args()...)
	if len(n.env) > 0 {
		cmd.Env = append(os.Environ(), n.env...)
	}
	p, err := proctest.Start(n.t, n.name, cmd)
	if err != nil {
		n.t.Fatal(err)
	}
	n.proc = p
}

// errAddrInUse marks a start that lost a race for its ports.
var errAddrInUse = errors.New("address already in use")

// waitReady polls /status until the replica knows a leader. It returns
// errAddrInUse when the process exited because a port was taken.
func (n *node) waitReady() error {
	err := proctest.WaitJSON(n.proc, httpc, n.url("/status"), readyTimeout, func(st statusBody) error {
		if st.LeaderID == 0 {
			return errors.New("no leader")
		}
		return nil
	})
	if errors.Is(err, proctest.ErrExited) && strings.Contains(n.proc.Output(), "address already in use") {
		return errAddrInUse
	}
	return err
}

// statusBody is the part of /status the tests read.
type statusBody struct {
	LeaderID     uint64            `json:"leader_id"`
	IsLeader     bool              `json:"is_leader"`
	ReplicaID    uint64            `json:"replica_id"`
	AppliedIndex uint64            `json:"applied_index"`
	Members      map[string]string `json:"members"`
	MembersFrom  string            `json:"members_source"`
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
	err := proctest.GetJSON(httpc, n.url("/status"), &st)
	return st, err
}

func (n *node) status() statusBody {
	n.t.Helper()
	st, err := n.statusOnce()
	if err != nil {
		n.t.Fatalf("%s: /status: %v", n.name, err)
	}
	return st
}

// stopWith sends sig and waits for the process to exit with status 0.
func (n *node) stopWith(sig syscall.Signal) {
	n.t.Helper()
	if err := n.proc.StopWith(sig, exitTimeout); err != nil {
		n.t.Fatal(err)
	}
}

// kill sends SIGKILL and waits for the process to die.
func (n *node) kill() {
	n.t.Helper()
	if err := n.proc.Kill(); err != nil {
		n.t.Fatal(err)
	}
}

// runKeeld runs a keeld that is expected to exit by itself (a refused
// start) in dir ("" for this one) and returns its exit code and output.
func runKeeld(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(keeldBin, args...)
	cmd.Dir = dir
	p, err := proctest.Start(t, "keeld", cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(exitTimeout); errors.Is(err, proctest.ErrTimeout) {
		t.Fatalf("keeld %v: %v", args, err)
	}
	return p.ExitCode(), p.Output()
}

// startSingle starts a one-replica keeld on fresh ports, retrying when a
// port was taken between choosing and binding it.
func startSingle(t *testing.T, extra ...string) *node {
	t.Helper()
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		n := newNode(t, "keeld", filepath.Join(dir, fmt.Sprint("data", attempt)), extra...)
		n.start()
		err := n.waitReady()
		if err == nil {
			return n
		}
		if errors.Is(err, errAddrInUse) && attempt < 3 {
			t.Logf("port clash, retrying: %s", n.proc.Output())
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
