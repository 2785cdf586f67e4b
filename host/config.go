package host

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/logcompact"
	"github.com/keel-db/keel/sm"
	"github.com/keel-db/keel/snapshot"
	"github.com/lni/dragonboat/v4/statemachine"
)

// Config configures the Keel state machines a host creates.
type Config struct {
	// RootDir holds one data directory per shard and replica:
	// <RootDir>/shard-<id>/replica-<id>. Required.
	RootDir string
	// Engine configures each shard's Pebble tablet; the zero value gives
	// Keel's defaults. Engine.Shared is ignored: the Factory sets it to the
	// resources it owns.
	Engine engine.Options
	// Shared sizes the resources every shard of the Factory shares: one
	// block cache, one file cache (open sstables) and one memtable budget.
	// The zero value gives engine's defaults (see engine.SharedOptions).
	Shared engine.SharedOptions
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// SnapshotStreamBytesPerSecond caps the rate at which a replica writes
	// a snapshot it sends to a follower or exports (0: no cap). A cap
	// leaves CPU and disk to the quorum while a follower catches up, which
	// then takes longer (bench/README.md has the measured trade).
	SnapshotStreamBytesPerSecond int64
	// SnapshotReserveBytes is the free space a received snapshot must leave
	// (snapshot.Options.ReserveBytes); an image that would eat into it is
	// refused before anything is written.
	SnapshotReserveBytes uint64
	// TabletIdleClose closes a shard's tablet (its Pebble database) once
	// nothing has used it for this long, and lets a restart skip opening
	// tablets that were closed cleanly (sm.Config.IdleClose). An open
	// tablet holds about 250 KB of memory whatever its data; reopening one
	// costs a few milliseconds and, for writing, about six fsyncs. Zero
	// means DefaultTabletIdleClose; negative keeps every tablet open.
	TabletIdleClose time.Duration
	// TabletKeepOpen is how many tablets stay open however idle: an idle
	// tablet closes only while more than this many are open on the
	// factory (sm.Config.KeepOpen). A host with a few shards then never
	// pays a reopen on its first write after a pause, and one with
	// thousands keeps memory for this many (about 250 KB each). Zero means
	// DefaultTabletKeepOpen; negative lets every idle tablet close.
	TabletKeepOpen int
}

// DefaultTabletKeepOpen is Config.TabletKeepOpen's default: 32 open
// tablets hold about 8 MB.
const DefaultTabletKeepOpen = 32

func (c Config) tabletKeepOpen() int {
	switch {
	case c.TabletKeepOpen < 0:
		return 0
	case c.TabletKeepOpen == 0:
		return DefaultTabletKeepOpen
	}
	return c.TabletKeepOpen
}

// DefaultTabletIdleClose is Config.TabletIdleClose's default: the time
// Dragonboat takes to quiesce an idle shard with Keel's Raft settings
// (10 election timeouts of 10 ticks of 20 ms), so a tablet closes about
// when its shard goes quiet.
const DefaultTabletIdleClose = 2 * time.Second

func (c Config) tabletIdleClose() time.Duration {
	switch {
	case c.TabletIdleClose < 0:
		return 0
	case c.TabletIdleClose == 0:
		return DefaultTabletIdleClose
	}
	return c.TabletIdleClose
}

// DataDir is the directory holding a replica's state (its tablet).
func (c Config) DataDir(shardID, replicaID uint64) string {
	return filepath.Join(c.RootDir, fmt.Sprintf("shard-%d", shardID), fmt.Sprintf("replica-%d", replicaID))
}

// Factory creates Keel state machines for Dragonboat, owns the resources
// they share, and remembers them so a host can reach a replica's state
// machine (metrics, status, the log compactor's floor).
//
// Lifetime: NewFactory opens the shared resources; every state machine the
// Factory creates uses them; Close releases them and must come after the
// NodeHost that runs the state machines has closed (Host does this in
// order). Dragonboat creates and closes state machines one replica at a
// time, which is why neither sm.Open nor a state machine's Close owns what
// every shard shares.
type Factory struct {
	cfg    Config
	shared *engine.Shared

	// mu guards sms and closed.
	mu     sync.Mutex
	sms    map[[2]uint64]*sm.StateMachine
	closed bool
}

// NewFactory checks cfg, opens the shared resources and returns a Factory.
// Pass its Create method to NodeHost.StartOnDiskReplica.
func NewFactory(cfg Config) (*Factory, error) {
	if cfg.RootDir == "" {
		return nil, fmt.Errorf("%w: RootDir is empty", ErrConfig)
	}
	shared, err := engine.NewShared(cfg.Shared)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return &Factory{cfg: cfg, shared: shared, sms: make(map[[2]uint64]*sm.StateMachine)}, nil
}

// Config returns the factory's configuration.
func (f *Factory) Config() Config { return f.cfg }

// Shared returns the resources the factory's shards share, for metrics.
func (f *Factory) Shared() *engine.Shared { return f.shared }

// Create is a statemachine.CreateOnDiskStateMachineFunc.
func (f *Factory) Create(shardID, replicaID uint64) statemachine.IOnDiskStateMachine {
	eo := f.cfg.Engine
	eo.Shared = f.shared
	s := sm.New(sm.Config{
		Dir:       f.cfg.DataDir(shardID, replicaID),
		ShardID:   shardID,
		ReplicaID: replicaID,
		Engine:    eo,
		Logger:    f.cfg.Logger,
		Snapshot:  snapshot.Options{StreamBytesPerSecond: f.cfg.SnapshotStreamBytesPerSecond, ReserveBytes: f.cfg.SnapshotReserveBytes},
		IdleClose: f.cfg.tabletIdleClose(),
		KeepOpen:  f.cfg.tabletKeepOpen(),
	})
	f.mu.Lock()
	f.sms[[2]uint64{shardID, replicaID}] = s
	f.mu.Unlock()
	return s
}

// Func returns Create as Dragonboat's factory type.
func (f *Factory) Func() statemachine.CreateOnDiskStateMachineFunc { return f.Create }

// StateMachine returns the state machine last created for the replica, or
// nil.
func (f *Factory) StateMachine(shardID, replicaID uint64) *sm.StateMachine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sms[[2]uint64{shardID, replicaID}]
}

// Replicas lists the (shard, replica) pairs the factory has created state
// machines for and not removed, in no particular order.
func (f *Factory) Replicas() [][2]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][2]uint64, 0, len(f.sms))
	for k := range f.sms {
		out = append(out, k)
	}
	return out
}

// RemoveTablet deletes a replica's tablet from disk and returns the
// allocated bytes that freed. The replica's state machine must be closed
// (Dragonboat closes it when the replica stops); RemoveTablet refuses an
// open one with ErrReplicaRunning. The parent directory is fsynced so the
// removal survives a crash; a crash in the middle leaves a partial tablet
// that the next RemoveTablet (or keelctl check) finds.
func (f *Factory) RemoveTablet(shardID, replicaID uint64) (int64, error) {
	key := [2]uint64{shardID, replicaID}
	f.mu.Lock()
	s := f.sms[key]
	if s != nil && s.IsOpen() {
		f.mu.Unlock()
		return 0, fmt.Errorf("%w: shard %d replica %d", ErrReplicaRunning, shardID, replicaID)
	}
	delete(f.sms, key)
	f.mu.Unlock()
	dir := f.cfg.DataDir(shardID, replicaID)
	freed, err := logcompact.AllocatedBytes(dir)
	if err != nil {
		return 0, fmt.Errorf("keel: measure %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return 0, fmt.Errorf("keel: remove tablet %s: %w", dir, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return freed, fmt.Errorf("keel: remove tablet %s: %w", dir, err)
	}
	// An empty shard-<id> directory is removed too; a sibling replica's
	// tablet keeps it.
	_ = os.Remove(filepath.Dir(dir))
	return freed, nil
}

// Close closes every state machine the factory created that is still
// open, then releases the shared resources. Call it after the NodeHost
// running the factory's state machines has closed; it is safe to call more
// than once.
//
// Why Close closes state machines at all: NodeHost.Close hands each
// replica's state machine to Dragonboat's close workers and waits for them
// only so long (settings.Soft.CloseWorkerTimedWaitSecond, 5 s in the pinned
// Dragonboat); the ones still queued then are never closed. At a thousand
// shards, each Close flushing its tablet, that wait runs out, and the
// tablets left open would keep the shared resources (ErrSharedInUse) and
// go without their CLOSED record, so the next start reopens each of them
// in full. Once NodeHost.Close has returned no Dragonboat goroutine calls
// a state machine any more, so closing the leftovers here races with
// nothing; sm.StateMachine.Close is idempotent.
func (f *Factory) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	sms := make([]*sm.StateMachine, 0, len(f.sms))
	for _, s := range f.sms {
		sms = append(sms, s)
	}
	f.mu.Unlock()
	err := closeAll(sms)
	return errors.Join(err, f.shared.Close())
}

// closeParallel bounds the closes Factory.Close runs at once: each flushes
// a memtable and fsyncs, so a few in parallel keep the disk busy without
// queueing a thousand writers on it.
const closeParallel = 4

// closeAll closes every state machine in sms, closeParallel at a time, and
// returns every error.
func closeAll(sms []*sm.StateMachine) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards errs
		errs []error
		next = make(chan *sm.StateMachine)
	)
	for range min(closeParallel, len(sms)) {
		wg.Go(func() {
			for s := range next {
				if err := s.Close(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, s := range sms {
		next <- s
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}
