//go:build linux

package main

import (
	"fmt"
	"github.com/keel-db/keel/bench/internal/benchout"
	"strings"
)

// report is cluster.json.
type report struct {
	Started string           `json:"started"`
	Seconds float64          `json:"seconds"`
	Host    benchout.Machine `json:"host"`
	Config  options          `json:"config"`
	Notes   []string         `json:"notes"`
	Limits  *limitsResult    `json:"limits,omitempty"`
	Write   []writeResult    `json:"write"`
	// WriteBase and AB: with -keeld-base, the baseline's write runs and
	// the comparison (ab.go); Write then holds the candidate's.
	WriteBase []writeResult `json:"write_baseline,omitempty"`
	AB        []abRow       `json:"ab,omitempty"`
	// WriteTxn are write runs with many puts per request (POST /txn): what
	// Keel does when HTTP's per-request cost is shared. Not used for the
	// targets, which are per PUT.
	WriteTxn []writeResult `json:"write_txn,omitempty"`
	// ShardsRows: with -shards-list, every figure per shard count
	// (matrix.go); the phases' own fields above are then empty.
	ShardsRows []shardsRow      `json:"shards_rows,omitempty"`
	Under      *underLoadResult `json:"snapshot_under_load,omitempty"`
	CatchUp    *catchUpResult   `json:"catch_up,omitempty"`
	Restart    []restartResult  `json:"restart"`
	// RestartRatio is the large state's median restart over the small's.
	RestartRatio float64  `json:"restart_ratio,omitempty"`
	Disk         diskMem  `json:"disk_and_memory"`
	Targets      []target `json:"targets"`
	Errors       []string `json:"errors,omitempty"`
}

// target is one of the targets for a 2-core, 24 GiB machine. Pass
// is nil when the figure was not measured in this run. Targets are
// reported, never asserted.
type target struct {
	Name     string  `json:"name"`
	Goal     string  `json:"goal"`
	Measured float64 `json:"measured"`
	Unit     string  `json:"unit"`
	Pass     *bool   `json:"pass"`
	Note     string  `json:"note,omitempty"`
}

func (t target) verdict() string {
	switch {
	case t.Pass == nil:
		return "n/a"
	case *t.Pass:
		return "pass"
	default:
		return "MISS"
	}
}

func check(name, goal, unit string, measured float64, ok bool, have bool, note string) target {
	t := target{Name: name, Goal: goal, Unit: unit, Measured: measured, Note: note}
	if have {
		t.Pass = &ok
	}
	return t
}

// targets evaluates the targets against what this run measured.
func (r *report) targets() []target {
	var out []target
	w := map[int]*writeResult{}
	for i := range r.Write {
		w[r.Write[i].K] = &r.Write[i]
	}
	w16, w256 := w[16], w[256]
	out = append(out,
		check("write K=16 throughput", ">= 15000", "ops/s", opsOf(w16), opsOf(w16) >= 15000, w16 != nil, ""),
		check("write K=16 p99", "<= 4", "ms", p99Of(w16), p99Of(w16) <= 4, w16 != nil, ""),
		check("write K=256 throughput", ">= 40000", "ops/s", opsOf(w256), opsOf(w256) >= 40000, w256 != nil, ""),
	)
	var cpu float64
	if w256 != nil {
		cpu = w256.ServerCPUPerOpUS
	}
	out = append(out, check("server CPU per write at K=256 (3 replicas)", "<= 60", "µs", cpu, cpu <= 60, w256 != nil, ""))
	if r.Under != nil && r.Under.P99Ratio > 0 {
		out = append(out, check("p99 while a snapshot streams / p99 without", "<= 1.2", "x", r.Under.P99Ratio, r.Under.P99Ratio <= 1.2, true,
			fmt.Sprintf("K=%d", r.Under.K)))
	} else {
		out = append(out, check("p99 while a snapshot streams / p99 without", "<= 1.2", "x", 0, false, false, "not measured"))
	}
	if r.CatchUp != nil && r.CatchUp.FractionOfDisk > 0 {
		out = append(out, check("catch-up install rate / disk seq write", ">= 0.5", "fraction", r.CatchUp.FractionOfDisk, r.CatchUp.FractionOfDisk >= 0.5, true, ""))
	} else if f, n := shardsCatchUpFraction(r.ShardsRows); f > 0 {
		out = append(out, check("catch-up install rate / disk seq write", ">= 0.5", "fraction", f, f >= 0.5, true,
			fmt.Sprintf("--shards %d, median of the runs", n)))
	} else {
		out = append(out, check("catch-up install rate / disk seq write", ">= 0.5", "fraction", 0, false, false, "not measured"))
	}
	var large *restartResult
	for i := range r.Restart {
		if r.Restart[i].Label == "large" {
			large = &r.Restart[i]
		}
	}
	if large != nil && large.UserBytes >= 1e9 {
		out = append(out, check("restart at >= 1 GB", "<= 0.5", "s", large.MedianSecond, large.MedianSecond <= 0.5, true, ""))
		out = append(out, check("restart at 1 GB / at 10 MB", "<= 1.5", "x", r.RestartRatio, r.RestartRatio <= 1.5, r.RestartRatio > 0, ""))
	} else {
		out = append(out, check("restart at >= 1 GB", "<= 0.5", "s", 0, false, false, "large state skipped (-restart-large-mb)"))
		out = append(out, check("restart at 1 GB / at 10 MB", "<= 1.5", "x", r.RestartRatio, false, false, "large state skipped"))
	}
	// The target is for the write runs (256-byte values); the peak over
	// the whole run, 64 KiB fills included, is reported beside it.
	var raftWrite uint64
	for phase, v := range r.Disk.PeakRaftByPhase {
		if strings.HasPrefix(phase, "write-") {
			raftWrite = max(raftWrite, v)
		}
	}
	raftMiB := float64(raftWrite) / (1 << 20)
	out = append(out, check("Raft log allocated per replica during writes (peak)", "<= 64", "MiB", raftMiB, raftMiB <= 64, raftWrite > 0,
		fmt.Sprintf("DIR/raft without snapshot staging; whole run %.0f MiB; staged snapshot streams peaked at %.0f MiB",
			float64(r.Disk.PeakRaftBytes)/(1<<20), float64(r.Disk.PeakRaftSnapBytes)/(1<<20))))
	var rss uint64
	for phase, v := range r.Disk.PeakRSSByPhase {
		if strings.HasPrefix(phase, "restart-large") || strings.HasPrefix(phase, "fill-large") {
			rss = max(rss, v)
		}
	}
	rssMiB := float64(rss) / (1 << 20)
	out = append(out, check("peak RSS per replica at 1 GB", "<= 200", "MiB", rssMiB, rssMiB <= 200, rss > 0 && large != nil && large.UserBytes >= 1e9,
		fmt.Sprintf("peak over the whole run: %.0f MiB", float64(r.Disk.PeakRSSBytes)/(1<<20))))
	return out
}

func opsOf(w *writeResult) float64 {
	if w == nil {
		return 0
	}
	return w.OpsPerSec
}

func p99Of(w *writeResult) float64 {
	if w == nil {
		return 0
	}
	return w.Latency.P99
}

// shardsCatchUpFraction is the candidate's median catch-up fraction of the
// disk at the first -shards-list count that measured one, and that count.
func shardsCatchUpFraction(rows []shardsRow) (float64, int) {
	for _, row := range rows {
		if row.Recovery != nil && row.Recovery.Candidate.FractionOfDisk > 0 {
			return row.Recovery.Candidate.FractionOfDisk, row.Shards
		}
	}
	return 0, 0
}
