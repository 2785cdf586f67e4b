package main

// The disk guard keeps a replica out of ENOSPC, from which neither
// Dragonboat's LogDB nor Pebble can continue.
//
//   - Reserve: every diskCheckInterval (and at once after a failed write)
//     the guard statfs-es the data directory. When the free space drops
//     below --disk-reserve the replica turns read-only: PUT, DELETE, POST
//     /txn and POST /admin/export answer 507 (errDiskFull) while reads,
//     /status, snapshots (which let the log be compacted) and membership
//     changes go on. The reserve is the room Raft appends from the leader,
//     Pebble flushes and snapshot bookkeeping use to finish their work.
//   - Ballast (CockroachDB's idea): --disk-ballast bytes are held in
//     <data-dir>/ballast, allocated while space is plentiful and deleted the
//     moment the replica turns read-only or any write fails with ENOSPC. A
//     threshold cannot stop another program from taking the last byte; a
//     ballast gives back room that only keeld could have used.
//   - Leadership: a read-only leader hands leadership to the next voting
//     member (NodeHost.RequestLeaderTransfer), every leaderTransferEvery
//     while it stays leader, rotating through the members so an unreachable
//     or also-full target does not hold it. Peers' disks are not asked
//     about: a full peer that becomes leader hands it on in turn.
//   - Recovery: once free space is back above the reserve plus the ballast
//     plus a margin (diskHysteresis, so it does not flap), the ballast is
//     re-created and writes are accepted again, without a restart.
//   - Last resort: a write that still fails with ENOSPC (no ballast left)
//     ends the process with one line on stderr and exit status 3
//     (exitStorage), as does a storage failure reported through Dragonboat's
//     fatal path; a restart after space is freed loses nothing, as after a
//     crash.

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/snapshot"
	"github.com/lni/dragonboat/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// exitStorage is keeld's exit status when storage fails under it: the disk
// is full beyond the reserve and the ballast, or reports an I/O error.
const exitStorage = 3

// exitInternal is keeld's exit status when Dragonboat or Pebble reports a
// broken internal invariant (EX_SOFTWARE, as Keel's Pebble logger uses).
const exitInternal = 70

const (
	// diskCheckInterval is how often the guard reads the free space.
	diskCheckInterval = time.Second
	// leaderTransferEvery spaces a full leader's transfer requests: one
	// transfer takes an election timeout or so to complete.
	leaderTransferEvery = 2 * time.Second
	ballastName         = "ballast"
)

// Defaults; see newFlagSet.
var (
	defaultDiskReserve = diskSize{bytes: 256 << 20}
	defaultDiskBallast = diskSize{bytes: 64 << 20}
)

// diskGuard watches the data directory's filesystem; see the comment at the
// top of this file. It is safe for concurrent use: its Free and Fatal
// methods run on whichever Dragonboat or Pebble goroutine hit ENOSPC.
type diskGuard struct {
	dir         string
	ballastPath string
	// reserve, ballastSize and hysteresis are in bytes, resolved from the
	// flags against the filesystem's size at start.
	reserve, ballastSize, hysteresis uint64
	log                              *slog.Logger
	stderr                           io.Writer
	exit                             func(int)
	kick                             chan struct{}
	stop                             chan struct{}
	done                             chan struct{}

	full      atomic.Bool
	avail     atomic.Uint64
	total     atomic.Uint64
	refused   atomic.Uint64
	transfers atomic.Uint64
	enospc    atomic.Uint64

	// mu guards the ballast file, ballastHeld and the full/ok transitions,
	// which the monitor and the ENOSPC handler both make. It is never held
	// across a NodeHost call: the handler runs on Dragonboat's goroutines.
	mu          sync.Mutex
	ballastHeld bool

	// nh is set by attach before the monitor starts; lastTarget (by
	// shard) and lastTransfer belong to the monitor goroutine.
	nh           *dragonboat.NodeHost
	lastTarget   map[uint64]uint64
	lastTransfer time.Time
	started      atomic.Bool

	fatalOnce sync.Once
}

// newDiskGuard reads the filesystem, sizes the reserve and the ballast and
// takes the first reading, so the replica starts in the right state.
func newDiskGuard(cfg config, logger *slog.Logger, stderr io.Writer) (*diskGuard, error) {
	du, err := vfs.Default.GetDiskUsage(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("read free space of %s: %w", cfg.DataDir, err)
	}
	g := &diskGuard{
		dir:         cfg.DataDir,
		ballastPath: filepath.Join(cfg.DataDir, ballastName),
		reserve:     cfg.DiskReserve.of(du.TotalBytes),
		ballastSize: cfg.DiskBallast.of(du.TotalBytes),
		log:         logger,
		stderr:      stderr,
		exit:        os.Exit,
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	g.hysteresis = max(g.reserve/10, 1<<20)
	g.total.Store(du.TotalBytes)
	// A leftover of an interrupted creation, or a ballast of another size.
	_ = os.Remove(g.ballastPath + ".tmp")
	if st, err := os.Stat(g.ballastPath); err == nil {
		if uint64(st.Size()) == g.ballastSize && g.ballastSize > 0 {
			g.ballastHeld = true
		} else {
			_ = os.Remove(g.ballastPath)
		}
	}
	g.check()
	return g, nil
}

// attach gives the guard the NodeHost whose leaderships it may move (every
// shard this process leads), and starts the monitor.
func (g *diskGuard) attach(nh *dragonboat.NodeHost) {
	g.nh, g.lastTarget = nh, map[uint64]uint64{}
	g.started.Store(true)
	go g.run()
}

// close stops the monitor (if attach started it) and waits for it.
func (g *diskGuard) close() {
	close(g.stop)
	if g.started.Load() {
		<-g.done
	}
}

func (g *diskGuard) run() {
	defer close(g.done)
	t := time.NewTicker(diskCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		case <-g.kick:
		}
		g.check()
		g.moveLeadership()
	}
}

// check reads the free space and turns the replica read-only or back.
func (g *diskGuard) check() {
	du, err := vfs.Default.GetDiskUsage(g.dir)
	if err != nil {
		g.log.Warn("disk guard: cannot read free space", "dir", g.dir, "err", err)
		return
	}
	g.avail.Store(du.AvailBytes)
	g.total.Store(du.TotalBytes)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.full.Load() {
		if du.AvailBytes < g.reserve {
			g.enterFullLocked(fmt.Sprintf("%d bytes free, below the %d byte reserve", du.AvailBytes, g.reserve))
		} else if !g.ballastHeld && g.ballastSize > 0 && du.AvailBytes >= g.reserve+g.ballastSize+g.hysteresis {
			g.makeBallastLocked()
		}
		return
	}
	need := g.reserve + g.hysteresis
	if !g.ballastHeld {
		need += g.ballastSize
	}
	if du.AvailBytes < need {
		return
	}
	if g.ballastSize > 0 && !g.ballastHeld && !g.makeBallastLocked() {
		return
	}
	g.full.Store(false)
	g.log.Warn("disk guard: free space is back above the reserve; accepting writes again",
		"dir", g.dir, "avail_bytes", du.AvailBytes, "reserve_bytes", g.reserve)
}

func (g *diskGuard) enterFullLocked(why string) {
	g.full.Store(true)
	freed := g.dropBallastLocked()
	g.log.Error("disk guard: refusing writes (507) until space is freed; leadership moves to another member",
		"dir", g.dir, "why", why, "ballast_freed_bytes", freed)
}

// dropBallastLocked deletes the ballast and returns the bytes freed.
func (g *diskGuard) dropBallastLocked() uint64 {
	if !g.ballastHeld {
		return 0
	}
	if err := os.Remove(g.ballastPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		g.log.Error("disk guard: cannot delete the ballast", "path", g.ballastPath, "err", err)
		return 0
	}
	g.ballastHeld = false
	return g.ballastSize
}

// makeBallastLocked allocates the ballast under a temporary name and
// renames it into place, so a crash never leaves a short ballast that
// passes for a whole one (newDiskGuard also checks the size).
func (g *diskGuard) makeBallastLocked() bool {
	tmp := g.ballastPath + ".tmp"
	err := writeBallast(tmp, int64(g.ballastSize))
	if err == nil {
		err = os.Rename(tmp, g.ballastPath)
	}
	if err != nil {
		_ = os.Remove(tmp)
		g.log.Warn("disk guard: cannot create the ballast", "path", g.ballastPath, "bytes", g.ballastSize, "err", err)
		return false
	}
	g.ballastHeld = true
	return true
}

// writeBallast allocates size bytes in a new file at path and syncs it.
func writeBallast(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = allocateFile(f, size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// moveLeadership asks Dragonboat to hand leadership of every shard this
// process leads to another voting member while it is read-only.
func (g *diskGuard) moveLeadership() {
	if !g.full.Load() {
		return
	}
	if time.Since(g.lastTransfer) < leaderTransferEvery {
		return
	}
	info := g.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if info == nil {
		return
	}
	g.lastTransfer = time.Now()
	for _, si := range info.ShardInfoList {
		if leader, _, ok, err := g.nh.GetLeaderID(si.ShardID); err != nil || !ok || leader != si.ReplicaID {
			continue
		}
		target := g.nextTarget(si.ShardID, si.ReplicaID, si.Replicas)
		if target == 0 {
			continue // a single replica: nobody to hand over to
		}
		g.lastTarget[si.ShardID] = target
		if err := g.nh.RequestLeaderTransfer(si.ShardID, target); err != nil {
			g.log.Warn("disk guard: leader transfer request failed", "shard", si.ShardID, "target", target, "err", err)
			continue
		}
		g.transfers.Add(1)
		g.log.Warn("disk guard: disk over its reserve; transferring leadership", "shard", si.ShardID, "target", target)
	}
}

// nextTarget is the voting member of shard after the last one tried, in ID
// order, skipping self; 0 when there is none. Membership is the local
// view, which suffices: a transfer to a stale member just fails.
func (g *diskGuard) nextTarget(shard, self uint64, replicas map[uint64]string) uint64 {
	var ids []uint64
	for id := range replicas {
		if id != self {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return 0
	}
	slices.Sort(ids)
	for _, id := range ids {
		if id > g.lastTarget[shard] {
			return id
		}
	}
	return ids[0]
}

// refuse returns errDiskFull while the replica is read-only, counting the
// refusal.
func (g *diskGuard) refuse() error {
	if g == nil || !g.full.Load() {
		return nil
	}
	g.refused.Add(1)
	return fmt.Errorf("%w: %d bytes free on the data directory's filesystem, below the %d byte reserve; writes are refused until space is freed (reads still work)",
		errDiskFull, g.avail.Load(), g.reserve)
}

// writesDisk reports whether a request to the route adds data and is
// refused while the disk is full. Snapshots stay allowed: they let the log
// be compacted, which frees space.
func writesDisk(route, method string) bool {
	switch route {
	case "kv":
		return method == "PUT" || method == "DELETE"
	case "txn", "admin_export", "admin_join":
		return true
	}
	return false
}

// Free implements host.DiskFullHandler: a write failed with ENOSPC. The
// replica turns read-only at once and the ballast, if held, is deleted so
// the write can be retried.
func (g *diskGuard) Free(op, path string, err error) bool {
	g.enospc.Add(1)
	select {
	case g.kick <- struct{}{}:
	default:
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	held := g.ballastHeld
	if !g.full.Load() {
		g.enterFullLocked(fmt.Sprintf("%s %s: %v", op, path, err))
	} else {
		g.dropBallastLocked()
	}
	return held && !g.ballastHeld
}

// Fatal implements host.DiskFullHandler: no room is left to finish a write
// the storage engines cannot go on without.
func (g *diskGuard) Fatal(op, path string, err error) {
	g.die(fmt.Sprintf("disk full: %s %s: %v", op, path, err))
}

// onPebbleFull is the callback for Pebble's vfs.OnDiskFull on Keel's own
// engine: Pebble retries the write once after it returns.
func (g *diskGuard) onPebbleFull() {
	if !g.Free("write", filepath.Join(g.dir, "sm"), syscall.ENOSPC) {
		g.Fatal("write", filepath.Join(g.dir, "sm"), syscall.ENOSPC)
	}
}

// onDragonboatFatal is host.OnFatal's hook. A storage failure that reached
// Dragonboat's fatal path (a refused snapshot install, an I/O error) ends
// the process with one line and exitStorage instead of a panic trace.
// Anything else is a bug: its message and stack are written and the
// process exits with exitInternal. keeld must exit itself here: with
// host.DiskFullFS Dragonboat's step workers recover their panics, which
// would leave a replica that no longer steps.
func (g *diskGuard) onDragonboatFatal(msg string, err error) {
	if err == nil {
		err = errors.New(msg)
	}
	if host.IsStorageFailure(err) || errors.Is(err, snapshot.ErrNoSpace) ||
		strings.Contains(msg, snapshot.ErrNoSpace.Error()) {
		g.die("storage failure: " + msg)
	}
	g.fatalOnce.Do(func() {
		fmt.Fprintf(g.stderr, "keeld: fatal error in Dragonboat: %s\n%s", msg, debug.Stack())
		g.exit(exitInternal)
	})
	select {}
}

// die writes one line and exits with exitStorage. Only the first caller
// writes; concurrent ones wait for the exit.
func (g *diskGuard) die(line string) {
	g.fatalOnce.Do(func() {
		// Dragonboat formats errors with %+v, stack included: keep the
		// first line, which carries the cause.
		line, _, _ = strings.Cut(line, "\n")
		fmt.Fprintf(g.stderr, "keeld: %s; exiting with status %d (free space, then restart)\n", line, exitStorage)
		g.exit(exitStorage)
	})
	select {} // exit does not return; a test's exit stand-in must not either
}

// diskStatus is the disk part of /status.
type diskStatus struct {
	AvailBytes   uint64 `json:"avail_bytes"`
	TotalBytes   uint64 `json:"total_bytes"`
	ReserveBytes uint64 `json:"reserve_bytes"`
	BallastBytes uint64 `json:"ballast_bytes"`
	// RefusedWrites counts requests answered 507.
	RefusedWrites uint64 `json:"refused_writes"`
	// LeaderTransfers counts transfers this replica requested while full.
	LeaderTransfers uint64 `json:"leader_transfers"`
	// NoSpaceErrors counts writes that failed with ENOSPC.
	NoSpaceErrors uint64 `json:"no_space_errors"`
}

func (g *diskGuard) status() (bool, diskStatus) {
	g.mu.Lock()
	var ballast uint64
	if g.ballastHeld {
		ballast = g.ballastSize
	}
	g.mu.Unlock()
	return g.full.Load(), diskStatus{
		AvailBytes: g.avail.Load(), TotalBytes: g.total.Load(), ReserveBytes: g.reserve,
		BallastBytes: ballast, RefusedWrites: g.refused.Load(), LeaderTransfers: g.transfers.Load(),
		NoSpaceErrors: g.enospc.Load(),
	}
}

var (
	descDiskFull      = prometheus.NewDesc("keel_disk_full", "1 while free space is below --disk-reserve and writes are refused with 507.", nil, nil)
	descDiskAvail     = prometheus.NewDesc("keel_disk_available_bytes", "Free bytes on the data directory's filesystem at the last check.", nil, nil)
	descDiskReserve   = prometheus.NewDesc("keel_disk_reserve_bytes", "Free space below which writes are refused.", nil, nil)
	descDiskBallast   = prometheus.NewDesc("keel_disk_ballast_bytes", "Bytes held in the ballast file (0 once deleted).", nil, nil)
	descDiskRefused   = prometheus.NewDesc("keel_disk_refused_writes_total", "Write requests answered 507 because the disk was over its reserve.", nil, nil)
	descDiskTransfers = prometheus.NewDesc("keel_disk_leader_transfers_total", "Leader transfers requested because this replica's disk was over its reserve.", nil, nil)
	descDiskENOSPC    = prometheus.NewDesc("keel_disk_enospc_total", "Writes that failed with no space left on device.", nil, nil)
)

func (g *diskGuard) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDiskFull, descDiskAvail, descDiskReserve, descDiskBallast, descDiskRefused, descDiskTransfers, descDiskENOSPC} {
		ch <- d
	}
}

func (g *diskGuard) Collect(ch chan<- prometheus.Metric) {
	full, st := g.status()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descDiskFull, b2f(full))
	gauge(descDiskAvail, float64(st.AvailBytes))
	gauge(descDiskReserve, float64(st.ReserveBytes))
	gauge(descDiskBallast, float64(st.BallastBytes))
	counter(descDiskRefused, st.RefusedWrites)
	counter(descDiskTransfers, st.LeaderTransfers)
	counter(descDiskENOSPC, st.NoSpaceErrors)
}
