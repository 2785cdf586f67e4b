//go:build linux

package main

// Catch-up by snapshot: a follower process is stopped, every shard's log
// moves past it, and it restarts. With --shards N the process hosts a
// replica of each shard, so every shard must be left behind and every
// shard must catch up.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// behind is a follower process stopped and left behind the compacted log
// of every shard it hosts.
//
// Invariants after leaveBehind: shards lists every shard the follower
// hosted, in shard order, each with LeaderFirst > StoppedAt+1; leader
// leads the lowest shard (shard 1 under --shards) and targets are the
// running processes leading a shard.
type behind struct {
	leader, follower *replica
	// targets are the processes leading at least one shard after the
	// stop, in replica order: writes go there.
	targets []*replica
	// stoppedAt and leaderFirst are shard 1's (the report's top-level
	// fields); shards has every shard's.
	stoppedAt   uint64
	leaderFirst uint64
	written     int64 // keys written while it was down
	shards      []shardCatchUp
}

// shardCatchUp is one shard of a catch-up.
type shardCatchUp struct {
	ShardID           uint64  `json:"shard_id"`
	StoppedAt         uint64  `json:"follower_applied_index_when_stopped"`
	LeaderFirst       uint64  `json:"leader_first_log_index"`
	Target            uint64  `json:"target_applied_index"`
	SnapshotsReceived uint64  `json:"snapshots_received"`
	Seconds           float64 `json:"seconds_to_caught_up"`
}

// passed records every shard's leader's first log index from v and
// reports whether each has moved past the follower's applied index (so the
// follower needs a snapshot of every shard).
func (b *behind) passed(v shardView) bool {
	leaders := v.leaders()
	all := len(b.shards) > 0
	for i := range b.shards {
		sc := &b.shards[i]
		if r, ok := leaders[sc.ShardID]; ok {
			if sh, ok := v[r].shard(sc.ShardID); ok {
				sc.LeaderFirst = sh.LogFirstIndex
			}
		}
		all = all && sc.LeaderFirst > sc.StoppedAt+1
		if sc.ShardID == 1 {
			b.stoppedAt, b.leaderFirst = sc.StoppedAt, sc.LeaderFirst
		}
	}
	return all
}

// leaderProcesses are the processes of v leading at least one shard, in
// the order of reps.
func leaderProcesses(v shardView, reps []*replica) []*replica {
	leads := map[*replica]bool{}
	for _, r := range v.leaders() {
		leads[r] = true
	}
	var out []*replica
	for _, r := range reps {
		if leads[r] {
			out = append(out, r)
		}
	}
	return out
}

// maxBehindRounds bounds leaveBehind's write-and-snapshot rounds.
const maxBehindRounds = 8

// leaveBehind stops the process leading the fewest shards (a follower
// when there is one shard) and writes until no shard's leader holds the
// entries after the follower's applied index, so its restart needs a
// snapshot of every shard. Each round writes m keys per shard (spread over
// the shards by keeld's key rule) through the processes leading a shard,
// asks both running processes for a snapshot of every shard (POST
// /admin/shards/{s}/snapshot), and waits for the log compactor; at most
// maxBehindRounds rounds.
func leaveBehind(ctx context.Context, c *cluster, m int64, k int, prefix byte, limit time.Duration) (b behind, err error) {
	v, err := c.waitLeaders(ctx, startTimeout)
	if err != nil {
		return b, err
	}
	f := v.fewestLeads(c.reps)
	if f == nil || len(v) < 2 {
		return b, fmt.Errorf("%w: no follower process to stop", errProcess)
	}
	// Let the follower apply what the leaders have (the cluster is idle),
	// so the index it stops at is its last.
	_, _ = c.waitAppliedAll(ctx, f, v.leaderApplied(), time.Now(), 5*time.Second)
	st, err := c.status(ctx, f)
	if err != nil {
		return b, err
	}
	for _, sh := range st.shardList() {
		b.shards = append(b.shards, shardCatchUp{ShardID: sh.ShardID, StoppedAt: sh.AppliedIndex})
	}
	c.f.stop(f, false)
	b.follower = f
	// On failure the follower comes back, so the phases after this one
	// still have all three replicas (two down would leave no quorum).
	defer func() {
		if err != nil {
			_ = c.f.start(f)
		}
	}()
	// The shards f led elect a leader among the other two.
	if v, err = c.waitLeaders(ctx, startTimeout); err != nil {
		return b, err
	}
	b.targets = leaderProcesses(v, c.reps)
	if ids := v.shardIDs(); len(ids) > 0 {
		b.leader = v.leaders()[ids[0]]
	}
	if b.leader == nil || len(b.targets) == 0 {
		return b, fmt.Errorf("%w: no leader after stopping replica %d", errProcess, f.id)
	}
	b.passed(v)
	n := int64(len(b.shards))
	for round := 0; round < maxBehindRounds; round++ {
		// One put per POST /txn: one Raft entry per key whatever keeld's
		// --write-batch, so m keys per shard grow each log by about m.
		lr := load{K: k, N: m * n, Limit: limit, Prefix: prefix + byte(round), ValueSize: 256, Txn: true, Batch: 1}.run(ctx, c.f, b.targets...)
		b.written += lr.Ops
		if lr.Ops == 0 {
			return b, fmt.Errorf("writing past the follower: no put succeeded (%d errors)", lr.Errors)
		}
		for _, r := range c.reps {
			if !r.alive() {
				continue
			}
			for _, sc := range b.shards {
				_ = requestSnapshot(ctx, c.f.hc, r, sc.ShardID) // 409 when a snapshot is already at this index
			}
		}
		// The compactor may reclaim a little later.
		_ = poll(ctx, 10*time.Second, 100*time.Millisecond, func() bool { return b.passed(c.view(ctx)) })
		if b.passed(c.view(ctx)) {
			return b, nil
		}
	}
	var still []string
	for _, sc := range b.shards {
		if sc.LeaderFirst <= sc.StoppedAt+1 {
			still = append(still, fmt.Sprintf("shard %d at %d (follower %d)", sc.ShardID, sc.LeaderFirst, sc.StoppedAt))
		}
	}
	return b, fmt.Errorf("after %d rounds the leaders' logs still hold the follower's next entry: %s", maxBehindRounds, strings.Join(still, ", "))
}

// requestSnapshot asks r for a snapshot of one shard.
func requestSnapshot(ctx context.Context, hc *http.Client, r *replica, shard uint64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url(fmt.Sprintf("/admin/shards/%d/snapshot", shard)), nil)
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
		return fmt.Errorf("%w: POST /admin/shards/%d/snapshot %d", errHTTP, shard, resp.StatusCode)
	}
	return nil
}

// catchUpResult is one follower process's return after being left behind.
// The top-level indexes are shard 1's; Shards has every shard's.
type catchUpResult struct {
	KeysWrittenWhileDown int64   `json:"keys_written_while_down"`
	FollowerStoppedAt    uint64  `json:"follower_applied_index_when_stopped"`
	LeaderFirstIndex     uint64  `json:"leader_first_log_index"`
	TargetIndex          uint64  `json:"target_applied_index"`
	Seconds              float64 `json:"seconds_to_caught_up"` // until every shard caught up
	// StartupSeconds is from the restart to the follower's first /status
	// answer: process start and opening its state, before any transfer.
	StartupSeconds float64 `json:"seconds_to_first_status"`
	LeaderSMBytes  uint64  `json:"leader_sm_allocated_bytes"` // largest of the running processes
	SMBytesBefore  uint64  `json:"follower_sm_bytes_before"`
	SMBytesAfter   uint64  `json:"follower_sm_bytes_after"`
	// StagedBytes is the peak of the follower's Dragonboat snapshot
	// directory while it caught up: the received stream, buffered whole
	// before install (as sent: Snappy-framed).
	StagedBytes uint64 `json:"staged_snapshot_bytes"`
	// ReceivedBytes comes from the follower's snapshot counters when keeld
	// reports them (ReceivedSource says which field), else it is the
	// size of the image it installed (its DIR/sm after catch-up).
	ReceivedBytes  uint64  `json:"received_bytes"`
	ReceivedSource string  `json:"received_source"`
	InstallMBPerS  float64 `json:"install_mb_per_sec"`
	DiskSeqMBPerS  float64 `json:"disk_seq_write_mb_per_sec"`
	// DiskProbe says which probe DiskSeqMBPerS is, the larger of the
	// limits phase's and DiskSeqAfterMBPerS, measured right after the
	// catch-up (probeAfterCatchUp).
	DiskProbe          string  `json:"disk_probe"`
	DiskSeqAfterMBPerS float64 `json:"disk_seq_write_after_mb_per_sec"`
	FractionOfDisk     float64 `json:"fraction_of_disk_seq_write"`
	// SnapshotsReceived sums the follower's shards' snapshots_received
	// after catch-up (at least one per shard, or the phase fails).
	SnapshotsReceived uint64         `json:"snapshots_received"`
	Shards            []shardCatchUp `json:"shards,omitempty"`
	SnapshotStatus    map[string]any `json:"follower_snapshot_status,omitempty"`
}

// caughtUpBySnapshot checks that every shard of the follower's status
// installed a snapshot, fills each shard's count into res and sums them.
// A keeld without the shards list (no per-shard counters) is not checked.
func (res *catchUpResult) caughtUpBySnapshot(st status) error {
	if len(st.Shards) == 0 {
		return nil
	}
	var none []string
	res.SnapshotsReceived = 0
	for i := range res.Shards {
		sc := &res.Shards[i]
		sh, _ := st.shard(sc.ShardID)
		sc.SnapshotsReceived = sh.SnapshotsReceived
		res.SnapshotsReceived += sh.SnapshotsReceived
		if sh.SnapshotsReceived == 0 {
			none = append(none, fmt.Sprint(sc.ShardID))
		}
	}
	if len(none) > 0 {
		return fmt.Errorf("%w: shard(s) %s caught up without installing a snapshot", errNoSnapshot, strings.Join(none, ", "))
	}
	return nil
}

// restartFollower restarts b's follower and waits until every shard on it
// has applied its leader's applied index as of the restart (the leaders
// idle, or written to by snapshotUnderLoad).
func restartFollower(ctx context.Context, c *cluster, b behind, limit time.Duration, prof *profiler) (catchUpResult, error) {
	res := catchUpResult{KeysWrittenWhileDown: b.written, FollowerStoppedAt: b.stoppedAt, LeaderFirstIndex: b.leaderFirst}
	v, err := c.waitLeaders(ctx, startTimeout)
	if err != nil {
		return res, err
	}
	targets := map[uint64]uint64{}
	applied := v.leaderApplied()
	for _, sc := range b.shards {
		sc.Target = applied[sc.ShardID]
		targets[sc.ShardID] = sc.Target
		res.Shards = append(res.Shards, sc)
	}
	res.TargetIndex = targets[1]
	for r := range v {
		res.LeaderSMBytes = max(res.LeaderSMBytes, allocatedBytes(filepath.Join(r.dir, "sm")))
	}
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
	at, err := c.waitAppliedAll(ctx, b.follower, targets, start, limit)
	if err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	for i := range res.Shards {
		res.Shards[i].Seconds = at[res.Shards[i].ShardID].Seconds()
	}
	close(watchDone)
	res.StagedBytes, watchDone = <-watched, nil
	res.SMBytesAfter = settledBytes(ctx, filepath.Join(b.follower.dir, "sm"))
	res.ReceivedBytes, res.ReceivedSource = res.SMBytesAfter, "follower DIR/sm allocated bytes after install, settled"
	fs, err := c.status(ctx, b.follower)
	if err != nil {
		return res, err
	}
	res.SnapshotStatus = snapshotFields(fs.Raw)
	if v, name := receivedCounter(res.SnapshotStatus, ""); v > 0 {
		res.ReceivedBytes, res.ReceivedSource = v, "status "+name
	}
	if res.Seconds > 0 {
		res.InstallMBPerS = float64(res.ReceivedBytes) / 1e6 / res.Seconds
	}
	return res, res.caughtUpBySnapshot(fs)
}

// settledBytes is dir's allocated size once it stopped shrinking (two
// samples 100 ms apart, at most 5 s). The follower reports its new applied
// index before it removes the image the install replaced (sm's
// RecoverFromSnapshot closes and deletes it after the swap), so a sample
// taken at once could count both images: that is where the 291-374 MB
// seen "installed" for a 201 MB image came from in one round in four.
func settledBytes(ctx context.Context, dir string) uint64 {
	prev := allocatedBytes(dir)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		cur := allocatedBytes(dir)
		if cur >= prev {
			return cur
		}
		prev = cur
	}
	return prev
}

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
