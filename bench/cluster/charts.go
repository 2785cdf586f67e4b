//go:build linux

package main

import (
	"fmt"
	"github.com/keel-db/keel/bench/internal/benchout"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// drawCharts writes the PNG charts for rep into out. A chart with nothing
// to show is skipped.
func drawCharts(out string, rep *report) error {
	return benchout.Charts(out, rep, []benchout.Chart[report]{
		{File: "write-throughput.png", Draw: throughputChart},
		{File: "write-latency.png", Draw: latencyChart},
		{File: "disk.png", Draw: diskChart},
		{File: "memory.png", Draw: memoryChart},
		{File: "machine-fraction.png", Draw: fractionChart},
		{File: "restart.png", Draw: restartChart},
	}, 4)
}

// runs lists the write runs and snapshot-under-load as labelled results.
func runs(rep *report) ([]string, []loadResult) {
	var names []string
	var res []loadResult
	for _, w := range rep.Write {
		names = append(names, fmt.Sprintf("write K=%d", w.K))
		res = append(res, w.loadResult)
	}
	if rep.Under != nil && rep.Under.Ops > 0 {
		names = append(names, fmt.Sprintf("snapshot streaming K=%d", rep.Under.K))
		res = append(res, rep.Under.loadResult)
	}
	return names, res
}

func throughputChart(rep *report) (*plot.Plot, error) {
	names, res := runs(rep)
	// Batched requests go on this chart only: their latency is per
	// request, not per put, so the latency chart leaves them out.
	for _, w := range rep.WriteTxn {
		names = append(names, fmt.Sprintf("%d puts per /txn K=%d", w.PutsPerRequest, w.K))
		res = append(res, w.loadResult)
	}
	if len(res) == 0 {
		return nil, nil
	}
	vals := make(plotter.Values, len(res))
	for i, r := range res {
		vals[i] = r.OpsPerSec
	}
	p := plot.New()
	p.Title.Text = "Replicated puts per second (3 keeld replicas, 16 B keys, 256 B values)"
	p.Y.Label.Text = "ops/s"
	bars, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, err
	}
	bars.Color = plotutil.Color(0)
	p.Add(bars)
	p.NominalX(names...)
	return p, nil
}

// latencyChart draws each run's percentiles as a line on a log axis, so
// p50 at K=16 and p99.9 at K=256 are both readable.
func latencyChart(rep *report) (*plot.Plot, error) {
	names, res := runs(rep)
	if len(res) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = "Put latency by percentile (log scale)"
	p.Y.Label.Text = "ms"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	for i, r := range res {
		vals := []float64{r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.P999, r.Latency.Max}
		xys := make(plotter.XYs, len(vals))
		for j, v := range vals {
			xys[j] = plotter.XY{X: float64(j), Y: max(v, 0.001)} // log axis: no zero
		}
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		l.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
		pts.Shape = plotutil.Shape(i)
		p.Add(l, pts)
		p.Legend.Add(names[i], l, pts)
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX("p50", "p90", "p99", "p99.9", "max")
	return p, nil
}

// seriesChart draws one line per replica of value(sample) in MiB over time.
func seriesChart(rep *report, title string, value func(sample) uint64, prefix string, first int) (*plot.Plot, error) {
	lines := map[uint64]plotter.XYs{}
	for _, s := range rep.Disk.Samples {
		lines[s.Replica] = append(lines[s.Replica], plotter.XY{X: s.Seconds, Y: float64(value(s)) / (1 << 20)})
	}
	if len(lines) == 0 {
		return nil, nil
	}
	return addLines(title, lines, prefix, first)
}

func addLines(title string, lines map[uint64]plotter.XYs, prefix string, first int) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since the benchmark started (phases run one after another)"
	p.Y.Label.Text = "MiB"
	if err := addSeries(p, lines, prefix, first, nil); err != nil {
		return nil, err
	}
	p.Legend.Top = true
	p.Legend.Left = true
	return p, nil
}

// addSeries adds one line per replica. A line is broken where samples
// are missing (the replica was stopped, or a new cluster started), so no
// segment bridges a gap.
func addSeries(p *plot.Plot, lines map[uint64]plotter.XYs, prefix string, first int, dashes []vg.Length) error {
	for id := uint64(1); id <= 3; id++ {
		xys, ok := lines[id]
		if !ok {
			continue
		}
		var segs []plotter.XYs
		start := 0
		for i := 1; i <= len(xys); i++ {
			if i == len(xys) || xys[i].X-xys[i-1].X > gapSeconds {
				segs = append(segs, xys[start:i])
				start = i
			}
		}
		for j, seg := range segs {
			l, err := plotter.NewLine(seg)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(first + int(id) - 1)
			l.Dashes = dashes
			p.Add(l)
			if j == 0 {
				p.Legend.Add(fmt.Sprintf("%s replica %d", prefix, id), l)
			}
		}
	}
	return nil
}

// gapSeconds is the pause in a replica's samples that breaks its line:
// longer than any sampling interval plus a directory walk.
var gapSeconds = 2.5

func diskChart(rep *report) (*plot.Plot, error) {
	raft := map[uint64]plotter.XYs{}
	state := map[uint64]plotter.XYs{}
	for _, s := range rep.Disk.Samples {
		raft[s.Replica] = append(raft[s.Replica], plotter.XY{X: s.Seconds, Y: float64(s.RaftBytes) / (1 << 20)})
		state[s.Replica] = append(state[s.Replica], plotter.XY{X: s.Seconds, Y: float64(s.SMBytes) / (1 << 20)})
	}
	if len(raft) == 0 {
		return nil, nil
	}
	p, err := addLines("Allocated disk per replica: Raft log (DIR/raft) and state (DIR/sm)", raft, "raft", 0)
	if err != nil {
		return nil, err
	}
	if err := addSeries(p, state, "sm", 3, []vg.Length{vg.Points(4), vg.Points(2)}); err != nil {
		return nil, err
	}
	limit := plotter.NewFunction(func(float64) float64 { return 64 })
	limit.Color = color.Gray{Y: 128}
	limit.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
	p.Add(limit)
	p.Legend.Add("Raft log target 64 MiB", limit)
	return p, nil
}

func memoryChart(rep *report) (*plot.Plot, error) {
	p, err := seriesChart(rep, "Resident memory per keeld process (VmRSS)", func(s sample) uint64 { return s.RSSBytes }, "RSS", 0)
	if p == nil || err != nil {
		return p, err
	}
	limit := plotter.NewFunction(func(float64) float64 { return 200 })
	limit.Color = color.Gray{Y: 128}
	limit.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
	p.Add(limit)
	p.Legend.Add("target 200 MiB", limit)
	return p, nil
}

// fractionChart shows figures as a fraction of what the machine measured
// in the same run can do.
func fractionChart(rep *report) (*plot.Plot, error) {
	if rep.Limits == nil {
		return nil, nil
	}
	var names []string
	var vals plotter.Values
	for _, w := range rep.Write {
		if rep.Limits.FdatasyncAppendsSec > 0 {
			names = append(names, fmt.Sprintf("puts/s K=%d\n/ fdatasyncs/s", w.K))
			vals = append(vals, w.OpsPerSec/rep.Limits.FdatasyncAppendsSec)
		}
	}
	if rep.CatchUp != nil && rep.CatchUp.FractionOfDisk > 0 {
		names = append(names, "catch-up MB/s\n/ seq write MB/s")
		vals = append(vals, rep.CatchUp.FractionOfDisk)
	}
	if len(vals) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Figures over machine limits (%.0f fdatasync'd appends/s, %.0f MiB/s seq write)",
		rep.Limits.FdatasyncAppendsSec, rep.Limits.SeqWriteMiBSec)
	p.Y.Label.Text = "ratio"
	bars, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, err
	}
	bars.Color = plotutil.Color(2)
	p.Add(bars)
	p.NominalX(names...)
	return p, nil
}

func restartChart(rep *report) (*plot.Plot, error) {
	if len(rep.Restart) == 0 {
		return nil, nil
	}
	var names []string
	var vals plotter.Values
	for _, r := range rep.Restart {
		names = append(names, fmt.Sprintf("%s: %.0f MB", r.Label, float64(r.UserBytes)/1e6))
		vals = append(vals, r.MedianSecond)
	}
	p := plot.New()
	p.Title.Text = "Restart of all three replicas to the first linearizable GET (median)"
	p.Y.Label.Text = "seconds"
	bars, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, err
	}
	bars.Color = plotutil.Color(1)
	p.Add(bars)
	p.NominalX(names...)
	return p, nil
}
