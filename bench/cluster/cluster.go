//go:build linux

package main

import (
	"context"
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
	"sync"
	"syscall"
	"time"

	"github.com/keel-db/keel/bench/internal/loopback"
)

// Bounds on waiting for keeld.
const (
	startTimeout = 60 * time.Second // process up and a leader elected
	stopTimeout  = 20 * time.Second // SIGTERM to exit, then SIGKILL
)

// fleet owns every keeld process and directory the benchmark creates, so
// that one call (cleanup) removes them all, on success, error or SIGINT.
type fleet struct {
	keeld string // path of the keeld binary
	root  string // temporary root; every cluster lives under it
	args  []string
	hc    *http.Client
	// pprof: start every keeld with KEEL_PPROF on a loopback port of its
	// own (replica.pprofAddr), so the benchmark can profile it.
	pprof bool
	// stdClient: load writers use hc (net/http) instead of rawConn.
	stdClient bool
	// leaderOnly: write runs send every put to the leader instead of
	// round-robin over the replicas.
	leaderOnly bool
	// rate paces write runs (puts/s in all, 0 for as fast as they go).
	rate float64
	// env is extra environment for every keeld (e.g. GODEBUG).
	env []string

	mu      sync.Mutex // guards running and closed
	running map[*replica]struct{}
	closed  bool
}

func newFleet(keeld, root string, args []string, conns int) *fleet {
	tr := &http.Transport{
		// One idle connection per client goroutine, so K clients reuse
		// K connections instead of dialling per request.
		MaxIdleConns:        4 * conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	return &fleet{
		keeld: keeld, root: root, args: args,
		hc:      &http.Client{Transport: tr, Timeout: 30 * time.Second},
		running: map[*replica]struct{}{},
	}
}

// cleanup kills every process still running and removes the root. Safe to
// call more than once and concurrently with stop.
func (f *fleet) cleanup() {
	f.mu.Lock()
	f.closed = true
	procs := make([]*replica, 0, len(f.running))
	for r := range f.running {
		procs = append(procs, r)
	}
	f.mu.Unlock()
	for _, r := range procs {
		cmd, exited := r.proc()
		_ = cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
		}
	}
	_ = os.RemoveAll(f.root)
}

// replica is one keeld process slot: its addresses and directory persist
// across restarts; cmd and exited change with each start.
type replica struct {
	keeld     string // binary this slot runs (the fleet's, or -keeld-base)
	id        uint64
	dir       string
	httpAddr  string
	raftAddr  string
	members   string
	pprofAddr string // KEEL_PPROF address when the fleet profiles

	mu     sync.Mutex // guards cmd and exited, replaced at each start
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// proc returns the current process and its exit channel (nil before the
// first start).
func (r *replica) proc() (*exec.Cmd, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd, r.exited
}

func (r *replica) url(path string) string { return "http://" + r.httpAddr + path }

func (r *replica) pid() int {
	cmd, _ := r.proc()
	if cmd == nil || cmd.Process == nil {
		return 0
	}
	return cmd.Process.Pid
}

func (r *replica) alive() bool {
	_, exited := r.proc()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// cluster is three keeld processes in fresh directories, each hosting a
// replica of every shard (--shards N in the fleet's args; shard 1 alone
// without it).
type cluster struct {
	f    *fleet
	name string
	reps []*replica
}

// newCluster creates and starts a three-replica cluster of the fleet's
// keeld and waits for a leader.
func (f *fleet) newCluster(ctx context.Context, name string) (*cluster, error) {
	return f.newClusterOf(ctx, name, f.keeld)
}

// newClusterOf is newCluster running the binary keeld.
func (f *fleet) newClusterOf(ctx context.Context, name, keeld string) (*cluster, error) {
	ports, err := loopback.FreePorts(9)
	if err != nil {
		return nil, err
	}
	c := &cluster{f: f, name: name}
	var members []string
	for i := 0; i < 3; i++ {
		members = append(members, fmt.Sprintf("%d=%s", i+1, ports[3+i]))
	}
	for i := 0; i < 3; i++ {
		dir := filepath.Join(f.root, name, fmt.Sprintf("r%d", i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		c.reps = append(c.reps, &replica{keeld: keeld, id: uint64(i + 1), dir: dir,
			httpAddr: ports[i], raftAddr: ports[3+i], pprofAddr: ports[6+i], members: strings.Join(members, ",")})
	}
	if err := c.startAll(ctx); err != nil {
		c.stopAll(false)
		return nil, err
	}
	return c, nil
}

// start launches r's keeld. Its output goes to <dir>.log.
func (f *fleet) start(r *replica) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("%w: benchmark is shutting down", errProcess)
	}
	if r.alive() {
		return fmt.Errorf("%w: replica %d already running", errProcess, r.id)
	}
	logf, err := os.OpenFile(r.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{"--data-dir", r.dir, "--http", r.httpAddr, "--raft-addr", r.raftAddr,
		"--replica-id", fmt.Sprint(r.id), "--members", r.members}, f.args...)
	cmd := exec.Command(r.keeld, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), f.env...)
	if f.pprof {
		cmd.Env = append(cmd.Env, "KEEL_PPROF="+r.pprofAddr)
	}
	// Pdeathsig: keeld dies with the benchmark even when it is SIGKILLed.
	// Setpgid: a terminal's Ctrl-C reaches only the benchmark, which then
	// stops keeld itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("%w: start %s: %v", errProcess, f.keeld, err)
	}
	exited := make(chan struct{})
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()
	f.running[r] = struct{}{}
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		f.mu.Lock()
		delete(f.running, r)
		f.mu.Unlock()
		close(exited)
	}()
	return nil
}

// stop ends r: SIGTERM (a clean shutdown) or SIGKILL, then SIGKILL after
// stopTimeout.
func (f *fleet) stop(r *replica, kill bool) {
	if !r.alive() {
		return
	}
	cmd, exited := r.proc()
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

func (c *cluster) startAll(ctx context.Context) error {
	for _, r := range c.reps {
		if err := c.f.start(r); err != nil {
			return err
		}
	}
	_, err := c.waitLeader(ctx, startTimeout)
	return err
}

// stopAll stops the three replicas in parallel.
func (c *cluster) stopAll(kill bool) {
	var wg sync.WaitGroup
	for _, r := range c.reps {
		wg.Add(1)
		go func() { defer wg.Done(); c.f.stop(r, kill) }()
	}
	wg.Wait()
}

// status is the part of keeld's GET /status the benchmark reads; Raw keeps
// the whole answer (snapshot counters and log fields appear there once
// keeld has them).
type status struct {
	replicaFields
	// Shards lists every shard the process hosts (keeld with --shards);
	// the top-level fields above describe the first. Read it through
	// shardList, which also covers a keeld that has no such list.
	Shards []shardStatus `json:"shards"`
	Raw    map[string]any
}

// firstIndex is the first Raft index r still holds: raft_log.first_index
// when keeld reports it, log_first_index otherwise.
func (s status) firstIndex() uint64 {
	if rl, ok := s.Raw["raft_log"].(map[string]any); ok {
		if v, ok := rl["first_index"].(float64); ok {
			return uint64(v)
		}
	}
	return s.LogFirstIndex
}

func (c *cluster) status(ctx context.Context, r *replica) (status, error) {
	var st status
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url("/status"), nil)
	if err != nil {
		return st, err
	}
	resp, err := c.f.hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%w: /status on replica %d: %d", errHTTP, r.id, resp.StatusCode)
	}
	return parseStatus(body)
}

// parseStatus decodes a /status answer.
func parseStatus(body []byte) (status, error) {
	var st status
	if err := json.Unmarshal(body, &st); err != nil {
		return st, err
	}
	err := json.Unmarshal(body, &st.Raw)
	return st, err
}

// waitLeader polls the running replicas until one says it leads.
func (c *cluster) waitLeader(ctx context.Context, limit time.Duration) (*replica, error) {
	var last error
	err := poll(ctx, limit, 20*time.Millisecond, func() bool {
		for _, r := range c.reps {
			if !r.alive() {
				continue
			}
			st, err := c.status(ctx, r)
			if err != nil {
				last = err
				continue
			}
			if st.IsLeader {
				return true
			}
		}
		return false
	})
	if err != nil {
		for _, r := range c.reps {
			if _, ex := r.proc(); ex != nil && !r.alive() {
				return nil, fmt.Errorf("%w: replica %d exited (see %s.log)", errProcess, r.id, r.dir)
			}
		}
		return nil, fmt.Errorf("cluster %s: no leader: %w (last error: %v)", c.name, err, last)
	}
	return c.leader(ctx)
}

// leader returns the replica that says it leads.
func (c *cluster) leader(ctx context.Context) (*replica, error) {
	for _, r := range c.reps {
		if !r.alive() {
			continue
		}
		if st, err := c.status(ctx, r); err == nil && st.IsLeader {
			return r, nil
		}
	}
	return nil, errors.New("no replica leads")
}

// follower returns a running replica other than leader.
func (c *cluster) follower(leader *replica) *replica {
	for _, r := range c.reps {
		if r != leader && r.alive() {
			return r
		}
	}
	return nil
}

// pids returns the running replicas' process IDs.
func (c *cluster) pids() []int {
	var out []int
	for _, r := range c.reps {
		if r.alive() {
			out = append(out, r.pid())
		}
	}
	return out
}

// cpuSeconds is the CPU time of the running replicas, summed.
func (c *cluster) cpuSeconds() float64 {
	var total float64
	for _, pid := range c.pids() {
		if v, err := procCPU(pid); err == nil {
			total += v
		}
	}
	return total
}

// waitApplied polls r until its applied index reaches idx.
func (c *cluster) waitApplied(ctx context.Context, r *replica, idx uint64, limit time.Duration) error {
	var last uint64
	err := poll(ctx, limit, 25*time.Millisecond, func() bool {
		st, err := c.status(ctx, r)
		if err != nil {
			return false
		}
		last = st.AppliedIndex
		return st.AppliedIndex >= idx
	})
	if err != nil {
		return fmt.Errorf("replica %d applied %d of %d: %w", r.id, last, idx, err)
	}
	return nil
}

// poll calls cond every interval until it returns true, ctx ends or limit
// passes.
func poll(ctx context.Context, limit, interval time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s", errTimeout, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
