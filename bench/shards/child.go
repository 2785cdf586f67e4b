//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/logcompact"
)

// The three child phases. Each runs in a fresh process (main re-executes
// itself with -child), so RSS, VmHWM and open files belong to one kind at
// one shard count.
const (
	// phaseSteady: start every shard fresh, write keysPerShard keys to
	// each, wait until every shard is quiescent, then RSS (after a GC),
	// open files, disk, and the idle CPU; close.
	phaseSteady = "steady"
	// phaseRestart: reopen what steady left, start every replica with no
	// member list, time until a linearizable read succeeds on every
	// shard; repeated -restart-runs times in the same process.
	phaseRestart = "restart"
	// phaseLoad: on a fresh directory, write every shard concurrently for
	// -load seconds, sampling RSS and Keel's memtable counters.
	phaseLoad = "load"
)

var allPhases = []string{phaseSteady, phaseRestart, phaseLoad}

// Payload shape: 16-byte keys, 256-byte values, keysPerShard per shard in
// steady (the same payload for every kind).
const (
	keyBytes     = 16
	valueBytes   = 256
	keysPerShard = 20
)

// key is the 16-byte key i of shard ("s00042/k00000007").
func key(shard uint64, i int) []byte { return fmt.Appendf(nil, "s%05d/k%08d", shard, i) }

// value is the deterministic 256-byte value of key i of shard, so a read
// after restart can check what it got. It is pseudo-random: Pebble's
// compression must not make Keel's disk look smaller than the payload.
func value(shard uint64, i int) []byte {
	r := rand.New(rand.NewPCG(shard, uint64(i)))
	v := make([]byte, valueBytes)
	for j := range v {
		v[j] = byte(r.Uint32())
	}
	return v
}

// childArgs is what the parent passes to a child.
type childArgs struct {
	Phase       string
	Kind        string
	Shards      int
	Dir         string
	Addr        string
	Settle      time.Duration
	Idle        time.Duration
	Load        time.Duration
	RestartRuns int
	Workers     int
	Limit       time.Duration
	// RTTMillis is the NodeHost's RTTMillisecond; 0 means host.RTTMillisecond.
	RTTMillis int
	// GoMemoryLimit is the Go memory limit in MiB the child sets, 0 for
	// none (or when GOMEMLIMIT is set).
	GoMemoryLimit int64
	// Profile, when set, is a directory for a heap profile after steady's
	// writes and one at the end of the load window, and CPU profiles of
	// steady's idle window, of the first restart and of the load window.
	Profile string
}

// childResult is the one JSON line a child prints. Fields a phase does not
// measure stay zero and are omitted.
type childResult struct {
	Phase  string `json:"phase"`
	Kind   string `json:"kind"`
	Shards int    `json:"shards"`
	// RTTMillis is the NodeHost's tick the child ran with.
	RTTMillis int `json:"rtt_ms,omitempty"`
	// GoMemoryLimitMiB is the Go memory limit the child ran with, 0 for
	// none.
	GoMemoryLimitMiB int64 `json:"go_memory_limit_mib,omitempty"`

	// StartSeconds is host.Open (or NewNodeHost) plus StartReplica of every
	// shard, before any shard has a leader.
	StartSeconds float64 `json:"start_seconds,omitempty"`
	// PopulateSeconds writes keysPerShard keys to every shard (leader
	// elections included).
	PopulateSeconds float64 `json:"populate_seconds,omitempty"`
	PayloadBytes    int64   `json:"payload_bytes,omitempty"`

	Memory *memory `json:"memory,omitempty"`
	// FDs is the count of /proc/self/fd; FDKinds sorts them by what they
	// point at (see fdKind).
	FDs     int            `json:"fds,omitempty"`
	FDKinds map[string]int `json:"fd_kinds,omitempty"`

	// Disk while every shard is open (after the writes) and after Close.
	Disk       *disk `json:"disk,omitempty"`
	DiskClosed *disk `json:"disk_closed,omitempty"`

	IdleSeconds    float64 `json:"idle_seconds,omitempty"`
	IdleCPUSeconds float64 `json:"idle_cpu_seconds,omitempty"`
	// IdleCPUPercent is IdleCPUSeconds over IdleSeconds, in % of one core.
	IdleCPUPercent float64 `json:"idle_cpu_percent,omitempty"`

	// RestartSeconds are the runs of: open, start every replica, until a
	// read succeeded on every shard. The first is in a fresh process.
	RestartSeconds []float64 `json:"restart_seconds,omitempty"`
	RestartMedian  float64   `json:"restart_median_seconds,omitempty"`

	Load *loadResult `json:"load,omitempty"`

	// Shared is Keel's engine.Shared at the end of the phase.
	Shared *engine.SharedStats `json:"shared,omitempty"`
	Error  string              `json:"error,omitempty"`
}

// memory is the process's memory at one moment, after a GC that returned
// freed pages to the kernel (debug.FreeOSMemory), so two kinds compare
// live memory, not how far each one's heap happened to grow.
type memory struct {
	RSSBytes      uint64 `json:"rss_bytes"`
	HWMBytes      uint64 `json:"hwm_bytes"`
	GoHeapInuse   uint64 `json:"go_heap_inuse_bytes"`
	GoStackInuse  uint64 `json:"go_stack_inuse_bytes"`
	GoSys         uint64 `json:"go_sys_bytes"`
	Goroutines    int    `json:"goroutines"`
	NonGoRSSBytes int64  `json:"rss_minus_go_sys_bytes"`
}

// disk is allocated bytes (st_blocks*512, logcompact.AllocatedBytes).
type disk struct {
	RaftBytes int64 `json:"raft_bytes"`
	SMBytes   int64 `json:"sm_bytes"`
}

func (d *disk) total() int64 {
	if d == nil {
		return 0
	}
	return d.RaftBytes + d.SMBytes
}

// loadResult is phaseLoad's figures.
type loadResult struct {
	Seconds      float64 `json:"seconds"`
	Writes       int64   `json:"writes"`
	WritesPerSec float64 `json:"writes_per_sec"`
	Errors       int64   `json:"errors"`
	// ErrorKinds counts failed writes by error text (at most maxErrorKinds
	// kinds; the rest count as "other").
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	// RSSPeakBytes is the largest VmRSS sampled every 100 ms while
	// writing; HWMBytes is the kernel's peak for the whole process.
	RSSPeakBytes uint64 `json:"rss_peak_bytes"`
	HWMBytes     uint64 `json:"hwm_bytes"`
	// Keel's memtable counters, sampled with RSS (zero for the baseline).
	MemTableBytesPeak     int64  `json:"memtable_bytes_peak,omitempty"`
	MemTableAllocatedPeak uint64 `json:"memtable_allocated_peak,omitempty"`
	MemTableBudget        int64  `json:"memtable_budget,omitempty"`
	BudgetFlushes         uint64 `json:"budget_flushes,omitempty"`
	Samples               int    `json:"samples"`
	// AtPeak is the Go heap at the sample with the largest RSS.
	AtPeak *goMem `json:"at_peak,omitempty"`
	// AllocBytes is what the process allocated on the Go heap during the
	// window and GCCycles the collections that ended in it: with no GC in
	// the window, all of it that was written is still resident.
	AllocBytes uint64 `json:"alloc_bytes"`
	GCCycles   uint64 `json:"gc_cycles"`
}

// maxErrorKinds bounds loadResult.ErrorKinds.
const maxErrorKinds = 8

// runChild runs one phase and prints its result as one JSON line on
// stdout. An error is reported in the line too, with what was measured.
func runChild(a childArgs) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.Limit)
	defer cancel()
	res := childResult{Phase: a.Phase, Kind: a.Kind, Shards: a.Shards, RTTMillis: a.RTTMillis}
	// The limit is the process's, as keeld sets it; GOMEMLIMIT wins, as
	// in keeld.
	if a.GoMemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(a.GoMemoryLimit << 20)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		res.GoMemoryLimitMiB = l >> 20
	}
	var err error
	switch a.Phase {
	case phaseSteady:
		err = steady(ctx, a, &res)
	case phaseRestart:
		err = restart(ctx, a, &res)
	case phaseLoad:
		err = load(ctx, a, &res)
	default:
		err = fmt.Errorf("unknown phase %q", a.Phase)
	}
	if err != nil {
		res.Error = err.Error()
	}
	b, merr := json.Marshal(res)
	if merr != nil {
		return merr
	}
	fmt.Println(string(b))
	return err
}

// startAll opens a node and starts every shard.
func startAll(a childArgs, fresh bool) (*node, float64, error) {
	t0 := time.Now()
	n, err := openNode(a.Kind, a.Dir, a.Addr, a.RTTMillis)
	if err != nil {
		return nil, 0, err
	}
	for s := 1; s <= a.Shards; s++ {
		if err := n.start(uint64(s), fresh); err != nil {
			_ = n.close()
			return nil, 0, err
		}
	}
	return n, time.Since(t0).Seconds(), nil
}

// eachShard runs f for every shard on a.Workers goroutines and returns the
// first error.
func eachShard(ctx context.Context, a childArgs, f func(ctx context.Context, shard uint64) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := atomic.Int64{}
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range min(a.Workers, a.Shards) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				s := next.Add(1)
				if s > int64(a.Shards) || ctx.Err() != nil {
					return
				}
				if err := f(ctx, uint64(s)); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func measureMemory() (*memory, error) {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, hwm, err := selfMem()
	if err != nil {
		return nil, err
	}
	return &memory{RSSBytes: rss, HWMBytes: hwm, GoHeapInuse: ms.HeapInuse, GoStackInuse: ms.StackInuse,
		GoSys: ms.Sys, Goroutines: runtime.NumGoroutine(), NonGoRSSBytes: int64(rss) - int64(ms.Sys)}, nil
}

// startProfiles writes a heap profile now and starts a CPU profile that
// the returned function stops, into a.Profile (nothing when it is empty).
func startProfiles(a childArgs) (func(), error) {
	if a.Profile == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(a.Profile, 0o755); err != nil {
		return nil, err
	}
	base := filepath.Join(a.Profile, fmt.Sprintf("%s-%d", a.Kind, a.Shards))
	hf, err := os.Create(base + "-steady.heap.pprof")
	if err != nil {
		return nil, err
	}
	err = pprof.Lookup("heap").WriteTo(hf, 0)
	if cerr := hf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return startCPUProfile(a, "idle")
}

// writeHeapProfile writes a heap profile into a.Profile (nothing when it
// is empty), named after the moment it shows.
func writeHeapProfile(a childArgs, what string) error {
	if a.Profile == "" {
		return nil
	}
	if err := os.MkdirAll(a.Profile, 0o755); err != nil {
		return err
	}
	hf, err := os.Create(filepath.Join(a.Profile, fmt.Sprintf("%s-%d-%s.heap.pprof", a.Kind, a.Shards, what)))
	if err != nil {
		return err
	}
	err = pprof.Lookup("heap").WriteTo(hf, 0)
	if cerr := hf.Close(); err == nil {
		err = cerr
	}
	return err
}

// startCPUProfile starts a CPU profile into a.Profile named after what it
// covers; the returned function stops it. Without a.Profile it does nothing.
func startCPUProfile(a childArgs, what string) (func(), error) {
	if a.Profile == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(a.Profile, 0o755); err != nil {
		return nil, err
	}
	cf, err := os.Create(filepath.Join(a.Profile, fmt.Sprintf("%s-%d-%s.cpu.pprof", a.Kind, a.Shards, what)))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(cf); err != nil {
		_ = cf.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = cf.Close() }, nil
}

func measureDisk(dir string) (*disk, error) {
	r, err := logcompact.AllocatedBytes(raftDir(dir))
	if err != nil {
		return nil, err
	}
	s, err := logcompact.AllocatedBytes(smDir(dir))
	if err != nil {
		return nil, err
	}
	return &disk{RaftBytes: r, SMBytes: s}, nil
}

func sharedStats(n *node) *engine.SharedStats {
	sh := n.shared()
	if sh == nil {
		return nil
	}
	st := sh.Stats()
	return &st
}

func steady(ctx context.Context, a childArgs, res *childResult) error {
	n, secs, err := startAll(a, true)
	if err != nil {
		return err
	}
	defer func() { _ = n.close() }()
	res.StartSeconds = secs
	t0 := time.Now()
	err = eachShard(ctx, a, func(ctx context.Context, s uint64) error {
		for i := range keysPerShard {
			if err := n.put(ctx, s, key(s, i), value(s, i)); err != nil {
				return fmt.Errorf("shard %d key %d: %w", s, i, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	res.PopulateSeconds = time.Since(t0).Seconds()
	res.PayloadBytes = int64(a.Shards) * keysPerShard * (keyBytes + valueBytes)

	// Dragonboat quiesces a shard after 10 election timeouts without
	// traffic (quiesce.go: threshold = electionTick*10; 100 ticks of
	// RTTMillisecond); Settle is longer than that (main.go derives it
	// from -rtt-ms).
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(a.Settle):
	}
	if res.Memory, err = measureMemory(); err != nil {
		return err
	}
	if res.FDs, res.FDKinds, err = openFiles(a.Dir); err != nil {
		return err
	}
	if res.Disk, err = measureDisk(a.Dir); err != nil {
		return err
	}
	stopProfile, err := startProfiles(a)
	if err != nil {
		return err
	}
	c0, err := selfCPU()
	if err != nil {
		return err
	}
	w0 := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(a.Idle):
	}
	c1, err := selfCPU()
	if err != nil {
		return err
	}
	stopProfile()
	res.IdleSeconds = time.Since(w0).Seconds()
	res.IdleCPUSeconds = c1 - c0
	res.IdleCPUPercent = 100 * res.IdleCPUSeconds / res.IdleSeconds
	res.Shared = sharedStats(n)
	if err := n.close(); err != nil {
		return err
	}
	res.DiskClosed, err = measureDisk(a.Dir)
	return err
}

func restart(ctx context.Context, a childArgs, res *childResult) error {
	for run := range a.RestartRuns {
		stopProfile := func() {}
		if run == 0 && a.Profile != "" {
			var err error
			if stopProfile, err = startCPUProfile(a, "restart"); err != nil {
				return err
			}
		}
		t0 := time.Now()
		n, _, err := startAll(a, false)
		if err != nil {
			return err
		}
		// Key 0 of every shard, with its value: a Keel shard serving an
		// empty state would not count as restarted.
		err = eachShard(ctx, a, func(ctx context.Context, s uint64) error {
			return n.read(ctx, s, key(s, 0), value(s, 0))
		})
		secs := time.Since(t0).Seconds()
		stopProfile()
		if err != nil {
			_ = n.close()
			return err
		}
		res.RestartSeconds = append(res.RestartSeconds, secs)
		if run == a.RestartRuns-1 {
			if res.Memory, err = measureMemory(); err != nil {
				_ = n.close()
				return err
			}
			if res.FDs, res.FDKinds, err = openFiles(a.Dir); err != nil {
				_ = n.close()
				return err
			}
			res.Shared = sharedStats(n)
		}
		if err := n.close(); err != nil {
			return err
		}
	}
	res.RestartMedian = median(res.RestartSeconds)
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func load(ctx context.Context, a childArgs, res *childResult) error {
	n, secs, err := startAll(a, true)
	if err != nil {
		return err
	}
	defer func() { _ = n.close() }()
	res.StartSeconds = secs
	// One write per shard first, so every shard has its leader before the
	// timed load starts.
	t0 := time.Now()
	if err := eachShard(ctx, a, func(ctx context.Context, s uint64) error {
		return n.put(ctx, s, key(s, 0), value(s, 0))
	}); err != nil {
		return err
	}
	res.PopulateSeconds = time.Since(t0).Seconds()

	lr := &loadResult{}
	res.Load = lr
	sh := n.shared()
	if sh != nil {
		lr.MemTableBudget = sh.Stats().MemTableBudget
	}
	sample := func() {
		if rss, _, err := selfMem(); err == nil && rss > lr.RSSPeakBytes {
			lr.RSSPeakBytes = rss
			lr.AtPeak = readGoMem()
		}
		if sh != nil {
			// Stats asks every engine's Pebble for its metrics: 14 ms of
			// CPU at 1,000 shards, 8.5% of the process's CPU in the load
			// window when it ran every 100 ms. Once a second is enough
			// for the arenas, which grow by whole memtables; the bytes
			// the budget counts are one atomic load (MemTableBytes; an
			// older tree built for an A/B lacks it and pays Stats).
			cheap, ok := any(sh).(interface{ MemTableBytes() int64 })
			if !ok || lr.Samples%10 == 0 {
				st := sh.Stats()
				lr.MemTableBytesPeak = max(lr.MemTableBytesPeak, st.MemTableBytes)
				lr.MemTableAllocatedPeak = max(lr.MemTableAllocatedPeak, st.MemTableAllocated)
			} else {
				lr.MemTableBytesPeak = max(lr.MemTableBytesPeak, cheap.MemTableBytes())
			}
		}
		lr.Samples++
	}
	lctx, lcancel := context.WithTimeout(ctx, a.Load)
	defer lcancel()
	sdone := make(chan struct{})
	go func() {
		defer close(sdone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			sample()
			select {
			case <-lctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	// One writer per shard: every shard is written at once, as the load
	// the memtable budget exists for.
	var writes, errs atomic.Int64
	var kindsMu sync.Mutex // guards lr.ErrorKinds while the writers run
	lr.ErrorKinds = map[string]int64{}
	countErr := func(err error) {
		errs.Add(1)
		msg := err.Error()
		kindsMu.Lock()
		defer kindsMu.Unlock()
		if _, ok := lr.ErrorKinds[msg]; !ok && len(lr.ErrorKinds) >= maxErrorKinds {
			msg = "other"
		}
		lr.ErrorKinds[msg]++
	}
	var wg sync.WaitGroup
	stopCPU, err := startCPUProfile(a, "load")
	if err != nil {
		return err
	}
	a0 := readAllocs()
	w0 := time.Now()
	for s := 1; s <= a.Shards; s++ {
		wg.Add(1)
		go func(s uint64) {
			defer wg.Done()
			for i := 1; lctx.Err() == nil; i++ {
				// Each write gets its whole attempt, past the window's end
				// if need be: a write started just before the end would
				// otherwise fail at once (Dragonboat refuses deadlines
				// under one tick) and count as an error.
				wctx, cancel := context.WithTimeout(ctx, attempt)
				cmdErr := n.put(wctx, s, key(s, i), value(s, i))
				cancel()
				if cmdErr == nil {
					writes.Add(1)
				} else {
					countErr(cmdErr)
				}
			}
		}(uint64(s))
	}
	wg.Wait()
	lr.Seconds = time.Since(w0).Seconds()
	stopCPU()
	if err := writeHeapProfile(a, "load"); err != nil {
		return err
	}
	<-sdone
	sample()
	lr.Writes, lr.Errors = writes.Load(), errs.Load()
	lr.WritesPerSec = float64(lr.Writes) / lr.Seconds
	a1 := readAllocs()
	lr.AllocBytes, lr.GCCycles = a1.bytes-a0.bytes, a1.cycles-a0.cycles
	if _, hwm, err := selfMem(); err == nil {
		lr.HWMBytes = hwm
	}
	res.Shared = sharedStats(n)
	if res.Shared != nil {
		lr.BudgetFlushes = res.Shared.BudgetFlushes
	}
	return nil
}
