package catchup

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/statemachine"
	lnivfs "github.com/lni/vfs"
)

// counters observe one replica's snapshot calls across restarts.
type counters struct {
	saves, saveBytes       atomic.Int64
	recovers, recoverBytes atomic.Int64
	recoverFailed          atomic.Int64
	// mu guards the first-call timestamps below.
	mu                          sync.Mutex
	firstSave, firstSaveEnd     time.Time
	firstRecover, firstRecovEnd time.Time
}

func (c *counters) stamp(t *time.Time) {
	c.mu.Lock()
	if t.IsZero() {
		*t = time.Now()
	}
	c.mu.Unlock()
}

// observed wraps a state machine and counts its snapshot calls.
type observed struct {
	statemachine.IOnDiskStateMachine
	c *counters
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n.Add(int64(n))
	return n, err
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}

func (o observed) SaveSnapshot(ctx interface{}, w io.Writer, done <-chan struct{}) error {
	o.c.saves.Add(1)
	o.c.stamp(&o.c.firstSave)
	err := o.IOnDiskStateMachine.SaveSnapshot(ctx, countingWriter{w, &o.c.saveBytes}, done)
	o.c.stamp(&o.c.firstSaveEnd)
	return err
}

func (o observed) RecoverFromSnapshot(r io.Reader, done <-chan struct{}) error {
	o.c.recovers.Add(1)
	o.c.stamp(&o.c.firstRecover)
	err := o.IOnDiskStateMachine.RecoverFromSnapshot(countingReader{r, &o.c.recoverBytes}, done)
	if err != nil {
		o.c.recoverFailed.Add(1)
	}
	o.c.stamp(&o.c.firstRecovEnd)
	return err
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// diskSeqWrite writes and fdatasyncs a file of size bytes in dir and
// returns MB/s (10^6 bytes), fsync inside the timing.
func diskSeqWrite(b *testing.B, dir string, size int) float64 {
	b.Helper()
	buf := make([]byte, 1<<20)
	_, _ = rand.Read(buf)
	p := filepath.Join(dir, "disk-probe")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = os.Remove(p) }()
	start := time.Now()
	for n := 0; n < size; n += len(buf) {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	_ = f.Close()
	return float64(size) / 1e6 / el.Seconds()
}

// fillValue fills v with random bytes, or, with
// KEEL_CATCHUP_VALUES=text, with text that compresses about 3:1 (random
// lowercase words), to see what stream compression gains over Pebble's
// own block compression.
func fillValue(v []byte) {
	_, _ = rand.Read(v)
	if os.Getenv("KEEL_CATCHUP_VALUES") != "text" {
		return
	}
	for i := range v {
		if v[i]%6 == 0 {
			v[i] = ' '
		} else {
			v[i] = 'a' + v[i]%8
		}
	}
}

// load writes total bytes of random values through cl: txns of perTxn puts
// of valueSize bytes, from workers goroutines.
func load(b *testing.B, cl *client.Client, total, valueSize, perTxn, workers int) {
	b.Helper()
	txns := (total + valueSize*perTxn - 1) / (valueSize * perTxn)
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				t := int(next.Add(1) - 1)
				if t >= txns {
					return
				}
				ops := make([]client.TxnOp, perTxn)
				for i := range ops {
					v := make([]byte, valueSize)
					fillValue(v)
					ops[i] = client.PutOp([]byte(fmt.Sprintf("k%06d-%03d", t, i)), v)
				}
				// A retried txn of puts is idempotent.
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				err := testcluster.Retry(ctx, func(ctx context.Context) error {
					_, err := cl.Txn(ctx, nil, ops)
					return err
				})
				cancel()
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		b.Fatalf("load: %v", err)
	default:
	}
}

// BenchmarkCatchUp: one follower catch-up by snapshot per iteration (run
// it with -benchtime 1x; each iteration builds a fresh cluster).
// KEEL_CATCHUP_MB (default 200) is the data written behind the follower.
//
// Each iteration runs two catch-ups, one with the follower staging the
// image while the stream arrives (host/snaptee.go, the default) and one
// without (testcluster.Options.NoStaging: the install reads Dragonboat's
// staged copy, as before), in alternating order, KEEL_CATCHUP_ROUNDS
// (default 1) times, so the two compare within one run.
func BenchmarkCatchUp(b *testing.B) {
	mb := envInt(b, "KEEL_CATCHUP_MB", 200)
	rounds := envInt(b, "KEEL_CATCHUP_ROUNDS", 1)
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			modes := []bool{true, false}
			if r%2 == 1 {
				modes = []bool{false, true}
			}
			for _, staging := range modes {
				b.Run(fmt.Sprintf("staging=%v", staging), func(b *testing.B) {
					for j := 0; j < b.N; j++ {
						catchUp(b, mb, staging)
					}
				})
			}
		}
	}
}

// procIO reads this process's write_bytes and cancelled_write_bytes from
// /proc/self/io: bytes it sent (or will send) to the disk, and bytes it
// dirtied that were dropped before writeback (a file truncated). Zero
// where /proc is missing.
func procIO() (written, cancelled int64) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "write_bytes":
			written = n
		case "cancelled_write_bytes":
			cancelled = n
		}
	}
	return written, cancelled
}

func catchUp(b *testing.B, mb int, staging bool) {
	b.StopTimer()
	var mu sync.Mutex
	obs := map[uint64]*counters{}
	get := func(id uint64) *counters {
		mu.Lock()
		defer mu.Unlock()
		if obs[id] == nil {
			obs[id] = &counters{}
		}
		return obs[id]
	}
	// Every NodeHost runs behind Keel's transport (host.PeerGuard), as in
	// keeld: it holds back a replica's Replicate messages while a snapshot
	// stream for it is still being received (host/snapstream.go). And on
	// keeld's filesystem for Dragonboat (host.DiskFullFS), which drops the
	// bytes of a staging file the transport stages itself
	// (host/stagingfs.go); KEEL_CATCHUP_FS=plain gives Dragonboat its
	// default filesystem instead.
	guards := map[string]*host.PeerGuard{}
	c := testcluster.New(b, 3, testcluster.Options{
		RTTMillisecond: uint64(envInt(b, "KEEL_CATCHUP_RTT_MS", int(host.RTTMillisecond))),
		NodeHost: func(nhc *config.NodeHostConfig) {
			g := host.NewPeerGuard()
			mu.Lock()
			guards[nhc.RaftAddress] = g
			mu.Unlock()
			nhc.Expert.TransportFactory = g
			if os.Getenv("KEEL_CATCHUP_FS") != "plain" {
				nhc.Expert.FS = host.DiskFullFS(lnivfs.Default, fullDisk{b})
			}
		},
		Shard: func(sc *config.Config) {
			sc.CompactionOverhead = 0
			// KEEL_CATCHUP_COMPRESSION=none streams without Dragonboat's
			// Snappy layer (Keel's default is host.ShardConfig's).
			if os.Getenv("KEEL_CATCHUP_COMPRESSION") == "none" {
				sc.SnapshotCompressionType = config.NoCompression
			}
		},
		NoStaging: !staging,
		WrapStateMachine: func(id uint64, s statemachine.IOnDiskStateMachine) statemachine.IOnDiskStateMachine {
			return observed{s, get(id)}
		},
	})
	disk := diskSeqWrite(b, c.Dir, 256<<20)
	leader := c.Leader()
	var follower uint64
	for id := range c.Nodes {
		if id != leader.ReplicaID {
			follower = id
			break
		}
	}
	c.Stop(follower)
	loadStart := time.Now()
	load(b, leader.Client, mb<<20, 16<<10, 16, 8)
	b.Logf("loaded %d MiB in %v", mb, time.Since(loadStart))
	for _, n := range c.Running() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, err := n.NH.SyncRequestSnapshot(ctx, c.ShardID, dragonboat.SnapshotOption{OverrideCompactionOverhead: true, CompactionOverhead: 0})
		cancel()
		if err != nil && !errors.Is(err, dragonboat.ErrRejected) {
			b.Fatalf("snapshot on replica %d: %v", n.ReplicaID, err)
		}
	}
	leader = c.Leader()
	lsm := leader.Factory.StateMachine(c.ShardID, leader.ReplicaID)
	target := lsm.AppliedIndex()
	ls, fs := get(leader.ReplicaID), get(follower)
	savesBefore, saveBytesBefore := ls.saves.Load(), ls.saveBytes.Load()

	// KEEL_CATCHUP_CPUPROFILE=FILE profiles the catch-up only (not the
	// load), every replica in this process.
	defer recordTo(b, "KEEL_CATCHUP_CPUPROFILE", pprof.StartCPUProfile, pprof.StopCPUProfile)()
	// KEEL_CATCHUP_TRACE=FILE writes an execution trace of the catch-up
	// (go tool trace -pprof=sync|syscall|sched FILE: where the stream's
	// goroutines wait).
	defer recordTo(b, "KEEL_CATCHUP_TRACE", trace.Start, trace.Stop)()
	// KEEL_CATCHUP_LOG=FILE logs Dragonboat at debug level into FILE from
	// the restart on (not during the load).
	if p := os.Getenv("KEEL_CATCHUP_LOG"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		host.UseSlog(slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})), slog.LevelDebug)
		defer func() {
			host.UseSlog(slog.New(slog.NewTextHandler(os.Stderr, nil)), slog.LevelWarn)
			_ = f.Close()
		}()
	}
	b.StartTimer()
	w0, c0 := procIO()
	start := time.Now()
	fn := c.Start(follower)
	started := time.Since(start)
	c.WaitFor(120*time.Second, "the follower to reach the leader's applied index", func() bool {
		s := fn.Factory.StateMachine(c.ShardID, follower)
		return s != nil && s.AppliedIndex() >= target
	})
	el := time.Since(start)
	b.StopTimer()
	w1, c1 := procIO()

	// Let a second stream, if one is coming, show itself before counting.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	saves := ls.saves.Load() - savesBefore
	// The image is what the leader's SaveSnapshot wrote: with staging the
	// follower's RecoverFromSnapshot reads only the stream's header.
	image := ls.saveBytes.Load() - saveBytesBefore
	rate := float64(image) / 1e6 / el.Seconds()
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Sub(start).Round(time.Millisecond).String()
	}
	ls.mu.Lock()
	fs.mu.Lock()
	b.Logf("restart→caught up %v: NodeHost start %v, leader SaveSnapshot %s→%s, follower RecoverFromSnapshot %s→%s",
		el.Round(time.Millisecond), started.Round(time.Millisecond),
		at(ls.firstSave), at(ls.firstSaveEnd), at(fs.firstRecover), at(fs.firstRecovEnd))
	fs.mu.Unlock()
	ls.mu.Unlock()
	b.Logf("image %.1f MB, %.1f MB/s, disk %.1f MB/s (%.2f), leader SaveSnapshot %d (%.1f MB written), follower RecoverFromSnapshot %d (%d failed)",
		float64(image)/1e6, rate, disk, rate/disk, saves, float64(ls.saveBytes.Load()-saveBytesBefore)/1e6,
		fs.recovers.Load(), fs.recoverFailed.Load())
	mu.Lock()
	gs := guards[c.Nodes[follower].Addr].Stats()
	mu.Unlock()
	b.Logf("follower's transport held %d Replicate messages while the stream was in flight; staging file: %.1f MB cut, %.1f MB of it never written, %d streams refused",
		gs.HeldForSnapshot, float64(gs.StagingBytesSkipped)/1e6, float64(gs.StagingBytesNotWritten)/1e6, gs.StagingRefused)
	written, cancelled := w1-w0, c1-c0
	b.Logf("staging %v: the process wrote %.1f MB to the disk during the catch-up (%.1f MB more dirtied and dropped before writeback): %.2f bytes per image byte; follower %+v",
		staging, float64(written-cancelled)/1e6, float64(cancelled)/1e6, float64(written-cancelled)/float64(max(image, 1)),
		fn.Factory.StateMachine(c.ShardID, follower).SnapshotStats())
	b.ReportMetric(float64(written-cancelled)/float64(max(image, 1)), "disk-bytes/image-byte")
	if staged, err := engine.NewRoot(fn.Factory.Config().DataDir(c.ShardID, follower), nil).ListStaged(); err == nil {
		b.Logf("staged images left on the follower right after the catch-up: %d %+v", len(staged), staged)
	}
	b.ReportMetric(el.Seconds(), "s/catchup")
	b.ReportMetric(rate, "MB/s")
	b.ReportMetric(disk, "disk-MB/s")
	b.ReportMetric(rate/disk, "fraction-of-disk")
	b.ReportMetric(float64(saves), "saves/catchup")
	b.ReportMetric(float64(fs.recovers.Load()), "recovers/catchup")
	c.Close()
}

// fullDisk ends the benchmark when Dragonboat finds the disk full.
type fullDisk struct{ b *testing.B }

func (fullDisk) Free(string, string, error) bool { return false }

func (f fullDisk) Fatal(op, path string, err error) {
	f.b.Errorf("disk full: %s %s: %v", op, path, err)
	os.Exit(1)
}

// recordTo starts a recording (a CPU profile, an execution trace) into the
// file the environment variable env names, if it names one, and returns
// what stops it and closes the file.
func recordTo(b *testing.B, env string, start func(io.Writer) error, stop func()) func() {
	p := os.Getenv(env)
	if p == "" {
		return func() {}
	}
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if err := start(f); err != nil {
		b.Fatal(err)
	}
	return func() { stop(); _ = f.Close() }
}
