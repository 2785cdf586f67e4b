//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keel-db/keel/bench/internal/benchout"

	"github.com/keel-db/keel/bench/internal/loopback"
)

// Bounds on the waits of one run.
const (
	leaderTimeout = 10 * time.Minute // every shard has a leader (minutes on a loaded two-core machine)
	timerTimeout  = 3 * time.Minute  // every snapshot timer has run (keeld's default interval is a minute)
	quietTimeout  = 3 * time.Minute  // no Raft traffic
)

type options struct {
	keeld, base  string
	shards       int
	rounds       int
	window       time.Duration
	quiet        time.Duration
	args         string
	baseArgs     string
	profile      string
	out, workdir string
}

// report is the JSON the program writes.
type report struct {
	Machine   benchout.Machine `json:"machine"`
	Command   string           `json:"command"`
	Shards    int              `json:"shards"`
	WindowS   float64          `json:"window_s"`
	Args      []string         `json:"extra_args,omitempty"`
	BaseArgs  []string         `json:"base_extra_args,omitempty"`
	Candidate string           `json:"candidate"`
	Baseline  string           `json:"baseline,omitempty"`
	Runs      []run            `json:"runs"`
	Summary   []summary        `json:"summary"`
	// Ratio is candidate/baseline of the mean per-process CPU (0 without
	// a baseline).
	Ratio float64 `json:"ratio_candidate_to_baseline,omitempty"`
}

// run is one start, wait and measurement of three processes.
type run struct {
	Build      string `json:"build"` // candidate or baseline
	Round      int    `json:"round"`
	LoadStart  string `json:"loadavg_at_start"`
	LoadWindow string `json:"loadavg_at_window"`
	// Seconds from the start to each awaited event.
	LeadersS float64 `json:"leaders_s"`
	TimersS  float64 `json:"first_snapshot_timers_s"`
	QuietS   float64 `json:"quiesced_s"`
	// CPUPercent is each process's user+system CPU over the window, % of
	// one core; RaftBytes what arrived on the Raft listeners meanwhile.
	CPUPercent     []float64 `json:"cpu_percent"`
	MeanCPUPercent float64   `json:"mean_cpu_percent"`
	RaftBytes      uint64    `json:"raft_bytes_in_window"`
	RSSMiB         []float64 `json:"rss_mib"`
	Profiles       []string  `json:"profiles,omitempty"`
}

type summary struct {
	Build          string  `json:"build"`
	Runs           int     `json:"runs"`
	MeanCPUPercent float64 `json:"mean_cpu_percent"`
	MinCPUPercent  float64 `json:"min_cpu_percent"`
	MaxCPUPercent  float64 `json:"max_cpu_percent"`
	MeanRSSMiB     float64 `json:"mean_rss_mib"`
}

func main() {
	var o options
	flag.StringVar(&o.keeld, "keeld", "", "candidate keeld binary (required)")
	flag.StringVar(&o.base, "keeld-base", "", "baseline keeld binary, run alternately with the candidate")
	flag.IntVar(&o.shards, "shards", 1000, "--shards for every process")
	flag.IntVar(&o.rounds, "rounds", 1, "runs of each build (with a baseline: A,B then B,A)")
	flag.DurationVar(&o.window, "window", 30*time.Second, "CPU measurement window")
	flag.DurationVar(&o.quiet, "quiet", 2*time.Second, "no Raft byte for this long counts as quiesced")
	flag.StringVar(&o.args, "args", "", "extra keeld flags, space-separated")
	flag.StringVar(&o.baseArgs, "base-args", "", "extra keeld flags for the baseline instead of -args (e.g. the same binary at another --rtt-ms)")
	flag.StringVar(&o.profile, "profile", "", "directory for CPU and heap profiles (taken after the measured window)")
	flag.StringVar(&o.out, "out", "idle.json", "JSON report")
	flag.StringVar(&o.workdir, "workdir", os.TempDir(), "where the processes' directories go")
	flag.Parse()
	if o.keeld == "" || o.rounds < 1 || o.shards < 1 || o.window <= 0 {
		fmt.Fprintln(os.Stderr, "idle: -keeld is required; -rounds, -shards and -window must be positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := o.runAll(ctx)
	if rep != nil {
		if werr := benchout.Write(filepath.Dir(o.out), filepath.Base(o.out), rep, func(string) error { return nil }); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "idle:", err)
		os.Exit(1)
	}
}

func (o options) runAll(ctx context.Context) (*report, error) {
	rep := &report{Machine: benchout.ReadMachine(), Command: strings.Join(os.Args, " "), Shards: o.shards,
		WindowS: o.window.Seconds(), Args: strings.Fields(o.args), Candidate: o.keeld, Baseline: o.base}
	type build struct{ name, bin, args string }
	cand, base := build{"candidate", o.keeld, o.args}, build{"baseline", o.base, o.args}
	if o.baseArgs != "" {
		base.args = o.baseArgs
		rep.BaseArgs = strings.Fields(o.baseArgs)
	}
	for r := 1; r <= o.rounds; r++ {
		order := []build{cand}
		if o.base != "" {
			order = []build{base, cand}
			if r%2 == 0 {
				order = []build{cand, base}
			}
		}
		for _, b := range order {
			res, err := o.runOnce(ctx, b.name, b.bin, b.args, r)
			if err != nil {
				return rep, fmt.Errorf("%s round %d: %w", b.name, r, err)
			}
			rep.Runs = append(rep.Runs, res)
			logf("%s round %d: CPU %.2f%% (%v) load %s, Raft bytes %d, RSS %v MiB",
				b.name, r, res.MeanCPUPercent, res.CPUPercent, res.LoadWindow, res.RaftBytes, res.RSSMiB)
		}
	}
	for _, b := range []string{"candidate", "baseline"} {
		if s, ok := summarise(rep.Runs, b); ok {
			rep.Summary = append(rep.Summary, s)
		}
	}
	if len(rep.Summary) == 2 && rep.Summary[1].MeanCPUPercent > 0 {
		rep.Ratio = round3(rep.Summary[0].MeanCPUPercent / rep.Summary[1].MeanCPUPercent)
		logf("candidate/baseline CPU: %.3f", rep.Ratio)
	}
	return rep, nil
}

func (o options) runOnce(ctx context.Context, name, bin, args string, round int) (run, error) {
	res := run{Build: name, Round: round, LoadStart: loadAvg()}
	root, err := os.MkdirTemp(o.workdir, "keel-idle-")
	if err != nil {
		return res, err
	}
	start := time.Now()
	t, err := startTrio(bin, root, o.shards, strings.Fields(args))
	if err != nil {
		_ = os.RemoveAll(root)
		return res, err
	}
	defer t.stop()
	since := func() float64 { return round3(time.Since(start).Seconds()) }
	if err := t.waitAll(ctx, "leaders", leaderTimeout, func(cs []shardCounts) bool { return leadersKnown(cs) >= o.shards }); err != nil {
		return res, err
	}
	res.LeadersS = since()
	if err := t.waitAll(ctx, "first snapshot timers", timerTimeout, func(cs []shardCounts) bool { return timersRan(cs) >= o.shards }); err != nil {
		return res, err
	}
	res.TimersS = since()
	if err := t.waitQuiet(ctx, o.quiet, quietTimeout); err != nil {
		return res, err
	}
	res.QuietS = since()
	logf("%s round %d: leaders %.0fs, timers %.0fs, quiesced %.0fs after the start", name, round, res.LeadersS, res.TimersS, res.QuietS)

	res.LoadWindow = loadAvg()
	before := make([]float64, len(t.nodes))
	for i, n := range t.nodes {
		if before[i], err = procCPU(n.cmd.Process.Pid); err != nil {
			return res, err
		}
	}
	b0, err := t.raftConns()
	if err != nil {
		return res, err
	}
	w0 := time.Now()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(o.window):
	}
	el := time.Since(w0).Seconds()
	var sum float64
	for i, n := range t.nodes {
		after, err := procCPU(n.cmd.Process.Pid)
		if err != nil {
			return res, err
		}
		pct := round3(100 * (after - before[i]) / el)
		res.CPUPercent = append(res.CPUPercent, pct)
		sum += pct
		rss, err := procRSS(n.cmd.Process.Pid)
		if err != nil {
			return res, err
		}
		res.RSSMiB = append(res.RSSMiB, round3(float64(rss)/(1<<20)))
	}
	res.MeanCPUPercent = round3(sum / float64(len(t.nodes)))
	b1, err := t.raftConns()
	if err != nil {
		return res, err
	}
	res.RaftBytes = raftBytesSince(b0, b1)
	if err := t.alive(); err != nil {
		return res, err
	}
	if o.profile != "" {
		res.Profiles, err = o.profiles(ctx, t, name, round)
	}
	return res, err
}

// profiles takes a CPU profile of each process over one window, then a
// heap profile.
func (o options) profiles(ctx context.Context, t *trio, name string, round int) ([]string, error) {
	if err := os.MkdirAll(o.profile, 0o755); err != nil {
		return nil, err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards files and first
		files []string
		first error
	)
	for _, n := range t.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := filepath.Join(o.profile, fmt.Sprintf("%s-%d-r%d", name, round, n.id))
			cpu := fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(o.window.Seconds())))
			err := loopback.FetchToFile(ctx, "http://"+n.pprofAddr+cpu, base+".cpu.pprof")
			if err == nil {
				err = loopback.FetchToFile(ctx, "http://"+n.pprofAddr+"/debug/pprof/heap", base+".heap.pprof")
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = err
			}
			files = append(files, base+".cpu.pprof", base+".heap.pprof")
		}()
	}
	wg.Wait()
	return files, first
}

func summarise(runs []run, build string) (summary, bool) {
	s := summary{Build: build, MinCPUPercent: 1e9}
	var cpu, rss float64
	var procs, rssN int
	for _, r := range runs {
		if r.Build != build {
			continue
		}
		s.Runs++
		for _, c := range r.CPUPercent {
			cpu += c
			procs++
			s.MinCPUPercent = min(s.MinCPUPercent, c)
			s.MaxCPUPercent = max(s.MaxCPUPercent, c)
		}
		for _, m := range r.RSSMiB {
			rss += m
			rssN++
		}
	}
	if procs == 0 {
		return s, false
	}
	s.MeanCPUPercent = round3(cpu / float64(procs))
	s.MeanRSSMiB = round3(rss / float64(max(1, rssN)))
	return s, true
}

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05 ")+format+"\n", args...)
}
