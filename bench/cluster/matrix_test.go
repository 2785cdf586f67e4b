//go:build linux

package main

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestParseShardsList(t *testing.T) {
	got, err := parseShardsList(" 1, 4,16")
	if err != nil || !slices.Equal(got, []int{1, 4, 16}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if got, err := parseShardsList(""); err != nil || got != nil {
		t.Fatalf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"0", "1,x", "1001", "4,4", "1,,2", "-3"} {
		if _, err := parseShardsList(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestOptionsShardsList(t *testing.T) {
	o, err := parseOptions([]string{"-shards-list", "1,4,16", "-keeld-args", "--log-keep-entries 1000"})
	if err != nil || !slices.Equal(o.ShardsList, []int{1, 4, 16}) {
		t.Fatalf("got %v, %v", o.ShardsList, err)
	}
	for _, args := range []string{"--shards 4", "--log-keep-entries 5 --shards=2", "-shard-map m.json", "--shard-id 3"} {
		if _, err := parseOptions([]string{"-shards-list", "1,4", "-keeld-args", args}); err == nil || !strings.Contains(err.Error(), "-shards-list") {
			t.Errorf("-keeld-args %q with -shards-list: %v", args, err)
		}
	}
	// Without -shards-list, --shards in -keeld-args is the old way.
	if _, err := parseOptions([]string{"-keeld-args", "--shards 4"}); err != nil {
		t.Fatal(err)
	}
	if setsShards([]string{"--shards-x", "4", "shards"}) {
		t.Fatal("only the flags --shards, --shard-map and --shard-id choose shards")
	}
}

func TestRoundOrder(t *testing.T) {
	bins := []binary{{"candidate", "a"}, {"baseline", "b"}}
	if r := roundOrder(bins, 1); r[0].label != "candidate" || r[1].label != "baseline" {
		t.Fatalf("round 1: %v", r)
	}
	if r := roundOrder(bins, 2); r[0].label != "baseline" || r[1].label != "candidate" {
		t.Fatalf("round 2: %v", r)
	}
	if bins[0].label != "candidate" {
		t.Fatal("roundOrder changed its argument")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestRecoveryRowOf(t *testing.T) {
	run := func(bin string, round int, cu, mb, one, all float64) recoveryResult {
		return recoveryResult{Binary: bin, Round: round,
			CatchUp:    &catchUpResult{Seconds: cu, ReceivedBytes: uint64(mb * 1e6), InstallMBPerS: mb / cu, SnapshotsReceived: 4},
			RestartOne: &restartResult{MedianSecond: one}, RestartAll: &restartResult{MedianSecond: all}}
	}
	runs := []recoveryResult{
		run("candidate", 1, 2, 10, 1, 0.5), run("baseline", 1, 4, 10, 1, 1),
		run("baseline", 2, 2, 10, 2, 1), run("candidate", 2, 3, 10, 1, 0.5),
		run("candidate", 3, 1, 10, 4, 0.5), // no baseline in round 3
		{Binary: "baseline", Round: 3},     // every part failed
	}
	row := recoveryRowOf(4, runs)
	c, b := row.Candidate, row.Baseline
	if row.Shards != 4 || c.Runs != 3 || b.Runs != 3 {
		t.Fatalf("row %+v", row)
	}
	// Medians of the parts measured: the failed run counts in Runs only.
	if !near(c.CatchUpSeconds, 2) || !near(b.CatchUpSeconds, 3) || !near(c.RestartOneSeconds, 1) || !near(b.RestartOneSeconds, 1.5) {
		t.Fatalf("medians %+v / %+v", c, b)
	}
	if !near(c.InstalledMB, 10) || !near(c.SnapshotsReceived, 4) || !near(c.InstallMBPerS, 5) {
		t.Fatalf("catch-up medians %+v", c)
	}
	if !near(row.Ratio.CatchUpSeconds, 2.0/3) || !near(row.Ratio.RestartAllSeconds, 0.5) || !near(row.Ratio.InstalledMB, 1) {
		t.Fatalf("ratios %+v", row.Ratio)
	}
	// Round ratios pair the runs of one round only, in candidate order.
	if !slices.Equal(row.RoundCatchUpRatio, []float64{0.5, 1.5}) || !slices.Equal(row.RoundRestartOneRatio, []float64{1, 0.5}) ||
		!slices.Equal(row.RoundRestartAllRatio, []float64{0.5, 0.5}) {
		t.Fatalf("round ratios %v %v %v", row.RoundCatchUpRatio, row.RoundRestartOneRatio, row.RoundRestartAllRatio)
	}
	// Without a baseline the ratios are 0, never a division by zero.
	solo := recoveryRowOf(1, runs[:1])
	if solo.Ratio.CatchUpSeconds != 0 || len(solo.RoundCatchUpRatio) != 0 || !near(solo.Candidate.CatchUpSeconds, 2) {
		t.Fatalf("solo %+v", solo)
	}
}

func TestSideOfEmpty(t *testing.T) {
	if s := sideOf(nil); s != (abSide{}) {
		t.Fatalf("sideOf(nil) = %+v", s)
	}
}

func TestShardsSummary(t *testing.T) {
	rr := recoveryRowOf(16, []recoveryResult{{Binary: "candidate", Round: 1, RestartAll: &restartResult{MedianSecond: 2}},
		{Binary: "baseline", Round: 1, RestartAll: &restartResult{MedianSecond: 4}}})
	rows := []shardsRow{{Shards: 16, Write: []abRow{{K: 256, Candidate: abSide{OpsPerSec: 300}, Baseline: abSide{OpsPerSec: 200}, Ratio: abSide{OpsPerSec: 1.5}}},
		Recovery: &rr}}
	lines := shardsSummary(rows)
	if len(lines) != 10 {
		t.Fatalf("%d lines: %q", len(lines), lines)
	}
	if l := lines[0]; !strings.Contains(l, "--shards 16") || !strings.Contains(l, "K=256 PUT/s") || !strings.Contains(l, "300.000") || !strings.HasSuffix(l, "x1.50") {
		t.Errorf("first line %q", l)
	}
	if l := lines[9]; !strings.Contains(l, "restart all three") || !strings.HasSuffix(l, "x0.50") {
		t.Errorf("last line %q", l)
	}
}
