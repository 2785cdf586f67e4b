//go:build linux

package main

// -shards-list: the same figures for several shard counts in one
// invocation. For each N the three keeld processes run with --shards N
// (every process hosts a replica of every shard), and the candidate and
// the baseline (-keeld-base) alternate, A,B then B,A, -rounds times:
// the write runs (abWrites, at every -k) and a recovery run per binary
// and round, on a fresh cluster each: fill -restart-small-mb, catch-up
// of one stopped process by snapshot (every shard left behind, every
// shard caught up), then restart-to-serving of one process and of all
// three. Each N gives a shardsRow in the report, with the medians of
// each side and their ratios candidate/baseline.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// shardsRow is every figure at one shard count.
type shardsRow struct {
	Shards int `json:"shards"`
	// Write compares the write runs per K (WriteRuns holds them, both
	// binaries).
	Write     []abRow       `json:"write"`
	WriteRuns []writeResult `json:"write_runs"`
	// Recovery compares catch-up and restart (RecoveryRuns holds them).
	Recovery     *recoveryRow     `json:"recovery,omitempty"`
	RecoveryRuns []recoveryResult `json:"recovery_runs"`
}

// recoveryResult is one recovery run: one binary, one round, one cluster.
// A part that failed is nil (the error is in the report's errors).
type recoveryResult struct {
	Binary     string         `json:"binary"`
	Round      int            `json:"round"`
	FillMB     float64        `json:"fill_user_mb"`
	CatchUp    *catchUpResult `json:"catch_up,omitempty"`
	RestartOne *restartResult `json:"restart_one,omitempty"`
	RestartAll *restartResult `json:"restart_all,omitempty"`
}

// recoverySide is one binary's medians over its recovery runs (0 where
// not measured).
type recoverySide struct {
	Runs              int     `json:"runs"`
	CatchUpSeconds    float64 `json:"catch_up_seconds"`
	StartupSeconds    float64 `json:"catch_up_seconds_to_first_status"`
	InstalledMB       float64 `json:"catch_up_installed_mb"`
	InstallMBPerS     float64 `json:"catch_up_install_mb_per_sec"`
	SnapshotsReceived float64 `json:"catch_up_snapshots_received"`
	// FractionOfDisk is the median of each run's MB/s over the disk's
	// sequential write (probeAfterCatchUp: the larger of the limits phase's probe and one right after the run).
	FractionOfDisk    float64 `json:"catch_up_fraction_of_disk_seq_write"`
	RestartOneSeconds float64 `json:"restart_one_seconds"`
	RestartAllSeconds float64 `json:"restart_all_seconds"`
}

// recoveryRow compares the candidate's recovery runs with the baseline's
// at one shard count: medians per side, their ratio, and each round's own
// ratio (the two runs of a round ran back to back).
type recoveryRow struct {
	Shards               int          `json:"shards"`
	Candidate            recoverySide `json:"candidate"`
	Baseline             recoverySide `json:"baseline"`
	Ratio                recoverySide `json:"ratio"` // candidate / baseline; Runs unused
	RoundCatchUpRatio    []float64    `json:"round_catch_up_ratio"`
	RoundRestartOneRatio []float64    `json:"round_restart_one_ratio"`
	RoundRestartAllRatio []float64    `json:"round_restart_all_ratio"`
}

// parseShardsList parses -shards-list: shard counts from 1 to 1000, comma
// separated, no repeats; "" is none.
func parseShardsList(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1000 {
			return nil, fmt.Errorf("-shards-list: %q is not a number from 1 to 1000", f)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("-shards-list: %d twice", n)
		}
		out = append(out, n)
	}
	return out, nil
}

// setsShards reports whether keeld args already choose the shards, which
// -shards-list does per row.
func setsShards(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "shards" || name == "shard-map" || name == "shard-id") {
			return true
		}
	}
	return false
}

// sideOfRecovery is the medians of runs.
func sideOfRecovery(runs []recoveryResult) recoverySide {
	var cu, start, mb, rate, snaps, frac, one, all []float64
	for _, r := range runs {
		if r.CatchUp != nil {
			cu = append(cu, r.CatchUp.Seconds)
			start = append(start, r.CatchUp.StartupSeconds)
			mb = append(mb, float64(r.CatchUp.ReceivedBytes)/1e6)
			rate = append(rate, r.CatchUp.InstallMBPerS)
			snaps = append(snaps, float64(r.CatchUp.SnapshotsReceived))
			if r.CatchUp.FractionOfDisk > 0 {
				frac = append(frac, r.CatchUp.FractionOfDisk)
			}
		}
		if r.RestartOne != nil {
			one = append(one, r.RestartOne.MedianSecond)
		}
		if r.RestartAll != nil {
			all = append(all, r.RestartAll.MedianSecond)
		}
	}
	return recoverySide{Runs: len(runs), CatchUpSeconds: median(cu), StartupSeconds: median(start), InstalledMB: median(mb),
		InstallMBPerS: median(rate), SnapshotsReceived: median(snaps), FractionOfDisk: median(frac), RestartOneSeconds: median(one), RestartAllSeconds: median(all)}
}

// recoveryRowOf aggregates one shard count's recovery runs.
func recoveryRowOf(shards int, runs []recoveryResult) recoveryRow {
	var cand, base []recoveryResult
	for _, r := range runs {
		if r.Binary == "baseline" {
			base = append(base, r)
		} else {
			cand = append(cand, r)
		}
	}
	row := recoveryRow{Shards: shards, Candidate: sideOfRecovery(cand), Baseline: sideOfRecovery(base)}
	c, b := row.Candidate, row.Baseline
	row.Ratio = recoverySide{
		CatchUpSeconds: ratio(c.CatchUpSeconds, b.CatchUpSeconds), StartupSeconds: ratio(c.StartupSeconds, b.StartupSeconds),
		InstalledMB: ratio(c.InstalledMB, b.InstalledMB), InstallMBPerS: ratio(c.InstallMBPerS, b.InstallMBPerS),
		SnapshotsReceived: ratio(c.SnapshotsReceived, b.SnapshotsReceived), FractionOfDisk: ratio(c.FractionOfDisk, b.FractionOfDisk),
		RestartOneSeconds: ratio(c.RestartOneSeconds, b.RestartOneSeconds), RestartAllSeconds: ratio(c.RestartAllSeconds, b.RestartAllSeconds),
	}
	for _, a := range cand {
		for _, z := range base {
			if a.Round != z.Round {
				continue
			}
			if a.CatchUp != nil && z.CatchUp != nil {
				row.RoundCatchUpRatio = append(row.RoundCatchUpRatio, ratio(a.CatchUp.Seconds, z.CatchUp.Seconds))
			}
			if a.RestartOne != nil && z.RestartOne != nil {
				row.RoundRestartOneRatio = append(row.RoundRestartOneRatio, ratio(a.RestartOne.MedianSecond, z.RestartOne.MedianSecond))
			}
			if a.RestartAll != nil && z.RestartAll != nil {
				row.RoundRestartAllRatio = append(row.RoundRestartAllRatio, ratio(a.RestartAll.MedianSecond, z.RestartAll.MedianSecond))
			}
		}
	}
	return row
}

// binary is a keeld build the benchmark runs: the candidate (-keeld, or
// the one built) and, with -keeld-base, the baseline.
type binary struct{ label, path string }

func binaries(fl *fleet, o options) []binary {
	bins := []binary{{"candidate", fl.keeld}}
	if o.KeeldBase != "" {
		bins = append(bins, binary{"baseline", o.KeeldBase})
	}
	return bins
}

// roundOrder is the order of bins in a round: as given in odd rounds,
// reversed in even ones (A,B then B,A).
func roundOrder(bins []binary, round int) []binary {
	out := slices.Clone(bins)
	if round%2 == 0 {
		slices.Reverse(out)
	}
	return out
}

// shardsMatrix runs the write, catch-up and restart phases (those -phases
// selects) for every -shards-list count, into rep.ShardsRows.
func shardsMatrix(ctx context.Context, fl *fleet, smp *sampler, o options, rep *report, fail func(string, error)) {
	base := fl.args
	defer func() { fl.args = base }()
	for _, n := range o.ShardsList {
		if ctx.Err() != nil {
			return
		}
		fl.args = append(slices.Clone(base), "--shards", strconv.Itoa(n))
		tag := fmt.Sprintf("shards%d", n)
		row := shardsRow{Shards: n}
		if o.runs("write") {
			sub := &report{}
			// No batched-txn run: its 64 random keys span shards, and
			// keeld refuses a cross-shard txn (the per-PUT rows are
			// what the matrix reports).
			wo := o
			wo.TxnBatch = 0
			abWrites(ctx, fl, smp, wo, sub, fail, tag)
			row.Write = sub.AB
			row.WriteRuns = append(sub.Write, sub.WriteBase...)
		}
		if o.runs("catch-up") || o.runs("restart") {
			for round := 1; round <= o.Rounds && ctx.Err() == nil; round++ {
				for _, b := range roundOrder(binaries(fl, o), round) {
					if ctx.Err() != nil {
						break
					}
					r := recoveryRun(ctx, fl, smp, o, rep.Limits, fmt.Sprintf("%s-recovery-%s-r%d", tag, b.label, round), b.path, fail)
					r.Binary, r.Round = b.label, round
					row.RecoveryRuns = append(row.RecoveryRuns, r)
				}
			}
			rr := recoveryRowOf(n, row.RecoveryRuns)
			row.Recovery = &rr
			logf("A/B --shards %d recovery: catch-up %.2f vs %.2f s (x%.2f, rounds %s), %.1f MB at %.1f MB/s, %.0f snapshots; restart one %.3f vs %.3f s (x%.2f, rounds %s); restart all %.3f vs %.3f s (x%.2f, rounds %s)",
				n, rr.Candidate.CatchUpSeconds, rr.Baseline.CatchUpSeconds, rr.Ratio.CatchUpSeconds, fmtRatios(rr.RoundCatchUpRatio),
				rr.Candidate.InstalledMB, rr.Candidate.InstallMBPerS, rr.Candidate.SnapshotsReceived,
				rr.Candidate.RestartOneSeconds, rr.Baseline.RestartOneSeconds, rr.Ratio.RestartOneSeconds, fmtRatios(rr.RoundRestartOneRatio),
				rr.Candidate.RestartAllSeconds, rr.Baseline.RestartAllSeconds, rr.Ratio.RestartAllSeconds, fmtRatios(rr.RoundRestartAllRatio))
		}
		rep.ShardsRows = append(rep.ShardsRows, row)
	}
	for _, line := range shardsSummary(rep.ShardsRows) {
		logf("%s", line)
	}
}

// shardsSummary is one line per shard count and figure: candidate,
// baseline and their ratio.
func shardsSummary(rows []shardsRow) []string {
	var out []string
	f := func(n int, what string, c, b, r float64) {
		out = append(out, fmt.Sprintf("--shards %-3d %-32s %10.3f %10.3f  x%.2f", n, what, c, b, r))
	}
	for _, row := range rows {
		for _, w := range row.Write {
			k := fmt.Sprintf("K=%d ", w.K)
			f(row.Shards, k+"PUT/s", w.Candidate.OpsPerSec, w.Baseline.OpsPerSec, w.Ratio.OpsPerSec)
			f(row.Shards, k+"p50 ms", w.Candidate.P50Ms, w.Baseline.P50Ms, w.Ratio.P50Ms)
			f(row.Shards, k+"p99 ms", w.Candidate.P99Ms, w.Baseline.P99Ms, w.Ratio.P99Ms)
			f(row.Shards, k+"server CPU µs per PUT", w.Candidate.ServerCPUPerOpUS, w.Baseline.ServerCPUPerOpUS, w.Ratio.ServerCPUPerOpUS)
		}
		if r := row.Recovery; r != nil {
			f(row.Shards, "catch-up s", r.Candidate.CatchUpSeconds, r.Baseline.CatchUpSeconds, r.Ratio.CatchUpSeconds)
			f(row.Shards, "catch-up MB installed", r.Candidate.InstalledMB, r.Baseline.InstalledMB, r.Ratio.InstalledMB)
			f(row.Shards, "catch-up MB/s", r.Candidate.InstallMBPerS, r.Baseline.InstallMBPerS, r.Ratio.InstallMBPerS)
			f(row.Shards, "catch-up / disk seq write", r.Candidate.FractionOfDisk, r.Baseline.FractionOfDisk, r.Ratio.FractionOfDisk)
			f(row.Shards, "restart one process, s", r.Candidate.RestartOneSeconds, r.Baseline.RestartOneSeconds, r.Ratio.RestartOneSeconds)
			f(row.Shards, "restart all three, s", r.Candidate.RestartAllSeconds, r.Baseline.RestartAllSeconds, r.Ratio.RestartAllSeconds)
		}
	}
	return out
}

// recoveryRun is one binary's catch-up and restarts on a fresh cluster:
// fill -restart-small-mb in -fill-value values, leave one process behind
// every shard's compacted log and time its catch-up, then time restarts
// of one process and of all three (-restart-runs each, median).
func recoveryRun(ctx context.Context, fl *fleet, smp *sampler, o options, lim *limitsResult, name, keeld string, fail func(string, error)) recoveryResult {
	var res recoveryResult
	c, err := fl.newClusterOf(ctx, name, keeld)
	if err != nil {
		fail(name, err)
		return res
	}
	defer func() { c.stopAll(false); keepLogs(fl.root, name); _ = os.RemoveAll(filepath.Join(fl.root, name)) }()
	smp.set(c, name+"-fill")
	lr, err := fill(ctx, c, o.SmallMB*1e6, o.FillValue, 16, 'r', o.PhaseLimit)
	if err != nil {
		fail(name, err)
		return res
	}
	user := uint64(lr.Ops) * uint64(o.FillValue+16)
	res.FillMB = float64(user) / 1e6
	if o.runs("catch-up") {
		smp.set(c, name+"-catch-up")
		b, err := leaveBehind(ctx, c, o.CatchUpKeys, 64, 'q', o.PhaseLimit)
		if err == nil {
			user += uint64(b.written) * (256 + 16)
			var cu catchUpResult
			if cu, err = restartFollower(ctx, c, b, o.PhaseLimit, nil); err == nil {
				probeAfterCatchUp(filepath.Join(fl.root, name), o, lim, &cu)
				res.CatchUp = &cu
				logf("%s: caught up in %.2f s (%.2f s to first /status), %.1f MB at %.1f MB/s = %.2f of the disk's %.0f MB/s (%s), %d snapshots over %d shards",
					name, cu.Seconds, cu.StartupSeconds, float64(cu.ReceivedBytes)/1e6, cu.InstallMBPerS, cu.FractionOfDisk, cu.DiskSeqMBPerS, cu.DiskProbe, cu.SnapshotsReceived, len(cu.Shards))
			}
		}
		if err != nil {
			fail(name+" catch-up", err)
		}
	}
	if o.runs("restart") && ctx.Err() == nil {
		smp.set(c, name+"-restart")
		if r, err := restartOneTimes(ctx, c, "one", o.RestartRuns, user); err != nil {
			fail(name+" restart one", err)
		} else {
			res.RestartOne = &r
		}
		if r, err := restartTimes(ctx, c, "all", o.RestartRuns, user); err != nil {
			fail(name+" restart all", err)
		} else {
			res.RestartAll = &r
		}
		if res.RestartOne != nil && res.RestartAll != nil {
			logf("%s: every shard serving after restarting one process %v s (it led %v shards), all three %v s",
				name, res.RestartOne.Runs, res.RestartOne.LedShards, res.RestartAll.Runs)
		}
	}
	return res
}

// keepLogs copies the keeld logs of run name (root/name/r*.log) into
// $KEEL_BENCH_KEEP_LOGS/name when that is set, before the run's
// directory is removed: with -keeld-args '--log-level debug' they hold
// Dragonboat's and Keel's timeline of a catch-up.
func keepLogs(root, name string) {
	dst := os.Getenv("KEEL_BENCH_KEEP_LOGS")
	if dst == "" {
		return
	}
	logs, _ := filepath.Glob(filepath.Join(root, name, "r*.log"))
	if err := os.MkdirAll(filepath.Join(dst, name), 0o755); err != nil {
		logf("keep logs: %v", err)
		return
	}
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, name, filepath.Base(l)), b, 0o644)
		}
		if err != nil {
			logf("keep logs: %v", err)
		}
	}
}
