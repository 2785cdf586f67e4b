package main

import (
	"bytes"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// perShardFamilies are the /metrics families that describe one replica of
// one shard; each must carry a shard label.
var perShardFamilies = []string{
	"keel_applied_index", "keel_is_leader", "keel_leader_known", "keel_raft_term",
	"keel_engine_keys", "keel_engine_bytes", "keel_snapshots_total",
	"keel_raft_log_first_index", "keel_raft_log_last_index", "keel_raft_log_compactions_total",
	"keel_raft_log_entries_removed_total", "keel_raft_log_disk_bytes",
}

// labelsOf returns a sample's labels as a map.
func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// sampleValue is a gauge's or counter's value.
func sampleValue(m *dto.Metric) float64 {
	if m.GetGauge() != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

// TestMetricsPerShard: a keeld with --shards 4 exposes every per-shard
// series once per shard, labelled with that shard, and the values belong
// to that shard (its key count, its export); process-wide series carry no
// shard label.
func TestMetricsPerShard(t *testing.T) {
	const shards = 4
	n := startSingle(t, "--shards", fmt.Sprint(shards), "--export-dir", filepath.Join(t.TempDir(), "exports"))
	waitShardsReady(t, n, shards)
	// Unequal key counts per shard, so a mislabelled series shows.
	want := map[string]float64{}
	for i := 0; i < 40; i++ {
		k := fmt.Sprint("m", i)
		s := shardFor([]byte(k), shards)
		if want[fmt.Sprint(s)] >= float64(s*3) {
			continue
		}
		if err := putRetry(n, k, "v"); err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprint(s)]++
	}
	for s := 1; s <= shards; s++ {
		if want[fmt.Sprint(s)] == 0 {
			t.Fatalf("no key of shard %d among the first 40: %v", s, want)
		}
	}
	mustDo(t, http.StatusOK, http.MethodPost, n.url("/admin/shards/3/export"), nil)

	page := mustDo(t, http.StatusOK, http.MethodGet, n.url("/metrics"), nil)
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(bytes.NewReader(page))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	for _, name := range perShardFamilies {
		f := fams[name]
		if f == nil {
			t.Errorf("/metrics has no %s", name)
			continue
		}
		// Group the samples by their labels other than shard: each group
		// (one per kind for keel_snapshots_total) has every shard once.
		groups := map[string][]string{}
		for _, m := range f.GetMetric() {
			l := labelsOf(m)
			shard, ok := l["shard"]
			if !ok {
				t.Errorf("%s has a sample without a shard label: %v", name, l)
				continue
			}
			if l["replica"] != "1" {
				t.Errorf("%s{shard=%q}: replica %q, want 1", name, shard, l["replica"])
			}
			delete(l, "shard")
			groups[fmt.Sprint(l)] = append(groups[fmt.Sprint(l)], shard)
		}
		for g, got := range groups {
			sort.Strings(got)
			if strings.Join(got, ",") != "1,2,3,4" {
				t.Errorf("%s%s: shards %v, want each of 1..4 once", name, g, got)
			}
		}
	}
	for _, m := range fams["keel_engine_keys"].GetMetric() {
		s := labelsOf(m)["shard"]
		if v := sampleValue(m); v != want[s] {
			t.Errorf("keel_engine_keys{shard=%q} = %v, want %v", s, v, want[s])
		}
	}
	for _, m := range fams["keel_is_leader"].GetMetric() {
		if v := sampleValue(m); v != 1 {
			t.Errorf("keel_is_leader%v = %v, want 1 (the only replica)", labelsOf(m), v)
		}
	}
	for _, m := range fams["keel_snapshots_total"].GetMetric() {
		l := labelsOf(m)
		if l["kind"] != "saved" {
			continue
		}
		wantSaved := 0.0
		if l["shard"] == "3" {
			wantSaved = 1
		}
		if v := sampleValue(m); v != wantSaved {
			t.Errorf("keel_snapshots_total%v = %v, want %v (only shard 3 was exported)", l, v, wantSaved)
		}
	}
	for _, name := range []string{"keel_disk_usage_bytes", "keel_http_requests_total", "keel_proposal_duration_seconds"} {
		for _, m := range fams[name].GetMetric() {
			if _, ok := labelsOf(m)["shard"]; ok {
				t.Errorf("process-wide %s has a shard label", name)
			}
		}
	}
	if len(fams["keel_disk_usage_bytes"].GetMetric()) != 2 {
		t.Errorf("keel_disk_usage_bytes: %d samples, want sm and raft", len(fams["keel_disk_usage_bytes"].GetMetric()))
	}
	// /status agrees with the labelled key counts.
	var st shardsStatus
	decode(t, mustDo(t, http.StatusOK, http.MethodGet, n.url("/status"), nil), &st)
	for _, s := range st.Shards {
		if float64(s.Keys) != want[strconv.FormatUint(s.ShardID, 10)] {
			t.Errorf("/status shard %d: %d keys, want %v", s.ShardID, s.Keys, want[strconv.FormatUint(s.ShardID, 10)])
		}
	}
}
