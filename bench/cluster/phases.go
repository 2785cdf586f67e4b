//go:build linux

package main

import (
	"context"
	"fmt"
	"sort"
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
		done <- load{K: k, N: 1 << 40, Limit: limit, Prefix: prefix, ValueSize: 256, Stop: stop}.run(ctx, c.f, b.targets...)
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

// restartResult is the restart phase at one state size: all three
// processes restarted (Restarted "all"), or one (Restarted "one", the
// process leading the fewest shards; LedShards says how many it led at
// each stop). A run ends when every shard has answered a linearizable GET
// from a restarted process.
type restartResult struct {
	Label        string    `json:"label"`
	Restarted    string    `json:"restarted,omitempty"`
	Shards       int       `json:"shards,omitempty"`
	LedShards    []int     `json:"shards_led_by_restarted,omitempty"`
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
