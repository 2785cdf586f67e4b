package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/proctest"
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
	t        *testing.T
	id       int
	dataDir  string
	httpAddr string
	raftAddr string
	args     []string
	logPath  string

	// mu guards the fields below; the nemesis changes them, clients and the
	// monitor read them.
	mu    sync.Mutex
	runs  []*proctest.Proc // every incarnation, the current one last
	state procState
	// starts counts start calls, so the monitor can tell incarnations apart.
	starts int
}

func (r *replica) url(path string) string { return "http://" + r.httpAddr + path }

// current is the latest incarnation, nil before the first start.
func (r *replica) current() *proctest.Proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.runs) == 0 {
		return nil
	}
	return r.runs[len(r.runs)-1]
}

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
	// The child writes to its own copy of the descriptor.
	defer lf.Close()
	r.starts++
	fmt.Fprintf(lf, "==== start %d at %s: keeld %s\n", r.starts, time.Now().Format(time.RFC3339Nano), strings.Join(r.args, " "))
	cmd := exec.Command(keeldBin, r.args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	p, err := proctest.Start(r.t, fmt.Sprintf("replica %d", r.id), cmd)
	if err != nil {
		return err
	}
	r.runs, r.state = append(r.runs, p), stateUp
	return nil
}

// signal sends sig to the current incarnation and records the new state.
func (r *replica) signal(sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.runs) == 0 || r.state == stateDown {
		return fmt.Errorf("replica %d: %v while down", r.id, sig)
	}
	if err := r.runs[len(r.runs)-1].Signal(sig); err != nil {
		return err
	}
	switch sig {
	case syscall.SIGSTOP:
		r.state = statePaused
	case syscall.SIGCONT:
		r.state = stateUp
	}
	return nil
}

// kill SIGKILLs the process (a stopped one too) and waits for it to be
// reaped.
func (r *replica) kill() error {
	p := r.current()
	if p == nil {
		return nil
	}
	if err := p.Kill(); err != nil {
		return err
	}
	r.setDown()
	return nil
}

// stop ends the process with SIGTERM; a graceful stop must exit 0 within 60s.
func (r *replica) stop() error {
	p := r.current()
	if p == nil || r.getState() == stateDown {
		return fmt.Errorf("replica %d: stop while down", r.id)
	}
	err := p.Stop(60 * time.Second)
	r.setDown()
	return err
}

// setDown records that the current incarnation is gone.
func (r *replica) setDown() {
	r.mu.Lock()
	r.state = stateDown
	r.mu.Unlock()
}

func (r *replica) getState() procState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// crashes describes every incarnation that exited without the harness
// asking it to.
func (r *replica) crashes() []string {
	r.mu.Lock()
	runs := append([]*proctest.Proc(nil), r.runs...)
	r.mu.Unlock()
	var out []string
	for i, p := range runs {
		if p.Crashed() {
			_, err := p.Exited()
			out = append(out, fmt.Sprintf("replica %d (start %d) exited on its own: %v", r.id, i+1, err))
		}
	}
	return out
}

// status is the part of keeld's /status the suite reads; Raw keeps every
// field so counters added later are visible in the summary.
type status struct {
	LeaderID      uint64 `json:"leader_id"`
	IsLeader      bool   `json:"is_leader"`
	Term          uint64 `json:"term"`
	AppliedIndex  uint64 `json:"applied_index"`
	LogFirstIndex uint64 `json:"log_first_index"`
	LogLastIndex  uint64 `json:"log_last_index"`
	// Shards lists every shard the process hosts; the fields above are
	// shard 1's.
	Shards []shardStatus  `json:"shards"`
	Raw    map[string]any `json:"-"`
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

func (r *replica) status() (status, error) {
	var st status
	b, err := proctest.Get(statusClient, r.url("/status"))
	if err != nil {
		return st, fmt.Errorf("replica %d: %w", r.id, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return st, dec.Decode(&st.Raw)
}

// cluster is the three replicas, each hosting a replica of every shard.
type cluster struct {
	t        *testing.T
	replicas []*replica
	// shards is keeld's --shards; keys are the workload's keys, spread
	// over every shard.
	shards int
	keys   []string
}

// newCluster starts three replicas with --shards shards and extra flags
// and waits until every one knows a leader of every shard. A port taken
// between choosing and binding it is retried with fresh ports (and fresh
// directories).
func newCluster(t *testing.T, dataRoot, logDir string, shards int, extra []string) *cluster {
	for attempt := 0; ; attempt++ {
		c, err := tryCluster(t, filepath.Join(dataRoot, fmt.Sprint("a", attempt)), logDir, shards, extra)
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

func tryCluster(t *testing.T, dataRoot, logDir string, shards int, extra []string) (*cluster, error) {
	addrs := proctest.FreeAddrs(t, 6)
	var members []string
	for i := 0; i < 3; i++ {
		members = append(members, fmt.Sprintf("%d=%s", i+1, addrs[3+i]))
	}
	c := &cluster{t: t, shards: shards, keys: workloadKeys(shards)}
	for i := 0; i < 3; i++ {
		r := &replica{t: t, id: i + 1, dataDir: filepath.Join(dataRoot, fmt.Sprintf("replica-%d", i+1)),
			httpAddr: addrs[i], raftAddr: addrs[3+i], logPath: filepath.Join(logDir, fmt.Sprintf("replica-%d.log", i+1))}
		r.args = append([]string{"--data-dir", r.dataDir, "--http", r.httpAddr, "--raft-addr", r.raftAddr,
			"--replica-id", fmt.Sprint(r.id), "--members", strings.Join(members, ","), "--shards", fmt.Sprint(shards),
			"--log-level", "warn"}, extra...)
		c.replicas = append(c.replicas, r)
	}
	for _, r := range c.replicas {
		if err := r.start(); err != nil {
			return c, err
		}
	}
	err := c.waitAll(func(r *replica, st status) error { return c.allLed(st) }, 60*time.Second)
	return c, err
}

// waitAll polls /status on every replica until cond holds for each; a
// replica that crashed ends the wait at once.
func (c *cluster) waitAll(cond func(*replica, status) error, timeout time.Duration) error {
	return proctest.Poll(timeout, func() error {
		for _, r := range c.replicas {
			if p := r.current(); p != nil && p.Crashed() {
				_, err := p.Exited()
				return proctest.Abort(fmt.Errorf("replica %d exited unexpectedly: %v", r.id, err))
			}
			st, err := r.status()
			if err == nil {
				err = cond(r, st)
			}
			if err != nil {
				return fmt.Errorf("replica %d: %w", r.id, err)
			}
		}
		return nil
	})
}

// leader returns the replica that reports itself leader of shard 1 (the
// top-level /status fields), or nil.
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
