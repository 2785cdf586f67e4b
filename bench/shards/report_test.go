//go:build linux

package main

import (
	"strings"
	"testing"
)

// synthetic builds a report with one baseline and one keel row at n shards.
func synthetic(n int, keelRSS, keelLoadRSS uint64, fds int, restart float64) *report {
	mk := func(kind string, rss, loadRSS uint64, fds int, restart float64, sm int64) *row {
		return &row{Kind: kind, Shards: n,
			Steady: &childResult{Memory: &memory{RSSBytes: rss}, FDs: fds, PayloadBytes: int64(n) * keysPerShard * 272,
				Disk: &disk{RaftBytes: 2 << 20, SMBytes: sm}, DiskClosed: &disk{RaftBytes: 2 << 20, SMBytes: sm + 1<<20}, IdleSeconds: 10, IdleCPUPercent: 2},
			Restart: &childResult{RestartMedian: restart},
			Load:    &childResult{Load: &loadResult{RSSPeakBytes: loadRSS, MemTableBudget: 64 << 20, MemTableBytesPeak: 10 << 20}},
		}
	}
	r := &report{Rows: []*row{
		mk(kindNoop, 40<<20, 50<<20, 17, 1.0, 0),
		mk(kindKeel, keelRSS, keelLoadRSS, fds, restart, 30<<20),
	}}
	r.Comparisons = r.compare()
	r.Targets = r.targets()
	return r
}

func verdicts(r *report) map[string]string {
	out := map[string]string{}
	for _, t := range r.Targets {
		out[strings.Fields(t.Name)[0]+" "+strings.Fields(t.Name)[1]] = t.verdict()
	}
	return out
}

func TestTargetsAgainstBaseline(t *testing.T) {
	// Within every target: 100 MiB over, fds at the limit, 1.5x restart.
	r := synthetic(1000, 140<<20, 50<<20+164<<20, 4*1000+defaultOpenTables, 1.5)
	for name, v := range verdicts(r) {
		if v != "pass" {
			t.Errorf("%s: %s, want pass; targets %+v", name, v, r.Targets)
		}
	}
	c := r.Comparisons[0]
	// The disk figure is the larger of running and closed (33 MiB).
	if c.StateDirMiB != 33 || c.RSSOverBaselineMiB != 100 || c.RestartRatio != 1.5 {
		t.Fatalf("comparison %+v", c)
	}

	// One step past each.
	r = synthetic(1000, 141<<20, 50<<20+165<<20, 4*1000+defaultOpenTables+1, 1.51)
	v := verdicts(r)
	for _, name := range []string{"RSS over", "open files", "restart to", "RSS under"} {
		if v[name] != "MISS" {
			t.Errorf("%s: %s, want MISS", name, v[name])
		}
	}
	if v["state dir"] != "pass" || v["idle CPU"] != "pass" {
		t.Errorf("verdicts %v", v)
	}
}

func TestTargetsWithoutBaselineAreNotJudged(t *testing.T) {
	r := synthetic(10, 50<<20, 60<<20, 30, 0.4)
	r.Rows = r.Rows[1:] // no noop row
	r.Comparisons = r.compare()
	r.Targets = r.targets()
	v := verdicts(r)
	for _, name := range []string{"RSS over", "restart to", "RSS under"} {
		if v[name] != "n/a" {
			t.Errorf("%s: %s without a baseline, want n/a", name, v[name])
		}
	}
}
