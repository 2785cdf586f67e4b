package sm

// Disk-fault tests: Pebble's vfs/errorfs under Keel's engine fails writes,
// syncs or renames during apply, snapshot capture (checkpoint) and install.
// Each case runs in a child process (this test binary re-executed), because
// Pebble ends the process through the logger's Fatalf (exit 70) on some
// MANIFEST errors. The child prints "SYNCED n" after every Sync that
// returned nil; the parent then reopens the directory on the real disk and
// checks that the replica recovered to a consistent state — exactly the
// effect of entries 1..applied — with applied at or past every SYNCED n.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/keel-db/keel/engine"
	"github.com/lni/dragonboat/v4/statemachine"
)

const (
	dfEnvCase = "KEEL_DISKFAULT_CASE" // scenario:kind:skip, set in the child
	dfEnvDir  = "KEEL_DISKFAULT_DIR"
	// Exit codes of the child.
	dfExitError = 3  // a method returned the injected error: the replica halts
	dfExitFatal = 70 // Pebble's Fatalf through Keel's logger
)

// dfKey and dfValue define entry i's effect (a put), so the state after
// entries 1..n is known; gen tells source and target images apart.
func dfKey(i uint64) string { return fmt.Sprintf("k%03d", i%97) }

func dfCmd(t testing.TB, gen string, i uint64) []byte {
	return put(t, dfKey(i), fmt.Sprintf("%s%d", gen, i))
}

func dfEntries(t testing.TB, gen string, first, n uint64) []statemachine.Entry {
	es := make([]statemachine.Entry, n)
	for j := range es {
		i := first + uint64(j)
		es[j] = statemachine.Entry{Index: i, Cmd: dfCmd(t, gen, i)}
	}
	return es
}

// dfInjector fails every operation of the chosen kinds once armed and
// after skip of them have passed, and counts the failures.
type dfInjector struct {
	kinds    map[errorfs.OpKind]bool
	armed    atomic.Bool
	skip     atomic.Int64
	injected atomic.Int64
}

func (d *dfInjector) String() string { return "keel disk fault" }

func (d *dfInjector) MaybeError(op errorfs.Op) error {
	if !d.armed.Load() || !d.kinds[op.Kind] {
		return nil
	}
	if d.skip.Add(-1) >= 0 {
		return nil
	}
	if d.injected.Add(1) <= 3 {
		// Printed now: Pebble may end the process before the summary.
		fmt.Printf("FAULT op %d on %s\n", op.Kind, op.Path)
	}
	return fmt.Errorf("%w: op %d on %s", errorfs.ErrInjected, op.Kind, op.Path)
}

var dfKinds = map[string][]errorfs.OpKind{
	"write":  {errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpCreate},
	"sync":   {errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo},
	"rename": {errorfs.OpRename, errorfs.OpLink},
}

// TestDiskFaultHelperProcess is the child; it does nothing in a normal run.
func TestDiskFaultHelperProcess(t *testing.T) {
	spec := os.Getenv(dfEnvCase)
	if spec == "" {
		t.Skip("helper process for TestDiskFaults")
	}
	parts := strings.Split(spec, ":")
	skip, _ := strconv.Atoi(parts[2])
	inj := &dfInjector{kinds: map[errorfs.OpKind]bool{}}
	for _, k := range dfKinds[parts[1]] {
		inj.kinds[k] = true
	}
	inj.skip.Store(int64(skip))
	code := dfChild(t, parts[0], os.Getenv(dfEnvDir), inj)
	fmt.Printf("INJECTED %d\n", inj.injected.Load())
	os.Exit(code)
}

// dfChild runs one scenario and returns the exit code.
func dfChild(t *testing.T, scenario, dir string, inj *dfInjector) int {
	fs := errorfs.Wrap(vfs.Default, inj)
	halt := func(what string, err error) int {
		fmt.Printf("ERROR %s: %v\n", what, err)
		return dfExitError
	}
	s := New(Config{Dir: filepath.Join(dir, "target"), ShardID: 1, ReplicaID: 1, Engine: engine.Options{FS: fs}})
	if _, err := s.Open(make(chan struct{})); err != nil {
		return halt("open", err)
	}
	gen := "a"
	if scenario == "install" {
		gen = "t"
	}
	next := uint64(1)
	apply := func(n uint64) error {
		if _, err := s.Update(dfEntries(t, gen, next, n)); err != nil {
			return err
		}
		next += n
		return nil
	}
	syncNow := func() error {
		if err := s.Sync(); err != nil {
			return err
		}
		fmt.Printf("SYNCED %d\n", s.AppliedIndex())
		return nil
	}
	// Setup, no faults: 200 entries, durable.
	for i := 0; i < 20; i++ {
		if err := apply(10); err != nil {
			return halt("setup update", err)
		}
	}
	if err := syncNow(); err != nil {
		return halt("setup sync", err)
	}
	switch scenario {
	case "apply":
		inj.armed.Store(true)
		for i := 0; i < 300; i++ {
			if err := apply(10); err != nil {
				return halt("update", err)
			}
			if i%5 == 4 {
				if err := syncNow(); err != nil {
					return halt("sync", err)
				}
			}
		}
	case "checkpoint":
		inj.armed.Store(true)
		ctx, err := s.PrepareSnapshot()
		if err != nil {
			return halt("prepare", err)
		}
		// Applies go on while SaveSnapshot runs, as under Dragonboat.
		if err := apply(10); err != nil {
			return halt("update during save", err)
		}
		var buf bytes.Buffer
		if err := s.SaveSnapshot(ctx, &buf, make(chan struct{})); err != nil {
			return halt("save", err)
		}
		if err := syncNow(); err != nil {
			return halt("sync", err)
		}
	case "install":
		// The stream comes from a healthy source replica at index 500.
		src := New(Config{Dir: filepath.Join(dir, "source"), ShardID: 1, ReplicaID: 2})
		if _, err := src.Open(make(chan struct{})); err != nil {
			return halt("source open", err)
		}
		if _, err := src.Update(dfEntries(t, "a", 1, 500)); err != nil {
			return halt("source update", err)
		}
		ctx, err := src.PrepareSnapshot()
		if err != nil {
			return halt("source prepare", err)
		}
		var buf bytes.Buffer
		if err := src.SaveSnapshot(ctx, &buf, make(chan struct{})); err != nil {
			return halt("source save", err)
		}
		_ = src.Close()
		inj.armed.Store(true)
		if err := s.RecoverFromSnapshot(&buf, make(chan struct{})); err != nil {
			return halt("install", err)
		}
		fmt.Printf("INSTALLED %d\n", s.AppliedIndex())
		if err := syncNow(); err != nil {
			return halt("sync", err)
		}
	}
	if err := s.Close(); err != nil {
		return halt("close", err)
	}
	return 0
}

// dfResult is what the parent learned from one child.
type dfResult struct {
	exit      int
	synced    uint64
	installed uint64
	injected  int64
	errLine   string // the child's "ERROR what: err" line
	output    string
}

func runDiskFaultChild(t *testing.T, spec, dir string) dfResult {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestDiskFaultHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), dfEnvCase+"="+spec, dfEnvDir+"="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res dfResult
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.exit = ee.ExitCode()
	default:
		t.Fatalf("%s: running child: %v", spec, err)
	}
	res.output = stdout.String() + stderr.String()
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var n uint64
		switch f := strings.Fields(sc.Text()); {
		case len(f) == 2 && f[0] == "SYNCED":
			n, _ = strconv.ParseUint(f[1], 10, 64)
			res.synced = max(res.synced, n)
		case len(f) == 2 && f[0] == "INSTALLED":
			res.installed, _ = strconv.ParseUint(f[1], 10, 64)
		case len(f) == 2 && f[0] == "INJECTED":
			res.injected, _ = strconv.ParseInt(f[1], 10, 64)
		case len(f) > 0 && f[0] == "FAULT":
			res.injected = max(res.injected, 1)
		case len(f) > 0 && f[0] == "ERROR":
			res.errLine = sc.Text()
		}
	}
	return res
}

// dfExpectHash opens a fresh state machine holding gen's entries 1..n and
// returns its state hash.
func dfExpectHash(t *testing.T, gen string, n uint64) engine.StateHash {
	t.Helper()
	s, _ := openSM(t, t.TempDir(), 1, 1)
	for first := uint64(1); first <= n; first += 100 {
		update(t, s, dfEntries(t, gen, first, min(100, n-first+1)))
	}
	r, err := s.Lookup(HashQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return r.(engine.StateHash)
}

func TestDiskFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	type tc struct {
		scenario, kind string
		skips          []int
	}
	cases := []tc{
		{"apply", "write", []int{0, 3, 40}},
		{"apply", "sync", []int{0, 2, 10}},
		{"checkpoint", "write", []int{0, 2}},
		{"checkpoint", "sync", []int{0, 1}},
		{"checkpoint", "rename", []int{0}},
		{"install", "write", []int{0, 3, 10}},
		{"install", "sync", []int{0, 2}},
		{"install", "rename", []int{0, 1}},
	}
	for _, c := range cases {
		for _, skip := range c.skips {
			spec := fmt.Sprintf("%s:%s:%d", c.scenario, c.kind, skip)
			t.Run(strings.ReplaceAll(spec, ":", "_"), func(t *testing.T) {
				dir := t.TempDir()
				res := runDiskFaultChild(t, spec, dir)
				t.Logf("exit %d, injected %d, synced %d, installed %d %s", res.exit, res.injected, res.synced, res.installed, res.errLine)
				if res.exit == dfExitFatal {
					t.Logf("pebble fatal: %s", lastLine(res.output, "fatal"))
				}
				switch res.exit {
				case 0, dfExitError, dfExitFatal:
				default:
					t.Fatalf("child exit %d (a panic or a harness failure):\n%s", res.exit, res.output)
				}
				if res.injected == 0 {
					t.Fatalf("no fault was injected: the case tests nothing\n%s", res.output)
				}
				// With writes or syncs failing for good, apply must stop with
				// an error, never keep acknowledging Syncs.
				if c.scenario == "apply" && res.exit == 0 {
					t.Fatalf("every %s fails, yet 3000 entries applied and synced without an error:\n%s", c.kind, res.output)
				}
				// Recovery on the real disk.
				s, applied := openSM(t, filepath.Join(dir, "target"), 1, 1)
				if applied < res.synced {
					t.Fatalf("reopened at applied index %d, below %d acknowledged by Sync", applied, res.synced)
				}
				gen := "a"
				if c.scenario == "install" && applied != 500 {
					gen = "t" // the install did not take: the old image
				}
				if c.scenario == "install" && res.installed != 0 && applied != 500 {
					t.Fatalf("install reported success at %d but the replica reopened at %d", res.installed, applied)
				}
				r, err := s.Lookup(HashQuery{})
				if err != nil {
					t.Fatalf("hash after recovery: %v", err)
				}
				got, want := r.(engine.StateHash), dfExpectHash(t, gen, applied)
				if got.Hash != want.Hash || got.Keys != want.Keys {
					t.Fatalf("recovered state at applied %d is not entries 1..%d of %q: %+v, want %+v", applied, applied, gen, got, want)
				}
				left, err := engine.NewRoot(filepath.Join(dir, "target"), nil).Leftovers()
				if err != nil || len(left) > 0 {
					t.Fatalf("leftovers after reopen: %v %v", left, err)
				}
			})
		}
	}
}

// lastLine returns the last line of out containing substr.
func lastLine(out, substr string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], substr) {
			return lines[i]
		}
	}
	return ""
}
