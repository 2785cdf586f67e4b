// Package benchout writes what Keel's benchmark programs (bench/cluster,
// bench/shards) produce: a JSON report and PNG charts drawn from it, and
// redraws the charts of a saved report. It owns no figures; each program
// owns its report type and its charts.
package benchout

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
)

// Chart is one PNG: its file name and how to draw it from a report. Draw
// returns nil for a chart with nothing to show, which is skipped.
type Chart[R any] struct {
	File string
	Draw func(*R) (*plot.Plot, error)
}

// Charts draws every chart of rep into out, 10 x 5 inches, with headroom
// above the data so the legend does not cover it: the Y axis runs to
// logHeadroom times the top on a log scale, 1.3 times from 0 otherwise.
func Charts[R any](out string, rep *R, charts []Chart[R], logHeadroom float64) error {
	for _, ch := range charts {
		p, err := ch.Draw(rep)
		if err != nil {
			return fmt.Errorf("chart %s: %w", ch.File, err)
		}
		if p == nil {
			continue
		}
		if _, log := p.Y.Scale.(plot.LogScale); log {
			p.Y.Max *= logHeadroom
		} else {
			p.Y.Min = 0
			p.Y.Max *= 1.3
		}
		if err := p.Save(10*vg.Inch, 5*vg.Inch, filepath.Join(out, ch.File)); err != nil {
			return fmt.Errorf("chart %s: %w", ch.File, err)
		}
	}
	return nil
}

// Write writes rep as indented JSON to out/name, creating out, then calls
// draw(out) for the charts.
func Write(out, name string, rep any, draw func(out string) error) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, name), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return draw(out)
}

// Replot reads a saved report and redraws its charts beside it.
func Replot[R any](file string, draw func(dir string, rep *R) error) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var rep R
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return draw(filepath.Dir(file), &rep)
}
