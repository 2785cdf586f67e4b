package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// procState is a replica process's state as the nemesis left it.
type procState int

const (
	stateDown procState = iota
	stateUp
	statePaused
)

// replica is one keeld process, restarted with the same flags after a kill.
type replica struct {
	id       int
	dataDir  string
	httpAddr string
	raftAddr string
	args     []string
	logPath  string

	// mu guards the fields below; the nemesis changes them, clients and the
	// monitor read them.
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd.Wait returned
	waitErr error         // valid after done
	state   procState
	starts  int
	// expected is set before the harness signals the process to end, so
	// an exit without it is a crash, recorded in crashes.
	expected bool
	crashes  []string
}

func (r *replica) url(path string) string { return "http://" + r.httpAddr + path }

// start runs a new incarnation; stderr and stdout append to logPath.
func (r *replica) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != stateDown {
		return fmt.Errorf("replica %d: start while running", r.id)
	}
	lf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	r.starts++
	fmt.Fprintf(lf, "==== start %d at %s: keeld %s\n", r.starts, time.Now().Format(time.RFC3339Nano), strings.Join(r.args, " "))
	cmd := exec.Command(keeldBin, r.args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// If the test process dies (killed, timed out), its replicas die too.
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("replica %d: %w", r.id, err)
	}
	done := make(chan struct{})
	r.cmd, r.done, r.state, r.expected = cmd, done, stateUp, false
	start := r.starts
	go func() {
		err := cmd.Wait()
		lf.Close()
		r.mu.Lock()
		r.waitErr = err
		if !r.expected {
			r.crashes = append(r.crashes, fmt.Sprintf("replica %d (start %d) exited on its own: %v", r.id, start, err))
		}
		r.mu.Unlock()
		close(done)
	}()
	return nil
}

// signal sends sig to the current incarnation and records the new state.
func (r *replica) signal(sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.state == stateDown {
		return fmt.Errorf("replica %d: %v while down", r.id, sig)
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("replica %d: %v: %w", r.id, sig, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		r.state = statePaused
	case syscall.SIGCONT:
		r.state = stateUp
	}
	return nil
}

// kill SIGKILLs the process (continuing it is not needed: SIGKILL ends a
// stopped process too) and waits for it to be reaped.
func (r *replica) kill() error {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.expected = true
	r.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("replica %d still running 30s after SIGKILL", r.id)
	}
	r.mu.Lock()
	r.state = stateDown
	r.mu.Unlock()
	return nil
}

// stop sends SIGTERM and waits for exit; a graceful stop must exit 0.
func (r *replica) stop() error {
	if err := r.signal(syscall.SIGCONT); err != nil {
		return err
	}
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.expected = true
	r.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = r.kill()
		return fmt.Errorf("replica %d did not exit within 60s of SIGTERM", r.id)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = stateDown
	if r.waitErr != nil {
		return fmt.Errorf("replica %d: exit after SIGTERM: %v", r.id, r.waitErr)
	}
	return nil
}

func (r *replica) getState() procState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// exited reports whether the current incarnation has ended.
func (r *replica) exited() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done == nil {
		return false, nil
	}
	select {
	case <-r.done:
		return true, r.waitErr
	default:
		return false, nil
	}
}

// crashed reports an exit the harness did not cause, with its error.
func (r *replica) crashed() (bool, error) {
	dead, err := r.exited()
	r.mu.Lock()
	defer r.mu.Unlock()
	return dead && !r.expected, err
}

// status is the part of keeld's /status the suite reads; Raw keeps every
// field so counters added later are visible in the summary.
type status struct {
	LeaderID      uint64         `json:"leader_id"`
	IsLeader      bool           `json:"is_leader"`
	Term          uint64         `json:"term"`
	AppliedIndex  uint64         `json:"applied_index"`
	LogFirstIndex uint64         `json:"log_first_index"`
	LogLastIndex  uint64         `json:"log_last_index"`
	Raw           map[string]any `json:"-"`
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

func (r *replica) status() (status, error) {
	var st status
	resp, err := statusClient.Get(r.url("/status"))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("replica %d: /status %d", r.id, resp.StatusCode)
	}
	var raw map[string]any
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return st, err
	}
	b, _ := json.Marshal(raw)
	if err := json.Unmarshal(b, &st); err != nil {
		return st, err
	}
	st.Raw = raw
	return st, nil
}

// cluster is the three replicas.
type cluster struct {
	t        *testing.T
	replicas []*replica
}

// freeAddrs returns n distinct 127.0.0.1 addresses free a moment ago.
func freeAddrs(t *testing.T, n int) []string {
	var ls []net.Listener
	var out []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return out
}

// newCluster starts three replicas with extra flags and waits until every
// one knows a leader. A port taken between choosing and binding it is
// retried with fresh ports (and fresh directories).
func newCluster(t *testing.T, dataRoot, logDir string, extra []string) *cluster {
	for attempt := 0; ; attempt++ {
		c, err := tryCluster(t, filepath.Join(dataRoot, fmt.Sprint("a", attempt)), logDir, extra)
		if err == nil {
			return c
		}
		for _, r := range c.replicas {
			_ = r.kill()
		}
		inUse := false
		for _, r := range c.replicas {
			if b, _ := os.ReadFile(r.logPath); strings.Contains(string(b), "address already in use") {
				inUse = true
			}
		}
		if !inUse || attempt >= 3 {
			t.Fatalf("cluster start: %v", err)
		}
		t.Logf("port clash, retrying: %v", err)
	}
}

func tryCluster(t *testing.T, dataRoot, logDir string, extra []string) (*cluster, error) {
	addrs := freeAddrs(t, 6)
	var members []string
	for i := 0; i < 3; i++ {
		members = append(members, fmt.Sprintf("%d=%s", i+1, addrs[3+i]))
	}
	c := &cluster{t: t}
	for i := 0; i < 3; i++ {
		r := &replica{id: i + 1, dataDir: filepath.Join(dataRoot, fmt.Sprintf("replica-%d", i+1)),
			httpAddr: addrs[i], raftAddr: addrs[3+i], logPath: filepath.Join(logDir, fmt.Sprintf("replica-%d.log", i+1))}
		r.args = append([]string{"--data-dir", r.dataDir, "--http", r.httpAddr, "--raft-addr", r.raftAddr,
			"--replica-id", fmt.Sprint(r.id), "--members", strings.Join(members, ","), "--log-level", "warn"}, extra...)
		c.replicas = append(c.replicas, r)
	}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			_ = r.kill()
		}
	})
	for _, r := range c.replicas {
		if err := r.start(); err != nil {
			return c, err
		}
	}
	err := c.waitAll(func(r *replica, st status) error {
		if st.LeaderID == 0 {
			return errors.New("no leader")
		}
		return nil
	}, 60*time.Second)
	return c, err
}

// waitAll polls /status on every replica until cond holds for each.
func (c *cluster) waitAll(cond func(*replica, status) error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var err error
		for _, r := range c.replicas {
			if dead, werr := r.crashed(); dead {
				return fmt.Errorf("replica %d exited unexpectedly: %v", r.id, werr)
			}
			st, serr := r.status()
			if serr == nil {
				serr = cond(r, st)
			}
			if serr != nil {
				err = fmt.Errorf("replica %d: %w", r.id, serr)
				break
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// leader returns the replica that reports itself leader, or nil.
func (c *cluster) leader() *replica {
	for _, r := range c.replicas {
		if r.getState() != stateUp {
			continue
		}
		if st, err := r.status(); err == nil && st.IsLeader {
			return r
		}
	}
	return nil
}
