//go:build linux

package main

import (
	"fmt"
	"github.com/keel-db/keel/bench/internal/benchout"
	"image/color"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// charts are the PNGs drawn against shard count. Their names start with
// shards- because bench/cluster writes disk.png and restart.png into the
// same directory.
var charts = []benchout.Chart[report]{
	{File: "shards-rss.png", Draw: rssChart},
	{File: "shards-disk.png", Draw: diskChart},
	{File: "shards-fds.png", Draw: fdsChart},
	{File: "shards-restart.png", Draw: restartChart},
	{File: "shards-idle-cpu.png", Draw: idleChart},
}

// drawCharts writes the charts for rep into out. A chart with nothing to
// show is skipped.
func drawCharts(out string, rep *report) error { return benchout.Charts(out, rep, charts, 8) }

// line is one series over shard count: value(row) for every row of kind
// where ok.
type line struct {
	label  string
	kind   string
	dashed bool
	value  func(*row) (float64, bool)
}

// shardChart draws lines against shard count on a log axis.
func shardChart(rep *report, title, ylabel string, lines []line) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "shards per NodeHost (log scale)"
	p.Y.Label.Text = ylabel
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	drawn := 0
	for _, l := range lines {
		var xys plotter.XYs
		for _, w := range rep.Rows {
			if w.Kind != l.kind {
				continue
			}
			if v, ok := l.value(w); ok {
				xys = append(xys, plotter.XY{X: float64(w.Shards), Y: v})
			}
		}
		if len(xys) == 0 {
			continue
		}
		slices.SortFunc(xys, func(a, b plotter.XY) int { return int(a.X - b.X) })
		ln, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		c := plotutil.Color(slices.Index(allKinds, l.kind))
		ln.Color, pts.Color = c, c
		pts.Shape = plotutil.Shape(slices.Index(allKinds, l.kind))
		if l.dashed {
			ln.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(ln, pts)
		p.Legend.Add(l.label, ln, pts)
		drawn++
	}
	if drawn == 0 {
		return nil, nil
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	return p, nil
}

// perKind makes one line per kind in rep.
func perKind(rep *report, suffix string, dashed bool, v func(*row) (float64, bool)) []line {
	var out []line
	for _, k := range rep.Config.Kinds {
		out = append(out, line{label: k + suffix, kind: k, dashed: dashed, value: v})
	}
	return out
}

// addLimit draws a target as a grey dotted line through (shards, limit).
func addLimit(p *plot.Plot, rep *report, label string, limit func(n int) float64) error {
	var xys plotter.XYs
	for _, n := range rep.Config.Shards {
		xys = append(xys, plotter.XY{X: float64(n), Y: limit(n)})
	}
	if len(xys) == 0 {
		return nil
	}
	slices.SortFunc(xys, func(a, b plotter.XY) int { return int(a.X - b.X) })
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = color.Gray{Y: 128}
	l.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
	p.Add(l)
	p.Legend.Add(label, l)
	return nil
}

func rssChart(rep *report) (*plot.Plot, error) {
	lines := perKind(rep, " idle (after writes, GC)", false, func(w *row) (float64, bool) {
		if w.Steady == nil || w.Steady.Memory == nil {
			return 0, false
		}
		return mib(w.Steady.Memory.RSSBytes), true
	})
	lines = append(lines, perKind(rep, " peak under write load", true, func(w *row) (float64, bool) {
		if w.Load == nil || w.Load.Load == nil {
			return 0, false
		}
		return mib(w.Load.Load.RSSPeakBytes), true
	})...)
	p, err := shardChart(rep, "Resident memory of one NodeHost process (VmRSS)", "MiB", lines)
	if p == nil || err != nil {
		return p, err
	}
	base := map[int]float64{}
	for _, w := range rep.Rows {
		if w.Kind == kindNoop && w.Steady != nil && w.Steady.Memory != nil {
			base[w.Shards] = mib(w.Steady.Memory.RSSBytes)
		}
	}
	if len(base) > 0 {
		if err := addLimit(p, rep, "target: idle baseline + 100 MiB", func(n int) float64 { return base[n] + targetRSSOverMiB }); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func diskChart(rep *report) (*plot.Plot, error) {
	pick := func(w *row) *disk {
		if w.Steady == nil {
			return nil
		}
		d := w.Steady.Disk
		if w.Steady.DiskClosed.total() > d.total() {
			d = w.Steady.DiskClosed
		}
		return d
	}
	lines := perKind(rep, " raft + sm", false, func(w *row) (float64, bool) {
		d := pick(w)
		return max(mib(d.total()), minLogMiB), d != nil
	})
	for _, k := range rep.Config.Kinds {
		if k == kindNoop {
			continue
		}
		lines = append(lines, line{label: k + " sm (tablets)", kind: k, dashed: true, value: func(w *row) (float64, bool) {
			d := pick(w)
			if d == nil {
				return 0, false
			}
			return max(mib(d.SMBytes), minLogMiB), true
		}})
	}
	p, err := shardChart(rep, fmt.Sprintf("State directory, allocated (after %d x 272 B per shard; log scale)", keysPerShard), "MiB", lines)
	if p == nil || err != nil {
		return p, err
	}
	// Log scale: keel-wal's preallocated WALs are 100x the rest at 1,000
	// shards.
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	payload := func(n int) float64 { return float64(n*keysPerShard*(keyBytes+valueBytes)) / (1 << 20) }
	if err := addLimit(p, rep, "target: 64 MiB + 1.5 x payload", func(n int) float64 { return targetDiskFixedMiB + targetDiskPayload*payload(n) }); err != nil {
		return nil, err
	}
	return p, nil
}

// minLogMiB is the floor of a value on a log axis (an empty directory).
const minLogMiB = 0.01

func fdsChart(rep *report) (*plot.Plot, error) {
	p, err := shardChart(rep, "Open files of one NodeHost process (/proc/self/fd)", "descriptors",
		perKind(rep, "", false, func(w *row) (float64, bool) {
			if w.Steady == nil || w.Steady.FDs == 0 {
				return 0, false
			}
			return float64(w.Steady.FDs), true
		}))
	if p == nil || err != nil {
		return p, err
	}
	if err := addLimit(p, rep, fmt.Sprintf("target: 4 per shard + %d", defaultOpenTables),
		func(n int) float64 { return float64(targetFDsPerShard*n + defaultOpenTables) }); err != nil {
		return nil, err
	}
	return p, nil
}

func restartChart(rep *report) (*plot.Plot, error) {
	return shardChart(rep, "Restart: open, start every replica, until a read succeeded on every shard (median)", "seconds",
		perKind(rep, "", false, func(w *row) (float64, bool) {
			if w.Restart == nil || w.Restart.RestartMedian == 0 {
				return 0, false
			}
			return w.Restart.RestartMedian, true
		}))
}

func idleChart(rep *report) (*plot.Plot, error) {
	p, err := shardChart(rep, "CPU with every shard idle (quiesced), % of one core", "% of one core",
		perKind(rep, "", false, func(w *row) (float64, bool) {
			if w.Steady == nil || w.Steady.IdleSeconds == 0 {
				return 0, false
			}
			return w.Steady.IdleCPUPercent, true
		}))
	if p == nil || err != nil {
		return p, err
	}
	if err := addLimit(p, rep, "target 5%", func(int) float64 { return targetIdleCPU }); err != nil {
		return nil, err
	}
	return p, nil
}
