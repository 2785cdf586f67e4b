package sm

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/snapshot"
	"github.com/lni/dragonboat/v4/statemachine"
)

// Config configures one replica's state machine.
type Config struct {
	// Dir is the replica's state root (see engine.Root).
	Dir string
	// ShardID and ReplicaID identify the replica; Open refuses a Dir that
	// belongs to another.
	ShardID, ReplicaID uint64
	// Engine configures Pebble.
	Engine engine.Options
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Snapshot holds limits for received snapshot streams and the budget a
	// capture spends on recording writes; the zero value gives defaults.
	Snapshot snapshot.Options
	// IdleClose, when positive, closes the replica's tablet once nothing
	// has used it for this long, and lets Open skip opening a tablet that
	// was closed cleanly (see the package documentation, "Idle tablets").
	// Zero keeps the tablet open from Open to Close. Ignored with
	// Engine.WAL or Engine.ReadOnly.
	IdleClose time.Duration
	// KeepOpen, with IdleClose and Engine.Shared set, keeps idle tablets
	// open while no more than KeepOpen tablets are open on Engine.Shared:
	// a host with a few shards never pays a reopen, and one with
	// thousands still closes all but KeepOpen of its idle ones. Zero
	// closes every idle tablet.
	KeepOpen int
}

// StateMachine is Keel's statemachine.IOnDiskStateMachine.
//
// Invariants:
//   - applied equals the applied index stored in eng (Update writes both,
//     under Dragonboat's exclusion of every other mutating method).
//   - Update never returns an error for anything derived from entry
//     contents: bad commands become CodeInvalidCommand results. An error
//     from Update means the disk failed and halts the replica.
type StateMachine struct {
	cfg  Config
	log  *slog.Logger
	root engine.Root

	// mu guards open, eng, engRO, failed and closedAt (see tablet.go).
	// Lookups and Update hold it shared for the whole call so neither an install nor
	// an idle close can close the engine under them; an install holds it
	// exclusively only while swapping the pointer, an idle close while
	// closing the engine.
	mu       sync.RWMutex
	open     bool
	eng      *engine.Engine
	engRO    bool
	failed   error
	closedAt time.Time
	// lastUse is when the tablet was last used (UnixNano), for the idle
	// clock; idle is its timer, nil until the tablet first opens; idleFor
	// is the current idle time in nanoseconds (0: IdleClose), written
	// under mu and read by the timer without it.
	lastUse atomic.Int64
	idle    atomic.Pointer[time.Timer]
	idleFor atomic.Int64
	// reopenCost is how long the last reopen for writing took (ns).
	reopenCost atomic.Int64
	// used is set at the first use of a tablet Open opened: until then
	// the idle timer leaves it open for up to maxIdleBackoff x IdleClose.
	used atomic.Bool

	// applied is the last index committed by Update or installed by a
	// snapshot; read without locks by metrics and status.
	applied atomic.Uint64

	// tracker records the keys Update writes while a capture is pending
	// (see snapshot.Tracker); it has its own lock.
	tracker snapshot.Tracker
	// capMu guards captures and saving. captures holds the captures
	// prepared and not yet released, so Close and RecoverFromSnapshot can
	// release them before closing the engine they pin. saving counts the
	// SaveSnapshot calls in progress by snapshot index, for StreamFloor.
	capMu    sync.Mutex
	captures map[*snapshot.Capture]struct{}
	saving   map[uint64]int
	// stats counts snapshot work; read without locks.
	stats snapshotCounters
	// stageMu guards staging: the staged dirs (engine.Root.StageDir) being
	// built by StageImage right now, which PruneStaged must leave alone.
	stageMu sync.Mutex
	staging map[string]struct{}
	// stagedFloor is the lowest index among the staged images on disk (0:
	// none); once the applied index reaches it, Update prunes them in the
	// background (pruning is set while one runs).
	stagedFloor atomic.Uint64
	pruning     atomic.Bool
}

var _ statemachine.IOnDiskStateMachine = (*StateMachine)(nil)

// New returns a state machine for cfg; nothing is opened until Open.
func New(cfg Config) *StateMachine {
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	l = l.With("shard", cfg.ShardID, "replica", cfg.ReplicaID)
	return &StateMachine{cfg: cfg, log: l, root: engine.NewRoot(cfg.Dir, cfg.Engine.FS)}
}

// Open opens the live image under the replica's root, creating an empty one
// on first use, and returns its applied index.
func (s *StateMachine) Open(stopc <-chan struct{}) (uint64, error) {
	select {
	case <-stopc:
		return 0, statemachine.ErrOpenStopped
	default:
	}
	if applied, ok := s.openLazily(); ok {
		// The tablet opens when first used (acquire).
		s.mu.Lock()
		s.open = true
		s.mu.Unlock()
		s.applied.Store(applied)
		s.touch()
		s.pruneStaged(applied)
		s.log.Debug("keel state machine open, tablet closed", "dir", s.cfg.Dir, "applied", applied)
		return applied, nil
	}
	// A fresh image records the identity with its format record, in one
	// flush (an older image without one gets it at open too);
	// checkIdentity then compares it.
	o := s.cfg.Engine
	o.Identity = &engine.Identity{ShardID: s.cfg.ShardID, ReplicaID: s.cfg.ReplicaID}
	eng, err := engine.OpenRoot(s.cfg.Dir, o)
	if err != nil {
		return 0, err
	}
	if err := s.checkIdentity(eng, !o.ReadOnly); err != nil {
		_ = eng.Close()
		return 0, err
	}
	applied, err := eng.AppliedIndex()
	if err != nil {
		_ = eng.Close()
		return 0, err
	}
	s.applied.Store(applied)
	s.mu.Lock()
	s.eng, s.engRO, s.open = eng, o.ReadOnly, true
	s.touch()
	s.armIdle()
	s.mu.Unlock()
	if !o.ReadOnly {
		s.pruneStaged(applied)
	}
	s.log.Debug("keel state machine open", "dir", eng.Dir(), "applied", applied)
	return applied, nil
}

// checkIdentity refuses an image of another replica, and records the
// identity in a writable image that has none.
func (s *StateMachine) checkIdentity(eng *engine.Engine, writable bool) error {
	want := engine.Identity{ShardID: s.cfg.ShardID, ReplicaID: s.cfg.ReplicaID}
	id, ok, err := eng.Identity()
	if err != nil {
		return err
	}
	if !ok {
		if !writable {
			return nil
		}
		return eng.SetIdentity(want)
	}
	if id != want {
		return fmt.Errorf("%w: %s holds %s, opened as %s", ErrWrongReplica, s.cfg.Dir, id, want)
	}
	return nil
}

// Update applies entries in one Pebble batch together with the index of the
// last one. Entries at or below the applied index are skipped.
func (s *StateMachine) Update(entries []statemachine.Entry) ([]statemachine.Entry, error) {
	eng, err := s.acquire(true)
	if err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	b := eng.NewBatch()
	defer b.Close()
	if s.tracker.Enabled() {
		// A capture is pending: the batch records every key it writes
		// before the write enters it (see snapshot.Tracker). Captures
		// begin only with Update excluded, so none starts mid-call.
		b.SetRecorder(&s.tracker)
	}
	applied := s.applied.Load()
	last := applied
	for i := range entries {
		e := &entries[i]
		if e.Index <= applied {
			e.Result = statemachine.Result{Value: uint64(CodeAlreadyApplied)}
			continue
		}
		res, err := apply(b, e.Cmd)
		if err != nil {
			return nil, fmt.Errorf("keel: apply entry %d: %w", e.Index, err)
		}
		e.Result = res
		last = e.Index
	}
	if last == applied {
		return entries, nil
	}
	if err := b.SetAppliedIndex(last); err != nil {
		return nil, fmt.Errorf("keel: apply entries up to %d: %w", last, err)
	}
	if err := b.Commit(false); err != nil {
		return nil, fmt.Errorf("keel: apply entries up to %d: %w", last, err)
	}
	s.applied.Store(last)
	if f := s.stagedFloor.Load(); f != 0 && last >= f {
		// A staged image Raft will never ask for now (log entries
		// carried the replica past it): give its disk back.
		s.pruneStagedAsync()
	}
	return entries, nil
}

// apply applies one command to b. Only a failed write to the batch is an
// error; anything wrong with the command is a result.
//
// While a snapshot capture is pending, b records every key and range it is
// about to write (engine.Recorder), so apply needs no list of what each
// operation touches.
func apply(b *engine.Batch, data []byte) (statemachine.Result, error) {
	cmd, err := Decode(data)
	if err != nil {
		return invalidResult(err), nil
	}
	switch cmd.Op {
	case OpPut:
		return okResult(), b.Put(cmd.Key, cmd.Value)
	case OpDelete:
		return okResult(), b.Delete(cmd.Key)
	case OpDeleteRange:
		return okResult(), b.DeleteRange(cmd.Key, cmd.End)
	case OpTxn:
		for i, cd := range cmd.Conds {
			holds, err := condHolds(b, cd)
			if err != nil {
				return statemachine.Result{}, err
			}
			if !holds {
				return preconditionResult(i), nil
			}
		}
		for _, op := range cmd.Ops {
			var err error
			if op.Op == OpPut {
				err = b.Put(op.Key, op.Value)
			} else {
				err = b.Delete(op.Key)
			}
			if err != nil {
				return statemachine.Result{}, err
			}
		}
		return okResult(), nil
	}
	// Decode validated the op; this is unreachable.
	return invalidResult(fmt.Errorf("%w: unknown operation %d", ErrInvalidCommand, cmd.Op)), nil
}

func condHolds(b *engine.Batch, cd Cond) (bool, error) {
	v, err := b.Get(cd.Key)
	found := err == nil
	if err != nil && !errors.Is(err, engine.ErrNotFound) {
		return false, err
	}
	switch cd.Kind {
	case CondAbsent:
		return !found, nil
	case CondExists:
		return found, nil
	default:
		return found && string(v) == string(cd.Value), nil
	}
}

// Sync makes every applied entry durable (an engine flush; nothing to do
// when nothing was applied since the last one). Dragonboat calls it before
// it compacts the Raft log behind a metadata-only snapshot, which is what
// keeps the log from being compacted past the flushed state.
func (s *StateMachine) Sync() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case !s.open:
		return ErrClosed
	case s.failed != nil:
		return s.failed
	case s.eng == nil || (s.engRO && !s.cfg.Engine.ReadOnly):
		// A closed tablet was flushed when it closed; one a Lookup
		// reopened read-only holds nothing unflushed.
		return nil
	}
	return s.eng.Sync()
}

// Close closes the engine. Dragonboat calls it once, after the last Update.
func (s *StateMachine) Close() error {
	s.releaseCaptures()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open = false
	if t := s.idle.Load(); t != nil {
		t.Stop()
	}
	if s.eng == nil {
		return nil
	}
	err := s.eng.Close()
	s.eng, s.engRO = nil, false
	return err
}

// AppliedIndex is the index of the last applied entry.
func (s *StateMachine) AppliedIndex() uint64 { return s.applied.Load() }
