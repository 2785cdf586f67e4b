//go:build linux

package main

// Restart to serving: stop keeld processes (SIGTERM), start them on the
// same directories, and time until every shard answers a linearizable
// GET. With --shards N one probe key per shard (probeKeys) is read, so
// the time is that of the slowest shard.

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// settle waits until every replica has applied its shard leader's applied
// index, so a restart does not time a lagging follower's catch-up, and
// fills in res's sizes and shard count. It returns the cluster's view.
func settle(ctx context.Context, c *cluster, res *restartResult) (shardView, error) {
	v, err := c.waitLeaders(ctx, startTimeout)
	if err != nil {
		return v, err
	}
	targets := v.leaderApplied()
	res.Shards = len(targets)
	res.Keys = 0
	for id, r := range v.leaders() {
		if sh, ok := v[r].shard(id); ok {
			res.Keys += sh.Keys
		}
	}
	for _, r := range c.reps {
		if _, err := c.waitAppliedAll(ctx, r, targets, time.Now(), 5*time.Minute); err != nil {
			return v, err
		}
	}
	for _, r := range c.reps {
		res.SMBytes = max(res.SMBytes, allocatedBytes(filepath.Join(r.dir, "sm")))
		res.RaftBytes = max(res.RaftBytes, allocatedBytes(filepath.Join(r.dir, "raft")))
	}
	return v, nil
}

// restartTimes stops all three replicas (SIGTERM), starts them, and times
// until every shard has answered a linearizable GET from any replica, runs
// times.
func restartTimes(ctx context.Context, c *cluster, label string, runs int, userBytes uint64) (restartResult, error) {
	res := restartResult{Label: label, Restarted: "all", UserBytes: userBytes}
	return timeRestarts(ctx, c, &res, runs, func(i int, probes []string) (time.Duration, error) {
		c.stopAll(false)
		start := time.Now()
		for _, r := range c.reps {
			if err := c.f.start(r); err != nil {
				return 0, err
			}
		}
		el, err := serving(ctx, c, probes, c.reps, start, 5*time.Minute)
		if err != nil {
			return 0, fmt.Errorf("restart %s run %d: first GET of every shard: %w", label, i+1, err)
		}
		return el, nil
	})
}

// restartOneTimes restarts one process (SIGTERM), the one leading the
// fewest shards at that moment, while the other two keep running, and
// times until every shard it hosts has answered a linearizable GET sent
// to it, runs times. Shards it led elect again meanwhile; LedShards says
// how many there were.
func restartOneTimes(ctx context.Context, c *cluster, label string, runs int, userBytes uint64) (restartResult, error) {
	res := restartResult{Label: label, Restarted: "one", UserBytes: userBytes}
	return timeRestarts(ctx, c, &res, runs, func(i int, probes []string) (time.Duration, error) {
		v, err := c.waitLeaders(ctx, startTimeout)
		if err != nil {
			return 0, err
		}
		r := v.fewestLeads(c.reps)
		led := 0
		for _, l := range v.leaders() {
			if l == r {
				led++
			}
		}
		res.LedShards = append(res.LedShards, led)
		c.f.stop(r, false)
		start := time.Now()
		if err := c.f.start(r); err != nil {
			return 0, err
		}
		el, err := serving(ctx, c, probes, []*replica{r}, start, 5*time.Minute)
		if err != nil {
			return 0, fmt.Errorf("restart %s run %d: replica %d serving every shard: %w", label, i+1, r.id, err)
		}
		return el, nil
	})
}

// timeRestarts settles the cluster into res, picks one probe key per shard
// and records run's time for each of runs runs, then their median.
func timeRestarts(ctx context.Context, c *cluster, res *restartResult, runs int, run func(i int, probes []string) (time.Duration, error)) (restartResult, error) {
	if _, err := settle(ctx, c, res); err != nil {
		return *res, err
	}
	probes, err := probeKeys('r', res.Shards)
	if err != nil {
		return *res, err
	}
	for i := 0; i < runs; i++ {
		el, err := run(i, probes)
		if err != nil {
			return *res, err
		}
		res.Runs = append(res.Runs, el.Seconds())
	}
	res.MedianSecond = median(res.Runs)
	return *res, nil
}
