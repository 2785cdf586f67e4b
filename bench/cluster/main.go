//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/keel-db/keel/bench/internal/benchout"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command line. -quick changes the defaults of the flags
// not given explicitly.
type options struct {
	Out            string        `json:"-"`
	Quick          bool          `json:"quick"`
	Keeld          string        `json:"keeld"`
	KeeldBase      string        `json:"keeld_base,omitempty"`
	Rounds         int           `json:"rounds,omitempty"`
	ShardsList     []int         `json:"shards_list,omitempty"`
	Client         string        `json:"client"`
	Target         string        `json:"target"`
	KeeldEnv       string        `json:"keeld_env,omitempty"`
	Rate           float64       `json:"rate,omitempty"`
	KeeldArgs      string        `json:"keeld_args"`
	TmpDir         string        `json:"tmp_dir"`
	N              int64         `json:"n"`
	Ks             []int         `json:"k"`
	CatchUpKeys    int64         `json:"catch_up_keys"`
	UnderLoad      bool          `json:"snapshot_under_load"`
	UnderLoadK     int           `json:"snapshot_under_load_k"`
	SmallMB        int64         `json:"restart_small_mb"`
	LargeMB        int64         `json:"restart_large_mb"`
	FillValue      int           `json:"fill_value_bytes"`
	RestartRuns    int           `json:"restart_runs"`
	LimitsSeconds  float64       `json:"limits_seconds"`
	SeqMB          int64         `json:"seq_write_mb"`
	PhaseLimit     time.Duration `json:"phase_limit"`
	SampleInterval time.Duration `json:"sample_interval"`
	Profile        time.Duration `json:"profile,omitempty"`
	TxnBatch       int           `json:"txn_batch"`
	TxnK           int           `json:"txn_k"`
	Phases         []string      `json:"phases"`
	Replot         string        `json:"-"`
}

// allPhases are the phases -phases can name, in the order they run.
var allPhases = []string{"limits", "write", "under-load", "catch-up", "restart"}

// runs reports whether phase p was selected.
func (o options) runs(p string) bool { return slices.Contains(o.Phases, p) }

func parseOptions(args []string) (options, error) {
	var o options
	var ks, shardsList string
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.StringVar(&o.Out, "out", "bench/results", "directory for cluster.json and the charts")
	fs.BoolVar(&o.Quick, "quick", false, "a run of under a minute: tiny N, one K, a small kept log window, no large restart")
	fs.StringVar(&o.Keeld, "keeld", "", "keeld binary (default: build ./tools/keeld once into the temp dir)")
	fs.StringVar(&o.KeeldArgs, "keeld-args", "", "extra keeld flags, space separated")
	fs.StringVar(&o.KeeldBase, "keeld-base", "", "a baseline keeld binary: the write runs alternate it with -keeld (A,B then B,A), -rounds times, and report each figure's ratio candidate/baseline (ab in the JSON); under-load and catch-up are skipped, except with -shards-list, where catch-up and restart alternate too")
	fs.IntVar(&o.Rounds, "rounds", 2, "A/B rounds with -keeld-base")
	fs.StringVar(&shardsList, "shards-list", "", "shard counts, comma separated (e.g. 1,4,16): for each, keeld runs with --shards N and the write (every -k), catch-up and restart phases run, alternating with -keeld-base when given (shards_rows in the JSON); snapshot-under-load and the batched write run are skipped")
	fs.StringVar(&o.Client, "client", "raw", "load client: raw (one hand-written HTTP/1.1 keep-alive connection per writer) or std (net/http)")
	fs.StringVar(&o.Target, "target", "all", "write runs send to: all (writer w to replica w mod 3, round-robin over the members) or leader (every put to the leader)")
	fs.Float64Var(&o.Rate, "rate", 0, "pace write runs at this many puts/s in all (0: closed loop, as fast as K clients go); with -keeld-base, paced runs compare CPU per put at equal load")
	fs.StringVar(&o.KeeldEnv, "keeld-env", "", "extra environment for every keeld, space separated (e.g. GODEBUG=gctrace=1)")
	fs.StringVar(&o.TmpDir, "tmp", os.TempDir(), "where the replicas' fresh directories go (the limits are measured here too)")
	fs.Int64Var(&o.N, "n", 200_000, "keys per write run")
	fs.StringVar(&ks, "k", "16,256", "concurrent clients per write run, comma separated")
	fs.Int64Var(&o.CatchUpKeys, "catchup-keys", 60_000, "keys written per shard and round while a follower process is down (must pass keeld's kept log window, --log-keep-entries)")
	fs.BoolVar(&o.UnderLoad, "under-load", true, "run snapshot-under-load")
	fs.IntVar(&o.UnderLoadK, "under-load-k", 16, "K for snapshot-under-load (compared with the write run at this K)")
	fs.Int64Var(&o.SmallMB, "restart-small-mb", 10, "user data for the small restart, MB")
	fs.Int64Var(&o.LargeMB, "restart-large-mb", 1024, "user data for the large restart, MB (0 skips it)")
	fs.IntVar(&o.FillValue, "fill-value", 64<<10, "value size used to fill state for the restart phase")
	fs.IntVar(&o.RestartRuns, "restart-runs", 3, "restarts per state size (the median is reported)")
	fs.Float64Var(&o.LimitsSeconds, "limits-seconds", 2, "time bound of each machine-limit probe")
	fs.Int64Var(&o.SeqMB, "seq-mb", 1024, "bytes written by the sequential-write probe, MiB")
	fs.DurationVar(&o.PhaseLimit, "phase-limit", 10*time.Minute, "time bound of each load")
	fs.DurationVar(&o.SampleInterval, "sample-interval", 500*time.Millisecond, "disk and memory sampling interval")
	fs.StringVar(&o.Replot, "replot", "", "only redraw the charts of this cluster.json into its directory")
	fs.DurationVar(&o.Profile, "profile", 0, "take a CPU profile this long of every keeld (KEEL_PPROF) at the start of each write run, into <out>/profiles/")
	fs.IntVar(&o.TxnBatch, "txn-batch", 64, "puts per POST /txn in the extra write run that batches requests (0 skips it)")
	fs.IntVar(&o.TxnK, "txn-k", 16, "K for the batched write run")
	phases := fs.String("phases", strings.Join(allPhases, ","), "phases to run, comma separated")
	err := fs.Parse(args)
	if err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.Quick {
		quick := map[string]func(){
			"n": func() { o.N = 3000 }, "k": func() { ks = "16" },
			// A small kept log window, so a follower falls behind the
			// compacted log after a few thousand writes, not 50,000.
			"keeld-args": func() { o.KeeldArgs = "--log-keep-entries 2000" }, "catchup-keys": func() { o.CatchUpKeys = 5000 },
			"restart-large-mb": func() { o.LargeMB = 0 }, "restart-runs": func() { o.RestartRuns = 1 },
			"limits-seconds": func() { o.LimitsSeconds = 0.3 }, "seq-mb": func() { o.SeqMB = 64 },
			"phase-limit": func() { o.PhaseLimit = 30 * time.Second }, "sample-interval": func() { o.SampleInterval = 250 * time.Millisecond },
			"out": func() { o.Out = "bench/results/quick" },
		}
		for name, f := range quick {
			if !set[name] {
				f()
			}
		}
	}
	for _, s := range strings.Split(ks, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || k < 1 || k > 4096 {
			return o, fmt.Errorf("-k: %q is not a number from 1 to 4096", s)
		}
		o.Ks = append(o.Ks, k)
	}
	if o.ShardsList, err = parseShardsList(shardsList); err != nil {
		return o, err
	}
	if len(o.ShardsList) > 0 && setsShards(strings.Fields(o.KeeldArgs)) {
		return o, errors.New("-shards-list sets --shards per row: leave --shards, --shard-map and --shard-id out of -keeld-args")
	}
	for _, p := range strings.Split(*phases, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(allPhases, p) {
			return o, fmt.Errorf("-phases: %q is not one of %s", p, strings.Join(allPhases, ", "))
		}
		// -under-load=false predates -phases and still turns it off.
		if p != "under-load" || o.UnderLoad {
			o.Phases = append(o.Phases, p)
		}
	}
	switch {
	case o.Client != "raw" && o.Client != "std":
		return o, errors.New("-client must be raw or std")
	case o.Target != "all" && o.Target != "leader":
		return o, errors.New("-target must be all or leader")
	case o.Rate < 0:
		return o, errors.New("-rate must not be negative")
	case o.Rounds < 1 || o.Rounds > 20:
		return o, errors.New("-rounds must be from 1 to 20")
	case o.TxnBatch < 0 || o.TxnBatch > 1000 || o.TxnK < 1:
		return o, errors.New("-txn-batch must be from 0 to 1000 and -txn-k at least 1")
	case o.Profile < 0 || o.Profile > 5*time.Minute:
		return o, errors.New("-profile must be from 0 to 5m")
	case o.N < 1:
		return o, errors.New("-n must be at least 1")
	case o.CatchUpKeys < 1:
		return o, errors.New("-catchup-keys must be at least 1")
	case o.UnderLoadK < 1:
		return o, errors.New("-under-load-k must be at least 1")
	case o.SmallMB < 1 || o.LargeMB < 0:
		return o, errors.New("-restart-small-mb must be at least 1 and -restart-large-mb at least 0")
	case o.FillValue < 1 || o.FillValue > 1<<20:
		return o, errors.New("-fill-value must be from 1 to 1048576")
	case o.RestartRuns < 1 || o.RestartRuns > 20:
		return o, errors.New("-restart-runs must be from 1 to 20")
	case o.PhaseLimit <= 0 || o.SampleInterval <= 0 || o.LimitsSeconds <= 0 || o.SeqMB < 1:
		return o, errors.New("-phase-limit, -sample-interval, -limits-seconds and -seq-mb must be positive")
	}
	return o, nil
}

func main() {
	o, err := parseOptions(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		os.Exit(2)
	}
	if o.Replot != "" {
		if err := replot(o.Replot); err != nil {
			fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		stop()
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// run is the whole benchmark. Phases fail independently: a failed phase is
// recorded in the report's errors and the others still run; run returns an
// error when any failed, after writing the report.
func run(ctx context.Context, o options) error {
	started := time.Now()
	root, err := os.MkdirTemp(o.TmpDir, "keel-bench-")
	if err != nil {
		return err
	}
	keeld := o.Keeld
	if keeld == "" {
		keeld = filepath.Join(root, "keeld")
		logf("building keeld")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", keeld, "./tools/keeld")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			_ = os.RemoveAll(root)
			return fmt.Errorf("build keeld (run from the repository root): %w", err)
		}
	}
	maxK := o.UnderLoadK
	for _, k := range o.Ks {
		maxK = max(maxK, k)
	}
	fl := newFleet(keeld, root, strings.Fields(o.KeeldArgs), maxK+64)
	fl.pprof = o.Profile > 0
	fl.stdClient, fl.leaderOnly = o.Client == "std", o.Target == "leader"
	fl.env = strings.Fields(o.KeeldEnv)
	fl.rate = o.Rate
	defer fl.cleanup()

	rep := &report{Started: started.UTC().Format(time.RFC3339), Host: benchout.ReadMachine(), Config: o,
		Notes: []string{"The machine is shared: other work may run beside the benchmark (see host.loadavg_at_start); quote medians of several runs.",
			"Targets are for a 2-core, 24 GiB machine and are reported, never asserted."}}
	fail := func(phase string, err error) {
		logf("%s: %v", phase, err)
		rep.Errors = append(rep.Errors, phase+": "+err.Error())
	}

	smp := &sampler{start: started, interval: o.SampleInterval}
	sctx, scancel := context.WithCancel(ctx)
	sdone := make(chan struct{})
	go func() { defer close(sdone); smp.run(sctx) }()

	if o.runs("limits") {
		logf("limits in %s", root)
		if l, err := measureLimits(root, time.Duration(o.LimitsSeconds*float64(time.Second)), o.SeqMB<<20); err != nil {
			fail("limits", err)
		} else {
			rep.Limits = &l
			logf("limits: %.0f fdatasync'd 4 KiB appends/s (p50 %.0f µs, p99 %.0f µs), %.0f MiB/s sequential, %.0f links/s",
				l.FdatasyncAppendsSec, l.FdatasyncP50US, l.FdatasyncP99US, l.SeqWriteMiBSec, l.HardLinksSec)
		}
	}

	matrix := len(o.ShardsList) > 0
	if matrix {
		shardsMatrix(ctx, fl, smp, o, rep, fail)
	}
	ab := o.KeeldBase != "" && o.runs("write") && !matrix
	if ab {
		abWrites(ctx, fl, smp, o, rep, fail, "")
	}
	catchUpDone := !o.runs("catch-up")
	for i, k := range o.Ks {
		if !o.runs("write") || ab || matrix {
			break
		}
		if ctx.Err() != nil {
			break
		}
		name := fmt.Sprintf("write-k%d", k)
		c, err := fl.newCluster(ctx, name)
		if err != nil {
			fail(name, err)
			continue
		}
		smp.set(c, name)
		logf("%s: %d puts", name, o.N)
		w, err := writePhase(ctx, c, k, 1, o.N, byte('a'+i), o.PhaseLimit, o.profiler(name))
		if err != nil {
			fail(name, err)
		}
		if w.Ops > 0 {
			rep.Write = append(rep.Write, w)
			logf("%s: %.0f ops/s p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms, server %.1f µs/op, client %.1f µs/op, %d errors",
				name, w.OpsPerSec, w.Latency.P50, w.Latency.P99, w.Latency.P999, w.Latency.Max, w.ServerCPUPerOpUS, w.ClientCPUPerOpUS, w.Errors)
		}
		if err == nil && o.runs("under-load") && k == o.UnderLoadK {
			smp.set(c, "snapshot-under-load")
			logf("snapshot-under-load: follower down, writing past the compacted log")
			if b, err := leaveBehind(ctx, c, o.CatchUpKeys, 64, 'p', o.PhaseLimit); err != nil {
				fail("snapshot-under-load", err)
			} else {
				u, err := snapshotUnderLoad(ctx, c, b, k, 'u', o.PhaseLimit, w)
				if err != nil {
					fail("snapshot-under-load", err)
				}
				rep.Under = &u
				logf("snapshot-under-load: p99 %.2f ms vs %.2f (x%.2f), %.0f ops/s, caught up in %.2f s",
					u.Latency.P99, u.BaselineP99Ms, u.P99Ratio, u.OpsPerSec, u.CatchUp.Seconds)
			}
		}
		if err == nil && !catchUpDone {
			catchUpDone = true
			smp.set(c, "catch-up")
			logf("catch-up: follower down, writing past the compacted log")
			if b, err := leaveBehind(ctx, c, o.CatchUpKeys, 64, 'q', o.PhaseLimit); err != nil {
				fail("catch-up", err)
			} else if cu, err := restartFollower(ctx, c, b, o.PhaseLimit, o.profiler("catch-up")); err != nil {
				fail("catch-up", err)
			} else {
				probeAfterCatchUp(filepath.Join(root, name), o, rep.Limits, &cu)
				rep.CatchUp = &cu
				logf("catch-up: %.2f s (%.2f s to first /status), %.1f MB (%s; %.1f MB staged), %.1f MB/s = %.2f of the disk's %.0f MB/s (%s)",
					cu.Seconds, cu.StartupSeconds, float64(cu.ReceivedBytes)/1e6, cu.ReceivedSource, float64(cu.StagedBytes)/1e6, cu.InstallMBPerS, cu.FractionOfDisk, cu.DiskSeqMBPerS, cu.DiskProbe)
			}
		}
		c.stopAll(false)
		_ = os.RemoveAll(filepath.Join(root, name))
	}

	if ctx.Err() == nil && o.runs("write") && !ab && !matrix && o.TxnBatch > 1 {
		name := fmt.Sprintf("write-k%d-txn%d", o.TxnK, o.TxnBatch)
		if c, err := fl.newCluster(ctx, name); err != nil {
			fail(name, err)
		} else {
			smp.set(c, name)
			logf("%s: %d puts, %d per POST /txn", name, o.N, o.TxnBatch)
			w, err := writePhase(ctx, c, o.TxnK, o.TxnBatch, o.N, 'w', o.PhaseLimit, o.profiler(name))
			if err != nil {
				fail(name, err)
			}
			if w.Ops > 0 {
				rep.WriteTxn = append(rep.WriteTxn, w)
				logf("%s: %.0f puts/s p50 %.2f p99 %.2f ms per request, server %.1f µs/put, client %.1f µs/put, %d errors",
					name, w.OpsPerSec, w.Latency.P50, w.Latency.P99, w.ServerCPUPerOpUS, w.ClientCPUPerOpUS, w.Errors)
			}
			c.stopAll(false)
			_ = os.RemoveAll(filepath.Join(root, name))
		}
	}
	if ctx.Err() == nil && o.runs("restart") && !matrix {
		restartPhase(ctx, fl, smp, o, rep, fail)
	}

	scancel()
	<-sdone
	rep.Disk = summarise(smp.all(), o.SampleInterval)
	if n := len(rep.Restart); n == 2 && rep.Restart[0].MedianSecond > 0 {
		rep.RestartRatio = rep.Restart[1].MedianSecond / rep.Restart[0].MedianSecond
	}
	rep.Targets = rep.targets()
	rep.Seconds = time.Since(started).Seconds()
	if ctx.Err() != nil {
		rep.Errors = append(rep.Errors, "interrupted: "+ctx.Err().Error())
	}
	if err := writeOutputs(o.Out, rep); err != nil {
		return err
	}
	for _, t := range rep.Targets {
		logf("target %-45s %-9s measured %10.2f %-8s %s", t.Name, t.Goal, t.Measured, t.Unit, t.verdict())
	}
	logf("wrote %s/cluster.json and charts in %.0f s", o.Out, rep.Seconds)
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d phase(s) failed: %s", len(rep.Errors), strings.Join(rep.Errors, "; "))
	}
	return nil
}

// restartPhase fills a fresh cluster to the small size, times restarts,
// then (unless LargeMB is 0) fills on to the large size and times again.
func restartPhase(ctx context.Context, fl *fleet, smp *sampler, o options, rep *report, fail func(string, error)) {
	c, err := fl.newCluster(ctx, "restart")
	if err != nil {
		fail("restart", err)
		return
	}
	defer func() { c.stopAll(false); _ = os.RemoveAll(filepath.Join(fl.root, "restart")) }()
	var user uint64
	sizes := []struct {
		label, phase string
		mb           int64
		prefix       byte
	}{{"small", "small", o.SmallMB, 'r'}, {"large", "large", o.LargeMB - o.SmallMB, 's'}}
	for _, s := range sizes {
		if s.mb <= 0 || ctx.Err() != nil {
			continue
		}
		smp.set(c, "fill-"+s.phase)
		logf("restart: filling %d MB more in %d-byte values", s.mb, o.FillValue)
		lr, err := fill(ctx, c, s.mb*1e6, o.FillValue, 16, s.prefix, o.PhaseLimit*3)
		if err != nil {
			fail("restart-"+s.label, err)
			return
		}
		logf("restart: filled at %.1f MB/s", lr.MBPerSec)
		user += uint64(lr.Ops) * uint64(o.FillValue+16)
		smp.set(c, "restart-"+s.phase)
		r, err := restartTimes(ctx, c, s.label, o.RestartRuns, user)
		if err != nil {
			fail("restart-"+s.label, err)
			return
		}
		rep.Restart = append(rep.Restart, r)
		logf("restart %s (%.0f MB user, %.0f MB sm, %.0f MB raft per replica): %v s, median %.3f s",
			s.label, float64(r.UserBytes)/1e6, float64(r.SMBytes)/1e6, float64(r.RaftBytes)/1e6, r.Runs, r.MedianSecond)
	}
}

// writeOutputs writes cluster.json and the charts into out.
func writeOutputs(out string, rep *report) error {
	return benchout.Write(out, "cluster.json", rep, func(dir string) error { return drawCharts(dir, rep) })
}

// replot redraws the charts of a saved report.
func replot(file string) error { return benchout.Replot(file, drawCharts) }
