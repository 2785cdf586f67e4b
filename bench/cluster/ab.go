//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// abSide is one half of an A/B write comparison: medians over its rounds.
type abSide struct {
	OpsPerSec        float64 `json:"ops_per_sec"`
	P50Ms            float64 `json:"p50_ms"`
	P99Ms            float64 `json:"p99_ms"`
	ServerCPUPerOpUS float64 `json:"server_cpu_us_per_op"`
	ClientCPUPerOpUS float64 `json:"client_cpu_us_per_op"`
}

// abRow compares the candidate keeld (-keeld, or the one built) with the
// baseline (-keeld-base) at one K: medians of each side's rounds, the
// ratio candidate/baseline of each median, and the ratio within each
// round (the two runs of a round ran back to back, so a round's ratio
// sees the least drift of the shared machine).
type abRow struct {
	K              int       `json:"k"`
	PutsPerRequest int       `json:"puts_per_request"`
	Rounds         int       `json:"rounds"`
	Candidate      abSide    `json:"candidate"`
	Baseline       abSide    `json:"baseline"`
	Ratio          abSide    `json:"ratio"` // candidate / baseline, per figure
	RoundOpsRatio  []float64 `json:"round_ops_ratio"`
	RoundCPURatio  []float64 `json:"round_server_cpu_ratio"`
}

// abWrites runs the write phase for the candidate and the baseline keeld
// alternately: each round runs every K once per binary, the candidate
// first in odd rounds and the baseline first in even ones (A,B then B,A),
// each run on a fresh cluster. Results go to rep.Write (candidate),
// rep.WriteBase (baseline) and rep.AB. Without a baseline (-shards-list
// alone) only the candidate runs and AB holds its medians, ratios 0. tag,
// when not empty, prefixes every run's name.
func abWrites(ctx context.Context, fl *fleet, smp *sampler, o options, rep *report, fail func(string, error), tag string) {
	type spec struct {
		k, batch int
	}
	var specs []spec
	for _, k := range o.Ks {
		specs = append(specs, spec{k, 1})
	}
	if o.TxnBatch > 1 {
		specs = append(specs, spec{o.TxnK, o.TxnBatch})
	}
	results := map[string]map[spec][]writeResult{"candidate": {}, "baseline": {}}
	seq := 0
	for round := 1; round <= o.Rounds && ctx.Err() == nil; round++ {
		for _, sp := range specs {
			for _, b := range roundOrder(binaries(fl, o), round) {
				if ctx.Err() != nil {
					return
				}
				name := fmt.Sprintf("write-k%d-%s-r%d", sp.k, b.label, round)
				if sp.batch > 1 {
					name = fmt.Sprintf("write-k%d-txn%d-%s-r%d", sp.k, sp.batch, b.label, round)
				}
				if tag != "" {
					name = tag + "-" + name
				}
				c, err := fl.newClusterOf(ctx, name, b.path)
				if err != nil {
					fail(name, err)
					continue
				}
				smp.set(c, name)
				logf("%s: %d puts", name, o.N)
				// Every run writes its own key range (fresh cluster, but
				// distinct prefixes keep runs apart in logs).
				w, err := writePhase(ctx, c, sp.k, sp.batch, o.N, byte('a'+seq%26), o.PhaseLimit, o.profiler(name))
				seq++
				if err != nil {
					fail(name, err)
				}
				w.Binary, w.Round = b.label, round
				if w.Ops > 0 {
					results[b.label][sp] = append(results[b.label][sp], w)
					if sp.batch > 1 {
						rep.WriteTxn = append(rep.WriteTxn, w)
					} else if b.label == "candidate" {
						rep.Write = append(rep.Write, w)
					} else {
						rep.WriteBase = append(rep.WriteBase, w)
					}
					logf("%s: %.0f ops/s p50 %.2f p99 %.2f ms, server %.1f µs/op, client %.1f µs/op, %d errors",
						name, w.OpsPerSec, w.Latency.P50, w.Latency.P99, w.ServerCPUPerOpUS, w.ClientCPUPerOpUS, w.Errors)
				}
				c.stopAll(false)
				_ = os.RemoveAll(filepath.Join(fl.root, name))
			}
		}
	}
	for _, sp := range specs {
		cand, base := results["candidate"][sp], results["baseline"][sp]
		if len(cand) == 0 || (len(base) == 0 && o.KeeldBase != "") {
			continue
		}
		row := abRow{K: sp.k, PutsPerRequest: sp.batch, Rounds: len(cand),
			Candidate: sideOf(cand), Baseline: sideOf(base)}
		if o.KeeldBase != "" {
			row.Rounds = min(len(cand), len(base))
		}
		row.Ratio = abSide{
			OpsPerSec:        ratio(row.Candidate.OpsPerSec, row.Baseline.OpsPerSec),
			P50Ms:            ratio(row.Candidate.P50Ms, row.Baseline.P50Ms),
			P99Ms:            ratio(row.Candidate.P99Ms, row.Baseline.P99Ms),
			ServerCPUPerOpUS: ratio(row.Candidate.ServerCPUPerOpUS, row.Baseline.ServerCPUPerOpUS),
			ClientCPUPerOpUS: ratio(row.Candidate.ClientCPUPerOpUS, row.Baseline.ClientCPUPerOpUS),
		}
		for _, a := range cand {
			for _, b := range base {
				if a.Round == b.Round {
					row.RoundOpsRatio = append(row.RoundOpsRatio, ratio(a.OpsPerSec, b.OpsPerSec))
					row.RoundCPURatio = append(row.RoundCPURatio, ratio(a.ServerCPUPerOpUS, b.ServerCPUPerOpUS))
				}
			}
		}
		rep.AB = append(rep.AB, row)
		pre := ""
		if tag != "" {
			pre = tag + " "
		}
		logf("%sA/B K=%d x%d (%d rounds): PUT/s %.0f vs %.0f (x%.2f, rounds %s), server CPU/op %.1f vs %.1f µs (x%.2f, rounds %s), p50 %.2f vs %.2f ms (x%.2f), p99 %.2f vs %.2f ms (x%.2f), client CPU/op %.1f vs %.1f µs",
			pre, row.K, row.PutsPerRequest, row.Rounds,
			row.Candidate.OpsPerSec, row.Baseline.OpsPerSec, row.Ratio.OpsPerSec, fmtRatios(row.RoundOpsRatio),
			row.Candidate.ServerCPUPerOpUS, row.Baseline.ServerCPUPerOpUS, row.Ratio.ServerCPUPerOpUS, fmtRatios(row.RoundCPURatio),
			row.Candidate.P50Ms, row.Baseline.P50Ms, row.Ratio.P50Ms,
			row.Candidate.P99Ms, row.Baseline.P99Ms, row.Ratio.P99Ms,
			row.Candidate.ClientCPUPerOpUS, row.Baseline.ClientCPUPerOpUS)
	}
}

func sideOf(ws []writeResult) abSide {
	if len(ws) == 0 {
		return abSide{}
	}
	med := func(f func(writeResult) float64) float64 {
		v := make([]float64, len(ws))
		for i, w := range ws {
			v[i] = f(w)
		}
		return median(v)
	}
	return abSide{
		OpsPerSec:        med(func(w writeResult) float64 { return w.OpsPerSec }),
		P50Ms:            med(func(w writeResult) float64 { return w.Latency.P50 }),
		P99Ms:            med(func(w writeResult) float64 { return w.Latency.P99 }),
		ServerCPUPerOpUS: med(func(w writeResult) float64 { return w.ServerCPUPerOpUS }),
		ClientCPUPerOpUS: med(func(w writeResult) float64 { return w.ClientCPUPerOpUS }),
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func fmtRatios(v []float64) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += "/"
		}
		s += fmt.Sprintf("%.2f", x)
	}
	return s
}
