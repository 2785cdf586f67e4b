//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/keel-db/keel/bench/internal/benchout"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keel-db/keel/host"
)

// options are the command line. -quick changes the defaults of the flags
// not given explicitly.
type options struct {
	Out         string        `json:"-"`
	Quick       bool          `json:"quick"`
	Shards      []int         `json:"shards"`
	Kinds       []string      `json:"kinds"`
	TmpDir      string        `json:"tmp_dir"`
	Settle      time.Duration `json:"settle"`
	Idle        time.Duration `json:"idle"`
	Load        time.Duration `json:"load"`
	RestartRuns int           `json:"restart_runs"`
	Workers     int           `json:"workers"`
	ChildLimit  time.Duration `json:"child_limit"`
	Profile     string        `json:"profile,omitempty"`
	// RTTMillis is the NodeHost's RTTMillisecond (Dragonboat's tick) for
	// every kind; 0 means host.RTTForShards of each shard count, as keeld
	// does. Phases are the phases run, in order.
	RTTMillis int      `json:"rtt_ms"`
	Phases    []string `json:"phases"`
	// GoMemoryLimit is each child's Go memory limit in MiB: goMemKeeld
	// (the default) for host.GoMemoryLimitForShards of its shard count,
	// as keeld sets it, 0 for none. Every kind gets the same.
	GoMemoryLimit int64  `json:"go_memory_limit_mib"`
	Replot        string `json:"-"`
	// settleSet is true when -settle was given: it then holds at every
	// tick; otherwise childSettle derives it from the tick.
	settleSet bool

	// child is set in a child process (-child PHASE).
	child childArgs
}

func parseOptions(args []string) (options, error) {
	var o options
	var shards, kinds, phases string
	fs := flag.NewFlagSet("shards", flag.ContinueOnError)
	fs.StringVar(&o.Out, "out", "bench/results", "directory for shards.json and the charts")
	fs.BoolVar(&o.Quick, "quick", false, "a run of about a minute: 1 and 10 shards, short idle and load windows, one restart")
	fs.StringVar(&shards, "shards", "1,10,100,1000", "shard counts per NodeHost, comma separated")
	fs.StringVar(&kinds, "kinds", strings.Join(allKinds, ","), "kinds to compare (noop is the baseline every target is relative to)")
	fs.StringVar(&o.TmpDir, "tmp", os.TempDir(), "where each child's fresh state directory goes")
	fs.DurationVar(&o.Settle, "settle", 4*time.Second, "wait after the writes before measuring, so every shard quiesces (Dragonboat: 10 election timeouts idle, 2 s here)")
	fs.DurationVar(&o.Idle, "idle", 10*time.Second, "idle CPU window")
	fs.DurationVar(&o.Load, "load", 5*time.Second, "write-load window (every shard written at once)")
	fs.IntVar(&o.RestartRuns, "restart-runs", 3, "restarts per child (the first in a fresh process; the median is reported)")
	fs.IntVar(&o.Workers, "workers", 64, "goroutines writing and reading shards in steady and restart")
	fs.DurationVar(&o.ChildLimit, "child-limit", 10*time.Minute, "time bound of one child process")
	fs.StringVar(&o.Profile, "profile", "", "directory for profiles: heap after steady's writes and at the end of the load window, CPU of the idle window, of the first restart and of the load window (KIND-N-*.pprof)")
	fs.IntVar(&o.RTTMillis, "rtt-ms", 0, "the NodeHost's RTTMillisecond (Dragonboat's tick) for every kind; 0: host.RTTForShards of each shard count, as keeld does (20 ms up to 100 shards, 200 ms at 1,000). -settle defaults to 1.5x the quiesce threshold (100 ticks) when that is longer than 4 s")
	var memLimit string
	fs.StringVar(&memLimit, "go-memory-limit", "keeld", "each child's Go memory limit (debug.SetMemoryLimit), the same for every kind: keeld (host.GoMemoryLimitForShards of the shard count, as keeld sets it: 2,094 MiB at 1,000), none, or MiB; GOMEMLIMIT in the environment overrides it")
	fs.StringVar(&phases, "phases", strings.Join(allPhases, ","), "phases to run (steady, restart, load); restart needs steady")
	fs.StringVar(&o.Replot, "replot", "", "only redraw the charts of this shards.json into its directory")
	// The child's flags: set by the parent only.
	fs.StringVar(&o.child.Phase, "child", "", "internal: run one phase in this process and print its JSON line")
	fs.StringVar(&o.child.Kind, "kind", "", "internal: the child's kind")
	fs.IntVar(&o.child.Shards, "n", 0, "internal: the child's shard count")
	fs.StringVar(&o.child.Dir, "dir", "", "internal: the child's state directory")
	fs.StringVar(&o.child.Addr, "addr", "", "internal: the child's Raft address")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.Quick {
		quick := map[string]func(){
			"shards": func() { shards = "1,10" }, "idle": func() { o.Idle = 2 * time.Second },
			"settle": func() { o.Settle = 3 * time.Second }, "load": func() { o.Load = time.Second },
			"restart-runs": func() { o.RestartRuns = 1 }, "child-limit": func() { o.ChildLimit = 2 * time.Minute },
			"out": func() { o.Out = "bench/results/quick" },
		}
		for name, f := range quick {
			if !set[name] {
				f()
			}
		}
	}
	if o.RTTMillis < 0 || o.RTTMillis > 10000 {
		return o, fmt.Errorf("-rtt-ms: %d is not from 0 to 10000", o.RTTMillis)
	}
	o.settleSet = set["settle"]
	switch memLimit {
	case "keeld":
		o.GoMemoryLimit = goMemKeeld
	case "none":
	default:
		mib, err := strconv.ParseInt(memLimit, 10, 64)
		if err != nil || mib < 1 || mib > 1<<30 {
			return o, fmt.Errorf("-go-memory-limit: %q is not keeld, none or a number of MiB", memLimit)
		}
		o.GoMemoryLimit = mib
	}
	for _, p := range strings.Split(phases, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(allPhases, p) {
			return o, fmt.Errorf("-phases: %q is not one of %s", p, strings.Join(allPhases, ", "))
		}
		o.Phases = append(o.Phases, p)
	}
	if slices.Contains(o.Phases, phaseRestart) && !slices.Contains(o.Phases, phaseSteady) {
		return o, errors.New("-phases: restart reopens what steady left, so it needs steady")
	}
	for _, s := range strings.Split(shards, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 10000 {
			return o, fmt.Errorf("-shards: %q is not a number from 1 to 10000", s)
		}
		o.Shards = append(o.Shards, n)
	}
	for _, k := range strings.Split(kinds, ",") {
		k = strings.TrimSpace(k)
		if !slices.Contains(allKinds, k) {
			return o, fmt.Errorf("-kinds: %q is not one of %s", k, strings.Join(allKinds, ", "))
		}
		o.Kinds = append(o.Kinds, k)
	}
	switch {
	case o.Settle < 0 || o.Idle <= 0 || o.Load <= 0 || o.ChildLimit <= 0:
		return o, errors.New("-idle, -load and -child-limit must be positive, -settle not negative")
	case o.RestartRuns < 1 || o.RestartRuns > 20:
		return o, errors.New("-restart-runs must be from 1 to 20")
	case o.Workers < 1 || o.Workers > 4096:
		return o, errors.New("-workers must be from 1 to 4096")
	}
	if o.child.Phase != "" {
		c := &o.child
		if c.Shards < 1 || c.Dir == "" || c.Addr == "" || !slices.Contains(allKinds, c.Kind) {
			return o, errors.New("-child needs -kind, -n, -dir and -addr")
		}
		c.Settle, c.Idle, c.Load, c.RestartRuns, c.Workers, c.Limit, c.Profile = o.Settle, o.Idle, o.Load, o.RestartRuns, o.Workers, o.ChildLimit, o.Profile
		c.RTTMillis = o.RTTMillis
		if c.RTTMillis == 0 {
			c.RTTMillis = o.rtt(c.Shards)
		}
		c.GoMemoryLimit = o.goMemoryLimit(c.Shards)
	}
	return o, nil
}

// goMemKeeld stands for host.GoMemoryLimitForShards in
// options.GoMemoryLimit.
const goMemKeeld = -1

// goMemoryLimit is the Go memory limit in MiB of a child at shards, 0 for
// none.
func (o options) goMemoryLimit(shards int) int64 {
	if o.GoMemoryLimit == goMemKeeld {
		return host.GoMemoryLimitForShards(shards)
	}
	return o.GoMemoryLimit
}

// childMemLimitArg is -go-memory-limit for a child at shards.
func (o options) childMemLimitArg(shards int) string {
	if l := o.goMemoryLimit(shards); l > 0 {
		return strconv.FormatInt(l, 10)
	}
	return "none"
}

func main() {
	o, err := parseOptions(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "shards: %v\n", err)
		os.Exit(2)
	}
	switch {
	case o.child.Phase != "":
		// Dragonboat logs every election at warn level: 1,000 shards would bury
		// the run's own lines.
		host.UseSlog(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})), slog.LevelError)
		if err := runChild(o.child); err != nil {
			fmt.Fprintf(os.Stderr, "shards child %s %s n=%d: %v\n", o.child.Phase, o.child.Kind, o.child.Shards, err)
			os.Exit(1)
		}
	case o.Replot != "":
		if err := replot(o.Replot); err != nil {
			fmt.Fprintf(os.Stderr, "shards: %v\n", err)
			os.Exit(1)
		}
	default:
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := run(ctx, o); err != nil {
			fmt.Fprintf(os.Stderr, "shards: %v\n", err)
			stop()
			os.Exit(1)
		}
	}
}

// rtt is the tick of a child running shards shards.
func (o options) rtt(shards int) int {
	if o.RTTMillis > 0 {
		return o.RTTMillis
	}
	return int(host.RTTForShards(shards))
}

// childSettle is -settle, or when it was not given, at least 1.5 times
// Dragonboat's quiesce threshold (100 ticks with host.ShardConfig) at the
// child's tick.
func (o options) childSettle(shards int) time.Duration {
	if o.settleSet {
		return o.Settle
	}
	return max(o.Settle, time.Duration(o.rtt(shards))*150*time.Millisecond)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
// The steady and restart children of one kind share it: Dragonboat refuses
// to reopen a NodeHost directory under another Raft address.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// runChildProcess re-executes this program for one phase and decodes the
// JSON line it prints. The child dies with the parent (Pdeathsig) and is
// killed at the child limit.
func runChildProcess(ctx context.Context, o options, phase, kind string, shards int, dir, addr string) (*childResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.ChildLimit+30*time.Second)
	defer cancel()
	args := []string{"-child", phase, "-kind", kind, "-n", strconv.Itoa(shards), "-dir", dir, "-addr", addr,
		"-settle", o.childSettle(shards).String(), "-idle", o.Idle.String(), "-load", o.Load.String(),
		"-restart-runs", strconv.Itoa(o.RestartRuns), "-workers", strconv.Itoa(o.Workers), "-child-limit", o.ChildLimit.String(),
		"-rtt-ms", strconv.Itoa(o.rtt(shards)), "-go-memory-limit", o.childMemLimitArg(shards)}
	if o.Profile != "" {
		abs, err := filepath.Abs(o.Profile)
		if err != nil {
			return nil, err
		}
		args = append(args, "-profile", abs)
	}
	cmd := exec.CommandContext(ctx, self, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runErr := cmd.Run()
	var res *childResult
	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	for i := len(lines) - 1; i >= 0 && res == nil; i-- {
		if bytes.HasPrefix(lines[i], []byte("{")) {
			var r childResult
			if err := json.Unmarshal(lines[i], &r); err == nil {
				res = &r
			}
		}
	}
	switch {
	case res == nil && ctx.Err() != nil:
		return nil, fmt.Errorf("%w: %s %s n=%d: %w after %v", errChild, phase, kind, shards, errTimeout, o.ChildLimit)
	case res == nil:
		return nil, fmt.Errorf("%w: %s %s n=%d printed no result: %v", errChild, phase, kind, shards, runErr)
	case res.Error != "":
		return res, fmt.Errorf("%w: %s %s n=%d: %s", errChild, phase, kind, shards, res.Error)
	}
	return res, nil
}

// rotated returns kinds starting at the i-th, so no kind always runs first
// (right after a deletion of 1,000 tablets, or on a cooler page cache).
func rotated(kinds []string, i int) []string {
	i %= len(kinds)
	return append(slices.Clone(kinds[i:]), kinds[:i]...)
}

// run is the whole benchmark: for each shard count, every phase for every
// kind in turn (steady, then restart on what steady left, then load on a
// fresh directory), each in its own child process. A failed child is
// recorded in the report's errors and the rest still run.
func run(ctx context.Context, o options) error {
	started := time.Now()
	root, err := os.MkdirTemp(o.TmpDir, "keel-shards-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(root) }()
	rep := &report{Started: started.UTC().Format(time.RFC3339), Host: benchout.ReadMachine(), Config: o,
		Notes: []string{
			"Each figure comes from a fresh child process running one kind at one shard count; noop is Dragonboat's in-memory no-op state machine on the same NodeHost and Raft settings.",
			"RSS is VmRSS after debug.FreeOSMemory; disk is allocated bytes (st_blocks*512); the machine is shared, so quote several runs.",
			"Targets are reported, never asserted.",
		}}
	fail := func(what string, err error) {
		logf("%s: %v", what, err)
		rep.Errors = append(rep.Errors, what+": "+err.Error())
	}
	rows := map[[2]string]*row{}
	rowOf := func(kind string, n int) *row {
		k := [2]string{kind, strconv.Itoa(n)}
		if rows[k] == nil {
			rows[k] = &row{Kind: kind, Shards: n}
			rep.Rows = append(rep.Rows, rows[k])
		}
		return rows[k]
	}
	for ni, n := range o.Shards {
		kinds := rotated(o.Kinds, ni)
		dirs, addrs := map[string]string{}, map[string]string{}
		for _, kind := range kinds {
			if ctx.Err() != nil || !slices.Contains(o.Phases, phaseSteady) {
				break
			}
			dir := filepath.Join(root, fmt.Sprintf("%s-%d", kind, n))
			addr, err := freeAddr()
			if err != nil {
				return err
			}
			logf("steady %s n=%d", kind, n)
			r, err := runChildProcess(ctx, o, phaseSteady, kind, n, dir, addr)
			rowOf(kind, n).Steady = r
			if err != nil {
				fail(fmt.Sprintf("steady %s n=%d", kind, n), err)
				_ = os.RemoveAll(dir)
				continue
			}
			dirs[kind], addrs[kind] = dir, addr
			logf("steady %s n=%d (tick %d ms): start %.2f s, writes %.2f s, RSS %.1f MiB, %d fds, disk raft %.1f + sm %.1f MiB, idle CPU %.2f%%",
				kind, n, r.RTTMillis, r.StartSeconds, r.PopulateSeconds, mib(r.Memory.RSSBytes), r.FDs, mib(r.Disk.RaftBytes), mib(r.Disk.SMBytes), r.IdleCPUPercent)
		}
		for _, kind := range kinds {
			dir, ok := dirs[kind]
			if !ok || ctx.Err() != nil {
				continue
			}
			if !slices.Contains(o.Phases, phaseRestart) {
				_ = os.RemoveAll(dir)
				continue
			}
			logf("restart %s n=%d", kind, n)
			r, err := runChildProcess(ctx, o, phaseRestart, kind, n, dir, addrs[kind])
			rowOf(kind, n).Restart = r
			if err != nil {
				fail(fmt.Sprintf("restart %s n=%d", kind, n), err)
			} else {
				logf("restart %s n=%d: %v s, median %.3f s", kind, n, r.RestartSeconds, r.RestartMedian)
			}
			_ = os.RemoveAll(dir)
		}
		for _, kind := range kinds {
			if ctx.Err() != nil || !slices.Contains(o.Phases, phaseLoad) {
				break
			}
			dir := filepath.Join(root, fmt.Sprintf("%s-%d-load", kind, n))
			addr, err := freeAddr()
			if err != nil {
				return err
			}
			logf("load %s n=%d", kind, n)
			r, err := runChildProcess(ctx, o, phaseLoad, kind, n, dir, addr)
			rowOf(kind, n).Load = r
			if err != nil {
				fail(fmt.Sprintf("load %s n=%d", kind, n), err)
			} else if l := r.Load; l != nil {
				logf("load %s n=%d: %.0f writes/s, RSS peak %.1f MiB, memtables peak %.1f of %.1f MiB budget, %d budget flushes",
					kind, n, l.WritesPerSec, mib(l.RSSPeakBytes), mib(l.MemTableBytesPeak), mib(l.MemTableBudget), l.BudgetFlushes)
			}
			_ = os.RemoveAll(dir)
		}
	}
	rep.Comparisons = rep.compare()
	rep.Targets = rep.targets()
	rep.Seconds = time.Since(started).Seconds()
	if ctx.Err() != nil {
		rep.Errors = append(rep.Errors, "interrupted: "+ctx.Err().Error())
	}
	if err := writeOutputs(o.Out, rep); err != nil {
		return err
	}
	for _, t := range rep.Targets {
		logf("target %-52s %-14s measured %10.2f %-5s %s %s", t.Name, t.Goal, t.Measured, t.Unit, t.verdict(), t.Note)
	}
	logf("wrote %s/shards.json and charts in %.0f s", o.Out, rep.Seconds)
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d child(ren) failed: %s", len(rep.Errors), strings.Join(rep.Errors, "; "))
	}
	return nil
}

// mib converts bytes to MiB for logs and the report.
func mib[T int64 | uint64](b T) float64 { return float64(b) / (1 << 20) }

// writeOutputs writes shards.json and the charts into out.
func writeOutputs(out string, rep *report) error {
	return benchout.Write(out, "shards.json", rep, func(dir string) error { return drawCharts(dir, rep) })
}

// replot redraws the charts of a saved report.
func replot(file string) error { return benchout.Replot(file, drawCharts) }
