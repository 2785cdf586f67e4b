// Command gobench turns `go test -bench` output into JSON and a chart, so
// the micro-benchmarks land in bench/results beside the cluster benchmark:
//
//	go test -run '^$' -bench . -benchmem ./sm ./snapshot | tee go-bench.txt
//	go run ./bench/gobench -in go-bench.txt -out bench/results
//
// It writes <out>/micro.json (every result line with all its metrics:
// ns/op, B/op, allocs/op, MB/s and each b.ReportMetric unit) and
// <out>/micro-throughput.png (MB/s of the benchmarks that call b.SetBytes).
// Lines that are not results are skipped, and a result split by log
// output from the code under test (name, log lines, then the figures) is
// joined; a malformed result line is an error naming the line, never a
// panic.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// result is one benchmark result line.
type result struct {
	Pkg     string             `json:"pkg"`
	Name    string             `json:"name"` // without the -GOMAXPROCS suffix
	Procs   int                `json:"procs"`
	N       int64              `json:"n"`
	Metrics map[string]float64 `json:"metrics"` // unit -> value
}

type output struct {
	GOOS       string   `json:"goos,omitempty"`
	GOARCH     string   `json:"goarch,omitempty"`
	CPU        string   `json:"cpu,omitempty"`
	Benchmarks []result `json:"benchmarks"`
}

// errMalformed is returned for a Benchmark line that cannot be parsed.
var errMalformed = errors.New("malformed benchmark line")

func parse(r io.Reader) (output, error) {
	var out output
	pkg, pending := "", ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if k, v, ok := strings.Cut(text, ": "); ok {
			switch k {
			case "goos":
				out.GOOS = v
			case "goarch":
				out.GOARCH = v
			case "cpu":
				out.CPU = v
			case "pkg":
				pkg = v
			}
		}
		f := strings.Fields(text)
		var name string
		switch {
		case strings.HasPrefix(text, "Benchmark") && len(f) >= 2 && isCount(f[1]):
			name, f = f[0], f[1:]
		case strings.HasPrefix(text, "Benchmark"):
			// The name alone: a parent of sub-benchmarks, or a result
			// whose figures follow on a later line because the code
			// under test logged in between.
			pending = f[0]
			continue
		case pending != "" && len(f) >= 3 && isCount(f[0]):
			name = pending
		default:
			continue // log output, PASS, ok
		}
		pending = ""
		// f is now N followed by value-unit pairs.
		if len(f)%2 != 1 {
			return out, fmt.Errorf("%w %d: %q", errMalformed, line, text)
		}
		res := result{Pkg: pkg, Name: name, Procs: 1, Metrics: map[string]float64{}}
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if p, err := strconv.Atoi(name[i+1:]); err == nil {
				res.Name, res.Procs = name[:i], p
			}
		}
		res.N, _ = strconv.ParseInt(f[0], 10, 64)
		for i := 1; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return out, fmt.Errorf("%w %d: value %q", errMalformed, line, f[i])
			}
			res.Metrics[f[i+1]] = v
		}
		out.Benchmarks = append(out.Benchmarks, res)
	}
	return out, sc.Err()
}

// chart draws MB/s per benchmark as horizontal bars.
func chart(out output, file string) error {
	var names []string
	var vals []float64
	for _, b := range out.Benchmarks {
		if v, ok := b.Metrics["MB/s"]; ok {
			names = append(names, strings.TrimPrefix(b.Name, "Benchmark"))
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = "Micro-benchmarks: throughput (b.SetBytes), MB/s, log scale"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	pts := make(plotter.XYs, len(vals))
	for i, v := range vals {
		// A log axis cannot show zero; a dot plot has no bar base at 0.
		pts[i] = plotter.XY{X: max(v, 0.01), Y: float64(i)}
	}
	dots, err := plotter.NewScatter(pts)
	if err != nil {
		return err
	}
	dots.Color = plotutil.Color(0)
	dots.Radius = vg.Points(4)
	dots.Shape = draw.CircleGlyph{}
	p.Add(dots, plotter.NewGrid())
	p.NominalY(names...)
	h := vg.Length(len(vals))*vg.Points(16) + vg.Inch
	return p.Save(10*vg.Inch, h, file)
}

func main() {
	in := flag.String("in", "-", "go test -bench output ('-' for stdin)")
	outDir := flag.String("out", "bench/results", "directory for micro.json and micro-throughput.png")
	flag.Parse()
	if err := run(*in, *outDir); err != nil {
		fmt.Fprintf(os.Stderr, "gobench: %v\n", err)
		os.Exit(1)
	}
}

func run(in, outDir string) error {
	var r io.Reader = os.Stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	out, err := parse(r)
	if err != nil {
		return err
	}
	if len(out.Benchmarks) == 0 {
		return errors.New("no benchmark results in the input")
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "micro.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return chart(out, filepath.Join(outDir, "micro-throughput.png"))
}

// isCount reports whether s is an iteration count.
func isCount(s string) bool {
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n > 0
}
