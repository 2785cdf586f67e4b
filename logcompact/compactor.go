package logcompact

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
)

// StreamFloor reports the lowest snapshot index currently being streamed
// from this replica to a follower. The follower needs the entries after that
// index as soon as it has installed the snapshot, so the log is not
// compacted past it while the stream lasts. ok is false when no stream is
// running. Implementations must be safe for concurrent use and cheap.
type StreamFloor interface {
	StreamFloor() (index uint64, ok bool)
}

// Config configures a Compactor for one replica.
type Config struct {
	// NodeHost hosts the replica. Required.
	NodeHost *dragonboat.NodeHost
	// ShardID and ReplicaID name the replica. Required.
	ShardID, ReplicaID uint64
	// Policy defaults to DefaultPolicy() when zero.
	Policy Policy
	// Dirs are measured for the Raft log's allocated bytes: the NodeHost's
	// NodeHostDir, plus WALDir when it is set. Required.
	Dirs []string
	// Floor, optional, holds compaction back while snapshots stream.
	Floor StreamFloor
	// Applied, optional, is the replica's state machine. A quiet
	// Compactor whose applied index has not moved then looks at its log's
	// range only every tenth tick (quiet.go).
	Applied AppliedIndexer
	// Interval is how often Run checks the log; default 1s.
	Interval time.Duration
	// SnapshotTimeout bounds one metadata snapshot; default 30s.
	SnapshotTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Stats is what a host shows about the log of one replica.
type Stats struct {
	// FirstIndex and LastIndex are the log's range (LogReader.GetRange).
	FirstIndex, LastIndex uint64
	// TrackedEntries and TrackedBytes are the entries whose sizes the
	// Compactor has read and their estimated LogDB bytes, as of its last
	// look at the log.
	TrackedEntries, TrackedBytes uint64
	// DiskBytes is the allocated size of Config.Dirs at the last
	// measurement, and DiskMeasured when that was.
	DiskBytes    int64
	DiskMeasured time.Time
	// Compactions counts the steps that moved the first index forward;
	// EntriesRemoved the entries they removed.
	Compactions, EntriesRemoved uint64
	// Reclaims counts completed LogDB compactions; BytesReclaimed sums the
	// allocated bytes each one freed (measured before and after; a reclaim
	// that freed nothing adds 0); LastReclaimed is the last one's delta,
	// which may be negative when writes outran it.
	Reclaims       uint64
	BytesReclaimed uint64
	LastReclaimed  int64
	// Errors counts failed steps and reclaims.
	Errors uint64
	// QuietTicks counts Run's (or a Runner's) ticks that found the log's
	// range unchanged since a tick with nothing to do, and so did nothing
	// but refresh the shared disk figure.
	QuietTicks uint64
}

// Result describes one Step.
type Result struct {
	// SnapshotIndex is the index of the metadata snapshot taken.
	SnapshotIndex uint64
	// CompactedTo is the index the log was compacted up to (0 if it was
	// not); FirstBefore and FirstAfter the first index around the step.
	CompactedTo, FirstBefore, FirstAfter uint64
	// Freed is the allocated bytes the LogDB compaction freed.
	Freed int64
	// Reclaimed is false when Dragonboat had already reclaimed the space
	// itself (auto compactions on) so Freed was not measured.
	Reclaimed bool
}

// Compactor runs "snapshot, compact, reclaim" for one replica.
//
// Invariants: the log is only ever compacted through a Dragonboat snapshot
// request, so only behind state Sync made durable; the compaction index is
// at most the window start - 1 and at most the stream floor.
type Compactor struct {
	cfg Config
	log *slog.Logger

	// stepMu serialises Step, Reclaim and refresh; it guards sizes,
	// reclaimedFirst and rejectedFirst.
	stepMu sync.Mutex
	sizes  entrySizes
	// reclaimedFirst is the log's first index when a reclaim last
	// completed, or when LogDB twice refused one at the same first index
	// (nothing to reclaim: Dragonboat's auto compaction took it). Run
	// reclaims again only once the first index has moved past it: only a
	// compaction of the log, which moves it, gives LogDB something to
	// reclaim. rejectedFirst is the first index of the last refusal.
	// watching is set at Run's first tick, which takes the first index as
	// it finds it: Dragonboat forgets what was pending over a restart
	// (it refuses every compaction until the log is compacted again),
	// and a compaction between the replica's start and that tick is
	// reclaimed by the next one, which reclaims everything before it.
	reclaimedFirst, rejectedFirst uint64
	watching                      bool
	// quiet is what the last tick with nothing to do saw (quiet.go). It
	// has its own mutex: a Runner reads it without waiting for a Step.
	quiet quietState

	// statsMu guards stats.
	statsMu sync.Mutex
	stats   Stats
}

// New checks cfg and returns a Compactor. Nothing runs until Run or Step.
func New(cfg Config) (*Compactor, error) {
	if cfg.NodeHost == nil {
		return nil, fmt.Errorf("%w: NodeHost is nil", ErrConfig)
	}
	if cfg.ShardID == 0 || cfg.ReplicaID == 0 {
		return nil, fmt.Errorf("%w: ShardID and ReplicaID are required", ErrConfig)
	}
	if len(cfg.Dirs) == 0 {
		return nil, fmt.Errorf("%w: Dirs is empty", ErrConfig)
	}
	if cfg.Policy == (Policy{}) {
		cfg.Policy = DefaultPolicy()
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.SnapshotTimeout <= 0 {
		cfg.SnapshotTimeout = 30 * time.Second
	}
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	return &Compactor{cfg: cfg, log: l.With("shard", cfg.ShardID, "replica", cfg.ReplicaID)}, nil
}

// Policy returns the policy in use.
func (c *Compactor) Policy() Policy { return c.cfg.Policy }

func (c *Compactor) reader() (dragonboat.ReadonlyLogReader, error) {
	r, err := c.cfg.NodeHost.GetLogReader(c.cfg.ShardID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return r, nil
}

// refreshLocked updates the size record from the log. stepMu is held.
func (c *Compactor) refreshLocked() (dragonboat.ReadonlyLogReader, error) {
	r, err := c.reader()
	if err != nil {
		return nil, err
	}
	err = c.sizes.refresh(r)
	c.statsMu.Lock()
	c.stats.TrackedEntries, c.stats.TrackedBytes = uint64(len(c.sizes.sizes)), c.sizes.total
	c.statsMu.Unlock()
	if err != nil {
		return nil, err
	}
	return r, nil
}

// floor asks the StreamFloor, if any.
func (c *Compactor) floor() (uint64, bool) {
	if c.cfg.Floor == nil {
		return 0, false
	}
	return c.cfg.Floor.StreamFloor()
}

// SnapshotOption returns the option a snapshot request should carry so
// that the compaction after it keeps the trailing window, or
// ErrNothingToCompact. A scheduler that takes snapshots itself uses this,
// then calls Reclaim once the snapshot completed.
func (c *Compactor) SnapshotOption() (dragonboat.SnapshotOption, error) {
	c.stepMu.Lock()
	defer c.stepMu.Unlock()
	idx, err := c.compactionIndexLocked()
	if err != nil {
		return dragonboat.SnapshotOption{}, err
	}
	return optionFor(idx), nil
}

func optionFor(idx uint64) dragonboat.SnapshotOption {
	return dragonboat.SnapshotOption{OverrideCompactionOverhead: true, CompactionIndex: idx}
}

func (c *Compactor) compactionIndexLocked() (uint64, error) {
	if _, err := c.refreshLocked(); err != nil {
		return 0, err
	}
	fl, hasFloor := c.floor()
	idx, ok := c.cfg.Policy.compactionIndex(&c.sizes, fl, hasFloor)
	if !ok {
		return 0, ErrNothingToCompact
	}
	return idx, nil
}

// Due reports whether the log has grown a trigger past the window.
func (c *Compactor) Due() (bool, error) {
	c.stepMu.Lock()
	defer c.stepMu.Unlock()
	if _, err := c.refreshLocked(); err != nil {
		return false, err
	}
	return c.cfg.Policy.due(&c.sizes), nil
}

// Step requests a metadata snapshot whose compaction keeps the window,
// waits until Dragonboat has compacted the log, then reclaims the disk
// space and measures what was freed. Dragonboat calls the state machine's
// Sync before it records a metadata snapshot and compacts only behind it,
// so nothing acknowledged depends on the removed entries.
func (c *Compactor) Step(ctx context.Context) (Result, error) {
	c.stepMu.Lock()
	defer c.stepMu.Unlock()
	defer c.quiet.clear()
	res, err := c.stepLocked(ctx)
	if err != nil && !errors.Is(err, ErrNothingToCompact) {
		c.bumpErrors()
	}
	return res, err
}

func (c *Compactor) stepLocked(ctx context.Context) (Result, error) {
	idx, err := c.compactionIndexLocked()
	if err != nil {
		return Result{}, err
	}
	res := Result{FirstBefore: c.sizes.base}
	rs, err := c.cfg.NodeHost.RequestSnapshot(c.cfg.ShardID, optionFor(idx), c.cfg.SnapshotTimeout)
	if err != nil {
		return res, classify(err)
	}
	var rr dragonboat.RequestResult
	select {
	case rr = <-rs.ResultC():
	case <-ctx.Done():
		rs.Release()
		return res, ctx.Err()
	}
	if rr.Rejected() {
		// Nothing was applied since the last snapshot (taken by another
		// owner's request through SyncRequestSnapshot, or Dragonboat's
		// own): there is nothing new to compact behind.
		return res, fmt.Errorf("%w: snapshot at compaction index %d rejected: no progress since the last snapshot", ErrNothingToCompact, idx)
	}
	if !rr.Completed() {
		return res, fmt.Errorf("%w: compaction index %d: %s", ErrSnapshotFailed, idx, outcome(rr))
	}
	res.SnapshotIndex = rr.SnapshotIndex()
	if res.SnapshotIndex < idx+1 {
		// Dragonboat compacts only when the snapshot covers idx+1.
		return res, nil
	}
	r, err := c.reader()
	if err != nil {
		return res, err
	}
	// The node removes entries on its next step after the snapshot is
	// recorded; wait for that, then reclaim.
	if err := waitUntil(ctx, 10*time.Second, func() bool {
		f, _ := r.GetRange()
		return f > idx
	}); err != nil {
		return res, fmt.Errorf("logcompact: wait for compaction to %d: %w", idx, err)
	}
	res.CompactedTo = idx
	res.FirstAfter, _ = r.GetRange()
	c.statsMu.Lock()
	c.stats.Compactions++
	if res.FirstAfter > res.FirstBefore {
		c.stats.EntriesRemoved += res.FirstAfter - res.FirstBefore
	}
	c.statsMu.Unlock()
	c.sizes.trim(res.FirstAfter)
	freed, reclaimed, err := c.reclaimLocked(ctx, true)
	res.Freed, res.Reclaimed = freed, reclaimed
	if err != nil {
		return res, err
	}
	c.log.Debug("log compacted", "snapshot", res.SnapshotIndex, "to", idx,
		"removed", res.FirstAfter-res.FirstBefore, "freed", freed)
	return res, nil
}

// Reclaim asks LogDB to compact away entries already removed from the log
// (by a Step, a scheduler's snapshot or an installed snapshot) and returns
// the allocated bytes that freed. ok is false when nothing was pending.
func (c *Compactor) Reclaim(ctx context.Context) (freed int64, ok bool, err error) {
	c.stepMu.Lock()
	defer c.stepMu.Unlock()
	defer c.quiet.clear()
	freed, ok, err = c.reclaimLocked(ctx, false)
	if err != nil {
		c.bumpErrors()
	}
	return freed, ok, err
}

// reclaimPending reports whether the log's first index moved since the
// last reclaim (see reclaimedFirst).
func (c *Compactor) reclaimPending() (bool, error) {
	r, err := c.reader()
	if err != nil {
		return false, err
	}
	first, _ := r.GetRange()
	c.stepMu.Lock()
	defer c.stepMu.Unlock()
	if !c.watching {
		c.watching = true
		c.reclaimedFirst = first
	}
	return first != c.reclaimedFirst, nil
}

// reclaimLocked runs one LogDB compaction. After a Step, wait is true:
// Dragonboat records the removal just after the first index moves, so a
// rejection is retried briefly; if it persists, Dragonboat's own auto
// compaction (DisableAutoCompactions off) took the request.
func (c *Compactor) reclaimLocked(ctx context.Context, wait bool) (int64, bool, error) {
	r, err := c.reader()
	if err != nil {
		return 0, false, err
	}
	first, _ := r.GetRange()
	before, err := AllocatedBytes(c.cfg.Dirs...)
	if err != nil {
		return 0, false, fmt.Errorf("logcompact: measure disk: %w", err)
	}
	var op *dragonboat.SysOpState
	deadline := time.Now().Add(time.Second)
	for {
		op, err = c.cfg.NodeHost.RequestCompaction(c.cfg.ShardID, c.cfg.ReplicaID)
		if err == nil {
			break
		}
		if !errors.Is(err, dragonboat.ErrRejected) {
			return 0, false, classify(err)
		}
		if !wait || time.Now().After(deadline) {
			// Dragonboat records a removal just after the first index
			// moves, so one refusal may be early; a second at the same
			// first index means there is nothing to reclaim.
			if first == c.rejectedFirst {
				c.reclaimedFirst = first
			}
			c.rejectedFirst = first
			c.recordDisk(before)
			return 0, false, nil
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	select {
	case <-op.ResultC():
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
	c.reclaimedFirst = first
	after, err := AllocatedBytes(c.cfg.Dirs...)
	if err != nil {
		return 0, false, fmt.Errorf("logcompact: measure disk: %w", err)
	}
	freed := before - after
	c.statsMu.Lock()
	c.stats.Reclaims++
	c.stats.LastReclaimed = freed
	if freed > 0 {
		c.stats.BytesReclaimed += uint64(freed)
	}
	c.stats.DiskBytes, c.stats.DiskMeasured = after, time.Now()
	c.statsMu.Unlock()
	return freed, true, nil
}

func (c *Compactor) recordDisk(n int64) {
	c.statsMu.Lock()
	c.stats.DiskBytes, c.stats.DiskMeasured = n, time.Now()
	c.statsMu.Unlock()
}

func (c *Compactor) bumpErrors() {
	c.statsMu.Lock()
	c.stats.Errors++
	c.statsMu.Unlock()
}

// Stats returns the counters and the log's current range. The disk
// figure is the last measurement: exact around a reclaim, otherwise
// refreshed by Run from one measurement shared with the process's other
// Compactors on the same directories (at most 10 Intervals old while the
// log moves; while it is quiet, the latest any of them took).
func (c *Compactor) Stats() Stats {
	c.statsMu.Lock()
	s := c.stats
	c.statsMu.Unlock()
	if r, err := c.cfg.NodeHost.GetLogReader(c.cfg.ShardID); err == nil {
		s.FirstIndex, s.LastIndex = r.GetRange()
	}
	return s
}

// Run checks the log every Interval until ctx ends or the shard stops:
// it measures the disk, reclaims space freed by compactions it did not
// run itself, and runs a Step when the policy says one is due. Errors
// other than ErrStopped are logged and retried at the next tick.
func (c *Compactor) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if err := c.tick(ctx); err != nil {
			if errors.Is(err, ErrStopped) || ctx.Err() != nil {
				return err
			}
			c.log.Warn("log compaction", "err", err)
		}
	}
}

// diskRefreshIntervals is how many Intervals old the disk figure of a
// Compactor whose log moves may be. A quiet one (quiet.go) takes the
// latest figure the others measured.
const diskRefreshIntervals = 10

// tick is one round of Run. An idle replica costs a look at its log's
// range or applied index (quiet.go) and no walk of the Raft directory:
// with a thousand replicas on a host, a walk (the directory holds every
// shard's snapshot directory) per replica per second cost a fifth of a
// core (bench/README.md, "Idle CPU and the tick"), and one every 10 s
// shared by all was still a third of the Compactors' idle cost.
func (c *Compactor) tick(ctx context.Context) error {
	look, err := c.lookQuiet()
	if err != nil {
		return err
	}
	if look.quiet {
		return c.quietTick(look)
	}
	pending, err := c.reclaimPending()
	if err != nil {
		return err
	}
	if pending {
		if _, _, err := c.Reclaim(ctx); err != nil {
			return err
		}
	} else if err := c.refreshDisk(diskRefreshIntervals); err != nil {
		return err
	}
	due, err := c.Due()
	if err != nil {
		return err
	}
	if !due {
		if !pending {
			c.quiet.mark(look)
		}
		return nil
	}
	if _, err := c.Step(ctx); err != nil && !errors.Is(err, ErrNothingToCompact) {
		return err
	}
	return nil
}

// refreshDisk records the shared disk figure, measured at most intervals
// Intervals ago.
func (c *Compactor) refreshDisk(intervals time.Duration) error {
	n, err := sharedAllocatedBytes(intervals*c.cfg.Interval, c.cfg.Dirs...)
	if err != nil {
		return fmt.Errorf("logcompact: measure disk: %w", err)
	}
	c.recordDisk(n)
	return nil
}

func classify(err error) error {
	if errors.Is(err, dragonboat.ErrClosed) || errors.Is(err, dragonboat.ErrShardNotFound) ||
		errors.Is(err, dragonboat.ErrShardClosed) {
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return fmt.Errorf("%w: %w", ErrSnapshotFailed, err)
}

func outcome(rr dragonboat.RequestResult) string {
	switch {
	case rr.Timeout():
		return "timeout"
	case rr.Rejected():
		return "rejected (no progress since the last snapshot, or one is running)"
	case rr.Terminated():
		return "terminated"
	case rr.Aborted():
		return "aborted"
	case rr.Dropped():
		return "dropped"
	}
	return "not completed"
}

// waitUntil polls cond every 5ms until it holds, ctx ends or timeout.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return context.DeadlineExceeded
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// SyncRequestSnapshot takes a metadata-only snapshot of the replica for
// another owner of snapshot timing (snapshot.Scheduler), so that every
// snapshot request for the replica goes through the Compactor: requests
// are serialised with its own steps, and Dragonboat, which allows one
// pending request per shard, never sees two collide. A plain request
// carries the Compactor's window as its compaction option when one is due
// (else Dragonboat's CompactionOverhead applies), and LogDB space already
// removed is reclaimed before it returns. An exported snapshot's options
// pass through untouched. It implements snapshot.Requester.
func (c *Compactor) SyncRequestSnapshot(ctx context.Context, shardID uint64, opt dragonboat.SnapshotOption) (uint64, error) {
	if shardID != c.cfg.ShardID {
		return 0, fmt.Errorf("%w: the compactor of shard %d was asked to snapshot shard %d", ErrConfig, c.cfg.ShardID, shardID)
	}
	c.stepMu.Lock()
	defer c.stepMu.Unlock()
	defer c.quiet.clear() // the snapshot may have compacted the log
	if !opt.Exported && !opt.OverrideCompactionOverhead {
		idx, err := c.compactionIndexLocked()
		switch {
		case err == nil:
			opt = optionFor(idx)
		case !errors.Is(err, ErrNothingToCompact):
			c.bumpErrors()
			return 0, err
		}
	}
	index, err := c.cfg.NodeHost.SyncRequestSnapshot(ctx, shardID, opt)
	if err != nil {
		return 0, err
	}
	if !opt.Exported {
		// Dragonboat removes the entries on its next step; whatever this
		// reclaim misses, Run's next Reclaim picks up.
		if _, _, err := c.reclaimLocked(ctx, false); err != nil {
			c.bumpErrors()
			c.log.Warn("log compaction after a scheduled snapshot", "err", err)
		}
	}
	return index, nil
}
