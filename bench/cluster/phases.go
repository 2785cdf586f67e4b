//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// writeResult is the write phase at one K.
type writeResult struct {
	K int `json:"k"`
	// PutsPerRequest is 1 for PUT /kv; more for POST /txn batches
	// (write_txn runs), where ops are keys, not requests.
	PutsPerRequest int `json:"puts_per_request"`
	// Binary and Round: with -keeld-base, which keeld ran (candidate or
	// baseline) and in which A/B round.
	Binary string `json:"binary,omitempty"`
	Round  int    `json:"round,omitempty"`
	loadResult
	ServerCPUSeconds float64 `json:"server_cpu_seconds"` // three replicas together
	ServerCPUPerOpUS float64 `json:"server_cpu_us_per_op"`
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	ClientCPUPerOpUS float64 `json:"client_cpu_us_per_op"`
}

// writePhase puts n keys with k clients, round-robin over the three
// replicas (a follower hands its proposals to the leader inside Raft), or
// all through the leader when the fleet says so (-target leader).
func writePhase(ctx context.Context, c *cluster, k, batch int, n int64, prefix byte, limit time.Duration, prof *profiler) (writeResult, error) {
	leader, err := c.waitLeader(ctx, startTimeout)
	if err != nil {
		return writeResult{}, err
	}
	targets := c.reps
	if c.f.leaderOnly {
		targets = []*replica{leader}
	}
	cpu0, cl0 := c.cpuSeconds(), clientCPU()
	waitProfiles := prof.start(ctx, c)
	lr := load{K: k, N: n, Limit: limit, Prefix: prefix, ValueSize: 256, Txn: batch > 1, Batch: batch, Rate: c.f.rate}.run(ctx, c.f, targets...)
	res := writeResult{K: k, PutsPerRequest: max(batch, 1), loadResult: lr,
		ServerCPUSeconds: c.cpuSeconds() - cpu0, ClientCPUSeconds: (clientCPU() - cl0).Seconds()}
	waitProfiles() // after the CPU reading: serving a profile costs CPU too
	if lr.Ops > 0 {
		res.ServerCPUPerOpUS = res.ServerCPUSeconds / float64(lr.Ops) * 1e6
		res.ClientCPUPerOpUS = res.ClientCPUSeconds / float64(lr.Ops) * 1e6
	}
	if lr.Ops == 0 {
		return res, fmt.Errorf("write K=%d: no put succeeded (%d errors)", k, lr.Errors)
	}
	return res, ctx.Err()
}

// behind is a follower stopped and left behind the leader's compacted log.
type behind struct {
	leader, follower *replica
	stoppedAt        uint64 // follower's applied index when stopped
	leaderFirst      uint64 // leader's first log index afterwards
	written          int64  // keys written while it was down
}

// leaveBehind stops a follower and writes until the leader's log no longer
// holds the entries after the follower's applied index, so its restart
// needs a snapshot. It writes m keys, asks for a snapshot (POST
// /admin/snapshot), and repeats (at most four times) until the leader's
// first index passes the follower's.
func leaveBehind(ctx context.Context, c *cluster, m int64, k int, prefix byte, limit time.Duration) (b behind, err error) {
	leader, err := c.waitLeader(ctx, startTimeout)
	if err != nil {
		return b, err
	}
	f := c.follower(leader)
	if f == nil {
		return b, errors.New("no follower")
	}
	st, err := c.status(ctx, f)
	if err != nil {
		return b, err
	}
	c.f.stop(f, false)
	// On failure the follower comes back, so the phases after this one
	// still have all three replicas (two down would leave no quorum).
	defer func() {
		if err != nil {
			_ = c.f.start(f)
		}
	}()
	b.leader, b.follower, b.stoppedAt = leader, f, st.AppliedIndex
	for round := 0; round < 4; round++ {
		// One put per POST /txn: one Raft entry per key whatever keeld's
		// --write-batch, so m keys grow the log by m entries.
		lr := load{K: k, N: m, Limit: limit, Prefix: prefix + byte(round), ValueSize: 256, Txn: true, Batch: 1}.run(ctx, c.f, leader)
		b.written += lr.Ops
		if lr.Ops == 0 {
			return b, fmt.Errorf("writing past the follower: no put succeeded (%d errors)", lr.Errors)
		}
		_ = requestSnapshot(ctx, c.f.hc, leader) // 409 when a snapshot is already at this index
		// The compactor (when keeld runs one) may reclaim a little later.
		_ = poll(ctx, 10*time.Second, 100*time.Millisecond, func() bool {
			s, err := c.status(ctx, leader)
			if err == nil {
				b.leaderFirst = s.firstIndex()
			}
			return b.leaderFirst > b.stoppedAt+1
		})
		if b.leaderFirst > b.stoppedAt+1 {
			return b, nil
		}
	}
	return b, fmt.Errorf("leader's log still starts at %d, not past the follower's %d", b.leaderFirst, b.stoppedAt)
}

func requestSnapshot(ctx context.Context, hc *http.Client, r *replica) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url("/admin/snapshot"), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: POST /admin/snapshot %d", errHTTP, resp.StatusCode)
	}
	return nil
}

// catchUpResult is one follower's return after being left behind.
type catchUpResult struct {
	KeysWrittenWhileDown int64   `json:"keys_written_while_down"`
	FollowerStoppedAt    uint64  `json:"follower_applied_index_when_stopped"`
	LeaderFirstIndex     uint64  `json:"leader_first_log_index"`
	TargetIndex          uint64  `json:"target_applied_index"`
	Seconds              float64 `json:"seconds_to_caught_up"`
	// StartupSeconds is from the restart to the follower's first /status
	// answer: process start and opening its state, before any transfer.
	StartupSeconds float64 `json:"seconds_to_first_status"`
	LeaderSMBytes  uint64  `json:"leader_sm_allocated_bytes"`
	SMBytesBefore  uint64  `json:"follower_sm_bytes_before"`
	SMBytesAfter   uint64  `json:"follower_sm_bytes_after"`
	// StagedBytes is the peak of the follower's Dragonboat snapshot
	// directory while it caught up: the received stream, buffered whole
	// before install (as sent: Snappy-framed).
	StagedBytes uint64 `json:"staged_snapshot_bytes"`
	// ReceivedBytes comes from the follower's snapshot counters when keeld
	// reports them (ReceivedSource says which field), else it is the
	// size of the image it installed (its DIR/sm after catch-up).
	ReceivedBytes  uint64         `json:"received_bytes"`
	ReceivedSource string         `json:"received_source"`
	InstallMBPerS  float64        `json:"install_mb_per_sec"`
	DiskSeqMBPerS  float64        `json:"disk_seq_write_mb_per_sec"`
	FractionOfDisk float64        `json:"fraction_of_disk_seq_write"`
	SnapshotStatus map[string]any `json:"follower_snapshot_status,omitempty"`
}

// restartFollower restarts b's follower and waits until it has applied the
// leader's applied index as of the restart.
func restartFollower(ctx context.Context, c *cluster, b behind, limit time.Duration, prof *profiler) (catchUpResult, error) {
	res := catchUpResult{KeysWrittenWhileDown: b.written, FollowerStoppedAt: b.stoppedAt, LeaderFirstIndex: b.leaderFirst}
	st, err := c.status(ctx, b.leader)
	if err != nil {
		return res, err
	}
	res.TargetIndex = st.AppliedIndex
	res.LeaderSMBytes = allocatedBytes(filepath.Join(b.leader.dir, "sm"))
	res.SMBytesBefore = allocatedBytes(filepath.Join(b.follower.dir, "sm"))
	// Watch the follower's snapshot staging directory while it catches up.
	watchDone := make(chan struct{})
	watched := make(chan uint64, 1)
	go func() {
		var peak uint64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			_, snap := raftBytes(filepath.Join(b.follower.dir, "raft"))
			peak = max(peak, snap)
			select {
			case <-watchDone:
				watched <- peak
				return
			case <-t.C:
			}
		}
	}()
	defer func() {
		if watchDone != nil {
			close(watchDone)
			<-watched
		}
	}()
	start := time.Now()
	if err := c.f.start(b.follower); err != nil {
		return res, err
	}
	_ = poll(ctx, startTimeout, 10*time.Millisecond, func() bool {
		_, err := c.status(ctx, b.follower)
		return err == nil
	})
	res.StartupSeconds = time.Since(start).Seconds()
	waitProfiles := prof.start(ctx, c)
	defer waitProfiles()
	if err := c.waitApplied(ctx, b.follower, res.TargetIndex, limit); err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	close(watchDone)
	res.StagedBytes, watchDone = <-watched, nil
	res.SMBytesAfter = allocatedBytes(filepath.Join(b.follower.dir, "sm"))
	res.ReceivedBytes, res.ReceivedSource = res.SMBytesAfter, "follower DIR/sm allocated bytes after install"
	if fs, err := c.status(ctx, b.follower); err == nil {
		res.SnapshotStatus = snapshotFields(fs.Raw)
		if v, name := receivedCounter(res.SnapshotStatus, ""); v > 0 {
			res.ReceivedBytes, res.ReceivedSource = v, "status "+name
		}
	}
	if res.Seconds > 0 {
		res.InstallMBPerS = float64(res.ReceivedBytes) / 1e6 / res.Seconds
	}
	return res, nil
}

// snapshotFields keeps the /status fields about snapshots.
func snapshotFields(raw map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range raw {
		if strings.Contains(k, "snapshot") {
			out[k] = v
		}
	}
	return out
}

// receivedCounter finds a byte counter for received or installed
// snapshots in keeld's snapshot status, whatever its nesting.
func receivedCounter(m map[string]any, path string) (uint64, string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := strings.TrimPrefix(path+"."+k, ".")
		switch v := m[k].(type) {
		case map[string]any:
			if n, nm := receivedCounter(v, name); n > 0 {
				return n, nm
			}
		case float64:
			l := strings.ToLower(name)
			if strings.Contains(l, "bytes") && (strings.Contains(l, "recv") || strings.Contains(l, "receiv") || strings.Contains(l, "install")) && v > 0 {
				return uint64(v), name
			}
		}
	}
	return 0, ""
}

// underLoadResult is snapshot-under-load: writes while a follower installs
// a snapshot, compared with the write phase at the same K.
type underLoadResult struct {
	K int `json:"k"`
	loadResult
	CatchUp          catchUpResult `json:"catch_up"`
	BaselineP99Ms    float64       `json:"baseline_p99_ms"`
	P99Ratio         float64       `json:"p99_ratio"`
	BaselineOpsPerS  float64       `json:"baseline_ops_per_sec"`
	ThroughputRatio  float64       `json:"throughput_ratio"`
	LoadStoppedEarly bool          `json:"load_stopped_before_caught_up"`
}

// snapshotUnderLoad restarts b's follower while k clients write, and stops
// the writers when the follower has caught up (or after limit).
func snapshotUnderLoad(ctx context.Context, c *cluster, b behind, k int, prefix byte, limit time.Duration, base writeResult) (underLoadResult, error) {
	res := underLoadResult{K: k}
	stop := make(chan struct{})
	done := make(chan loadResult, 1)
	go func() {
		done <- load{K: k, N: 1 << 40, Limit: limit, Prefix: prefix, ValueSize: 256, Stop: stop}.run(ctx, c.f, b.leader)
	}()
	cu, err := restartFollower(ctx, c, b, limit, nil) // a profile would outlast the catch-up and stretch the load
	close(stop)
	res.loadResult = <-done
	res.CatchUp = cu
	res.LoadStoppedEarly = err != nil
	res.BaselineP99Ms, res.BaselineOpsPerS = base.Latency.P99, base.OpsPerSec
	if base.Latency.P99 > 0 {
		res.P99Ratio = res.Latency.P99 / base.Latency.P99
	}
	if base.OpsPerSec > 0 {
		res.ThroughputRatio = res.OpsPerSec / base.OpsPerSec
	}
	return res, err
}

// restartResult is the restart phase at one state size.
type restartResult struct {
	Label        string    `json:"label"`
	UserBytes    uint64    `json:"user_bytes"` // keys and values written
	Keys         uint64    `json:"keys"`
	SMBytes      uint64    `json:"sm_allocated_bytes_per_replica"`
	RaftBytes    uint64    `json:"raft_allocated_bytes_per_replica"`
	Runs         []float64 `json:"seconds_to_first_get"`
	MedianSecond float64   `json:"median_seconds_to_first_get"`
}

// fill writes bytes of user data in valueSize values with k clients.
func fill(ctx context.Context, c *cluster, bytes int64, valueSize, k int, prefix byte, limit time.Duration) (loadResult, error) {
	leader, err := c.waitLeader(ctx, startTimeout)
	if err != nil {
		return loadResult{}, err
	}
	n := bytes/int64(valueSize+16) + 1
	lr := load{K: k, N: n, Limit: limit, Prefix: prefix, ValueSize: valueSize}.run(ctx, c.f, leader)
	if lr.Ops < n {
		return lr, fmt.Errorf("fill: %d of %d puts in %s (%d failed)", lr.Ops, n, limit, lr.Failed)
	}
	return lr, nil
}

// restartTimes stops all three replicas (SIGTERM), starts them, and times
// the first linearizable GET answered by any replica, runs times.
func restartTimes(ctx context.Context, c *cluster, label string, runs int, probe string, userBytes uint64) (restartResult, error) {
	res := restartResult{Label: label, UserBytes: userBytes}
	leader, err := c.waitLeader(ctx, startTimeout)
	if err != nil {
		return res, err
	}
	st, err := c.status(ctx, leader)
	if err != nil {
		return res, err
	}
	res.Keys = st.Keys
	// Every replica applies everything first, so a restart does not time a
	// lagging follower's catch-up.
	for _, r := range c.reps {
		if err := c.waitApplied(ctx, r, st.AppliedIndex, 5*time.Minute); err != nil {
			return res, err
		}
	}
	for _, r := range c.reps {
		res.SMBytes = max(res.SMBytes, allocatedBytes(filepath.Join(r.dir, "sm")))
		res.RaftBytes = max(res.RaftBytes, allocatedBytes(filepath.Join(r.dir, "raft")))
	}
	for i := 0; i < runs; i++ {
		c.stopAll(false)
		start := time.Now()
		for _, r := range c.reps {
			if err := c.f.start(r); err != nil {
				return res, err
			}
		}
		el, err := firstGet(ctx, c, probe, start, 5*time.Minute)
		if err != nil {
			return res, fmt.Errorf("restart %s run %d: first GET: %w", label, i+1, err)
		}
		res.Runs = append(res.Runs, el.Seconds())
	}
	res.MedianSecond = median(res.Runs)
	return res, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// firstGet returns how long after start a linearizable GET of probe was
// first answered by any replica. A read sent before a leader exists waits
// out its own timeout instead of answering when one is elected, so reads
// are sent every probeEvery to each replica, overlapping, each bounded by
// probeTimeout and at most probeInFlight at a time.
func firstGet(ctx context.Context, c *cluster, probe string, start time.Time, limit time.Duration) (time.Duration, error) {
	const (
		probeEvery    = 5 * time.Millisecond
		probeTimeout  = 500 * time.Millisecond
		probeInFlight = 96
	)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	answered := make(chan time.Duration, 1)
	sem := make(chan struct{}, probeInFlight)
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		for _, r := range c.reps {
			select {
			case sem <- struct{}{}:
			default:
				continue // enough reads in flight; skip this tick
			}
			go func() {
				defer func() { <-sem }()
				gctx, gcancel := context.WithTimeout(ctx, probeTimeout)
				defer gcancel()
				if get(gctx, c.f.hc, r, probe) == nil {
					select {
					case answered <- time.Since(start):
					default:
					}
				}
			}()
		}
		select {
		case d := <-answered:
			return d, nil
		case <-ctx.Done():
			return 0, fmt.Errorf("%w after %s", errTimeout, limit)
		case <-t.C:
		}
	}
}
