//go:build linux

package main

import (
	"fmt"
	"github.com/keel-db/keel/bench/internal/benchout"
	"slices"
	"strings"
)

// report is shards.json.
type report struct {
	Started     string           `json:"started"`
	Seconds     float64          `json:"seconds"`
	Host        benchout.Machine `json:"host"`
	Config      options          `json:"config"`
	Notes       []string         `json:"notes"`
	Rows        []*row           `json:"rows"`
	Comparisons []comparison     `json:"comparisons"`
	Targets     []target         `json:"targets"`
	Errors      []string         `json:"errors,omitempty"`
}

// row is what the three children of one kind at one shard count measured.
type row struct {
	Kind    string       `json:"kind"`
	Shards  int          `json:"shards"`
	Steady  *childResult `json:"steady,omitempty"`
	Restart *childResult `json:"restart,omitempty"`
	Load    *childResult `json:"load,omitempty"`
}

// comparison is one Keel kind at one shard count next to the baseline at
// the same count, in the targets' terms. A figure is zero when either side
// was not measured.
type comparison struct {
	Kind   string `json:"kind"`
	Shards int    `json:"shards"`

	RSSMiB             float64 `json:"rss_mib"`
	BaselineRSSMiB     float64 `json:"baseline_rss_mib"`
	RSSOverBaselineMiB float64 `json:"rss_over_baseline_mib"`

	PayloadMiB       float64 `json:"payload_mib"`
	RaftMiB          float64 `json:"raft_dir_mib"`
	SMMiB            float64 `json:"sm_dir_mib"`
	StateDirMiB      float64 `json:"state_dir_mib"`
	BaselineRaftMiB  float64 `json:"baseline_raft_dir_mib"`
	StateDirLimitMiB float64 `json:"state_dir_limit_mib"`

	FDs         int `json:"fds"`
	BaselineFDs int `json:"baseline_fds"`
	FDLimit     int `json:"fd_limit"`

	RestartSeconds         float64 `json:"restart_seconds"`
	BaselineRestartSeconds float64 `json:"baseline_restart_seconds"`
	RestartRatio           float64 `json:"restart_ratio"`

	IdleCPUPercent         float64 `json:"idle_cpu_percent"`
	BaselineIdleCPUPercent float64 `json:"baseline_idle_cpu_percent"`

	LoadRSSPeakMiB         float64 `json:"load_rss_peak_mib"`
	BaselineLoadRSSPeakMiB float64 `json:"baseline_load_rss_peak_mib"`
	LoadRSSOverBaselineMiB float64 `json:"load_rss_over_baseline_mib"`
	MemTablePeakMiB        float64 `json:"memtable_peak_mib"`
	MemTableBudgetMiB      float64 `json:"memtable_budget_mib"`
	LoadWritesPerSec       float64 `json:"load_writes_per_sec"`
	BaselineWritesPerSec   float64 `json:"baseline_load_writes_per_sec"`
}

// Target constants, from the issue "A thousand shards per NodeHost at
// near-zero cost each".
const (
	targetRSSOverMiB   = 100
	targetDiskFixedMiB = 64
	targetDiskPayload  = 1.5
	targetFDsPerShard  = 4
	// defaultOpenTables is engine.SharedOptions.OpenTables' documented
	// default (the file cache's capacity), which the benchmark leaves in
	// place.
	defaultOpenTables  = 1024
	targetRestartRatio = 1.5
	targetIdleCPU      = 5
)

func (r *report) find(kind string, n int) *row {
	for _, w := range r.Rows {
		if w.Kind == kind && w.Shards == n {
			return w
		}
	}
	return nil
}

// compare puts every Keel row beside the baseline's at its shard count.
func (r *report) compare() []comparison {
	var out []comparison
	for _, w := range r.Rows {
		if w.Kind == kindNoop {
			continue
		}
		b := r.find(kindNoop, w.Shards)
		if b == nil {
			b = &row{}
		}
		c := comparison{Kind: w.Kind, Shards: w.Shards, FDLimit: targetFDsPerShard*w.Shards + defaultOpenTables}
		if s, bs := w.Steady, b.Steady; s != nil && s.Memory != nil {
			c.RSSMiB = mib(s.Memory.RSSBytes)
			c.PayloadMiB = mib(s.PayloadBytes)
			c.StateDirLimitMiB = targetDiskFixedMiB + targetDiskPayload*c.PayloadMiB
			// The larger of running and closed: a WAL-less tablet holds
			// its writes in memtables until Close flushes them.
			d := s.Disk
			if s.DiskClosed.total() > d.total() {
				d = s.DiskClosed
			}
			c.RaftMiB, c.SMMiB, c.StateDirMiB = mib(d.RaftBytes), mib(d.SMBytes), mib(d.total())
			c.FDs = s.FDs
			c.IdleCPUPercent = s.IdleCPUPercent
			if bs != nil && bs.Memory != nil {
				c.BaselineRSSMiB = mib(bs.Memory.RSSBytes)
				c.RSSOverBaselineMiB = c.RSSMiB - c.BaselineRSSMiB
				c.BaselineRaftMiB = mib(max(bs.Disk.total(), bs.DiskClosed.total()))
				c.BaselineFDs = bs.FDs
				c.BaselineIdleCPUPercent = bs.IdleCPUPercent
			}
		}
		if s, bs := w.Restart, b.Restart; s != nil && s.RestartMedian > 0 {
			c.RestartSeconds = s.RestartMedian
			if bs != nil && bs.RestartMedian > 0 {
				c.BaselineRestartSeconds = bs.RestartMedian
				c.RestartRatio = c.RestartSeconds / c.BaselineRestartSeconds
			}
		}
		if s, bs := w.Load, b.Load; s != nil && s.Load != nil {
			l := s.Load
			c.LoadRSSPeakMiB = mib(l.RSSPeakBytes)
			c.MemTablePeakMiB = mib(l.MemTableBytesPeak)
			c.MemTableBudgetMiB = mib(l.MemTableBudget)
			c.LoadWritesPerSec = l.WritesPerSec
			if bs != nil && bs.Load != nil {
				c.BaselineLoadRSSPeakMiB = mib(bs.Load.RSSPeakBytes)
				c.LoadRSSOverBaselineMiB = c.LoadRSSPeakMiB - c.BaselineLoadRSSPeakMiB
				c.BaselineWritesPerSec = bs.Load.WritesPerSec
			}
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b comparison) int {
		if a.Kind != b.Kind {
			return strings.Compare(a.Kind, b.Kind)
		}
		return a.Shards - b.Shards
	})
	return out
}

// target is one of the targets. Pass is nil when the figure was
// not measured in this run. Targets are reported, never asserted.
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

func check(name, goal, unit string, measured float64, ok, have bool, note string) target {
	t := target{Name: name, Goal: goal, Unit: unit, Measured: measured, Note: note}
	if have {
		t.Pass = &ok
	}
	return t
}

// targets evaluates the targets for kind keel (Keel's defaults) at
// the largest shard count measured; the issue states them at 1,000.
func (r *report) targets() []target {
	var c *comparison
	for i := range r.Comparisons {
		if r.Comparisons[i].Kind == kindKeel && (c == nil || r.Comparisons[i].Shards > c.Shards) {
			c = &r.Comparisons[i]
		}
	}
	if c == nil {
		return nil
	}
	at := fmt.Sprintf(" at %d shards", c.Shards)
	note := ""
	if c.Shards < 1000 {
		note = "the issue's targets are for 1,000 shards"
	}
	budget := targetRSSOverMiB + c.MemTableBudgetMiB
	return []target{
		check("RSS over the no-op baseline"+at, fmt.Sprintf("<= %d", targetRSSOverMiB), "MiB", c.RSSOverBaselineMiB,
			c.RSSOverBaselineMiB <= targetRSSOverMiB, c.RSSMiB > 0 && c.BaselineRSSMiB > 0,
			joinNote(note, fmt.Sprintf("%.1f vs %.1f MiB", c.RSSMiB, c.BaselineRSSMiB))),
		check("state dir (raft + sm)"+at, fmt.Sprintf("<= %.1f", c.StateDirLimitMiB), "MiB", c.StateDirMiB,
			c.StateDirMiB <= c.StateDirLimitMiB, c.StateDirMiB > 0,
			joinNote(note, fmt.Sprintf("64 MiB + 1.5 x %.2f MiB payload; raft %.1f, sm %.1f MiB", c.PayloadMiB, c.RaftMiB, c.SMMiB))),
		check("open files"+at, fmt.Sprintf("<= %d", c.FDLimit), "fds", float64(c.FDs), c.FDs <= c.FDLimit, c.FDs > 0,
			joinNote(note, fmt.Sprintf("4 per shard + %d (file cache); baseline %d", defaultOpenTables, c.BaselineFDs))),
		check("restart to every shard serving / baseline"+at, fmt.Sprintf("<= %.1f", targetRestartRatio), "x", c.RestartRatio,
			c.RestartRatio <= targetRestartRatio, c.RestartRatio > 0,
			joinNote(note, fmt.Sprintf("%.2f vs %.2f s", c.RestartSeconds, c.BaselineRestartSeconds))),
		check("idle CPU"+at, fmt.Sprintf("<= %d", targetIdleCPU), "% core", c.IdleCPUPercent, c.IdleCPUPercent <= targetIdleCPU,
			c.RSSMiB > 0, joinNote(note, fmt.Sprintf("baseline %.2f%%", c.BaselineIdleCPUPercent))),
		check("RSS under write load over the baseline"+at, fmt.Sprintf("<= %.0f", budget), "MiB", c.LoadRSSOverBaselineMiB,
			c.LoadRSSOverBaselineMiB <= budget, c.LoadRSSPeakMiB > 0 && c.BaselineLoadRSSPeakMiB > 0,
			joinNote(note, fmt.Sprintf("100 MiB + %.0f MiB memtable budget; peak %.1f vs %.1f MiB; memtables peaked at %.1f MiB",
				c.MemTableBudgetMiB, c.LoadRSSPeakMiB, c.BaselineLoadRSSPeakMiB, c.MemTablePeakMiB))),
	}
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
