package sm

import (
	"fmt"
	"time"

	"github.com/keel-db/keel/engine"
)

// A replica's tablet (its Pebble database) is open only while the replica
// uses it when Config.IdleClose is set (see the package documentation,
// "Idle tablets"). The state below, guarded by StateMachine.mu:
//
//	open    Dragonboat has opened the state machine and not closed it.
//	eng     the tablet, or nil while it is closed (idle, or after a lazy
//	        Open that found a closed record).
//	engRO   eng was opened read-only (by a Lookup): writers reopen it.
//	failed  a close of an idle tablet failed; every later call returns it.
//	closedAt when the idle timer last closed the tablet (zero once reopened).
//
// The idle time after which a tablet closes (idleFor) starts at IdleClose
// and adapts: a tablet reopened within twice that time of its idle close
// was closed too early, and its idle time doubles (up to
// maxIdleBackoff x IdleClose); one that stayed closed longer halves it
// back. Without this, a host whose writes slow down (a slow disk, 1,000
// shards written at once) closes tablets between two writes, every write
// then pays a reopen (seven fsyncs, on Dragonboat's apply worker), writes
// slow down further and every tablet closes and reopens without end
// (measured: 1,000 shards under write load fell from 1,700 to 50 writes/s
// with a fixed 2 s idle time). For the same reason a tablet also stays
// open at least reopenAmortize times as long as its last reopen for
// writing took.

// lazyEnabled reports whether tablets may be opened lazily and closed when
// idle: only WAL-less writable tablets write the closed record.
func (s *StateMachine) lazyEnabled() bool {
	return s.cfg.IdleClose > 0 && !s.cfg.Engine.WAL && !s.cfg.Engine.ReadOnly
}

// openLazily is Open's shortcut: the applied index from the tablet's
// closed record, without opening Pebble. ok is false when there is no
// record that still describes the live image, or it names another replica
// (Open then opens the tablet, which reports the mismatch).
func (s *StateMachine) openLazily() (uint64, bool) {
	if !s.lazyEnabled() {
		return 0, false
	}
	c, ok := s.root.ReadClosed()
	if !ok || !c.HasIdentity || c.Identity != (engine.Identity{ShardID: s.cfg.ShardID, ReplicaID: s.cfg.ReplicaID}) {
		return 0, false
	}
	return c.Applied, true
}

const (
	// maxIdleBackoff bounds how far a tablet's idle time grows over
	// IdleClose.
	maxIdleBackoff = 32
	// reopenAmortize is how many times its last reopen for writing took a
	// tablet stays open at least, so reopens cost at most 1/reopenAmortize
	// of the time: under a storm of reopens (a slow disk, many shards
	// written at once) each takes long, and the tablets stop closing
	// before the storm can feed itself.
	reopenAmortize = 20
)

// idleTime is the tablet's current idle time (see above).
func (s *StateMachine) idleTime() time.Duration {
	d := time.Duration(s.idleFor.Load())
	if d <= 0 {
		d = s.cfg.IdleClose
	}
	d = max(d, reopenAmortize*time.Duration(s.reopenCost.Load()))
	return min(d, maxIdleBackoff*s.cfg.IdleClose)
}

// adaptIdleLocked adjusts the idle time when a tablet the idle timer
// closed is reopened (s.mu held exclusively).
func (s *StateMachine) adaptIdleLocked() {
	if s.closedAt.IsZero() {
		return
	}
	cur := time.Duration(s.idleFor.Load())
	if cur <= 0 {
		cur = s.cfg.IdleClose
	}
	if time.Since(s.closedAt) < 2*cur {
		s.idleFor.Store(int64(min(2*cur, maxIdleBackoff*s.cfg.IdleClose)))
	} else {
		s.idleFor.Store(int64(max(cur/2, s.cfg.IdleClose)))
	}
	s.closedAt = time.Time{}
}

// touch records a use of the tablet for the idle clock.
func (s *StateMachine) touch() { s.lastUse.Store(time.Now().UnixNano()) }

// acquire returns the tablet, opened if it was closed (read-only for a
// reader when it was closed, for writing when write is set), with s.mu held
// shared: the caller calls s.mu.RUnlock when done with it.
func (s *StateMachine) acquire(write bool) (*engine.Engine, error) {
	// A read-only configuration never reopens for writing (Pebble refuses
	// the writes instead, as without idle tablets).
	write = write && !s.cfg.Engine.ReadOnly
	for range 3 {
		s.mu.RLock()
		if !s.open {
			s.mu.RUnlock()
			return nil, ErrClosed
		}
		if s.failed != nil {
			err := s.failed
			s.mu.RUnlock()
			return nil, err
		}
		if s.eng != nil && (!write || !s.engRO) {
			s.touch()
			if !s.used.Load() {
				s.used.Store(true)
			}
			return s.eng, nil
		}
		s.mu.RUnlock()
		s.mu.Lock()
		err := s.wakeLocked(write)
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	// Only an idle close racing every attempt gets here.
	return nil, fmt.Errorf("keel: tablet of shard %d replica %d closed while opening it", s.cfg.ShardID, s.cfg.ReplicaID)
}

// wakeLocked opens the closed tablet, or reopens a read-only one for
// writing. s.mu is held exclusively, so no reader holds the engine.
func (s *StateMachine) wakeLocked(write bool) error {
	if !s.open || s.failed != nil || (s.eng != nil && (!write || !s.engRO)) {
		return nil // acquire reports it
	}
	if s.eng != nil {
		// Read-only: nothing to flush, and Pebble wrote nothing.
		if err := s.eng.Close(); err != nil {
			return err
		}
		s.eng, s.engRO = nil, false
	}
	o := s.cfg.Engine
	if write {
		o.Identity = &engine.Identity{ShardID: s.cfg.ShardID, ReplicaID: s.cfg.ReplicaID}
	} else {
		o.ReadOnly = true
	}
	start := time.Now()
	eng, err := engine.OpenRoot(s.cfg.Dir, o)
	if err != nil {
		return err
	}
	if write {
		defer func() { s.reopenCost.Store(int64(time.Since(start))) }()
		// Idle-closed or never opened since a lazy Open (a restart):
		// either way a write paid a reopen (engine.Shared.ReserveIdleClose
		// stops idle closes while such reopens come in a storm).
		if sh := s.cfg.Engine.Shared; sh != nil {
			sh.NoteWritableReopen()
		}
	}
	if err := s.checkIdentity(eng, write); err != nil {
		_ = eng.Close()
		return err
	}
	// The state Dragonboat was told of (the closed record at Open, or the
	// tablet when it was last closed) is the state it holds.
	applied, err := eng.AppliedIndex()
	if err != nil {
		_ = eng.Close()
		return err
	}
	if applied != s.applied.Load() {
		_ = eng.Close()
		return fmt.Errorf("%w: %s reopened at applied index %d, the state machine is at %d",
			engine.ErrCorrupt, s.cfg.Dir, applied, s.applied.Load())
	}
	s.eng, s.engRO = eng, !write
	s.used.Store(true)
	s.adaptIdleLocked()
	s.touch()
	s.armIdle()
	return nil
}

// armIdle starts the idle clock (s.mu held exclusively, or before the
// state machine is shared).
func (s *StateMachine) armIdle() {
	if !s.lazyEnabled() {
		return
	}
	if t := s.idle.Load(); t != nil {
		t.Reset(s.idleTime())
		return
	}
	t := time.AfterFunc(time.Hour, s.closeIfIdle)
	s.idle.Store(t)
	t.Reset(s.idleTime())
}

// rearm checks for idleness again after d (from the timer's goroutine).
func (s *StateMachine) rearm(d time.Duration) {
	if t := s.idle.Load(); t != nil {
		t.Reset(d)
	}
}

// closeIfIdle runs on the idle timer: it closes the tablet when nothing
// has used it for IdleClose and no snapshot pins it, else checks again
// later.
func (s *StateMachine) closeIfIdle() {
	idle := s.idleTime()
	if wait := idle - time.Since(time.Unix(0, s.lastUse.Load())); wait > 0 {
		// A check after Close finds the state machine closed and stops.
		s.rearm(wait)
		return
	}
	if !s.used.Load() && time.Since(time.Unix(0, s.lastUse.Load())) < maxIdleBackoff*s.cfg.IdleClose {
		// Opened by Open and not used yet: a host starting many shards
		// takes longer than IdleClose to start them all, and closing
		// their tablets before the first write only makes that write
		// reopen them.
		s.rearm(idle)
		return
	}
	if !s.mu.TryLock() {
		// A long read or an Update holds it: the tablet is in use.
		s.rearm(idle)
		return
	}
	defer s.mu.Unlock()
	if !s.open || s.eng == nil || s.failed != nil {
		return
	}
	if s.pinned() || time.Since(time.Unix(0, s.lastUse.Load())) < idle {
		s.rearm(idle)
		return
	}
	if shared := s.cfg.Engine.Shared; shared != nil && s.cfg.KeepOpen > 0 {
		if !shared.ReserveIdleClose(s.cfg.KeepOpen) {
			s.stats.keptOpen.Add(1)
			s.rearm(idle)
			return
		}
		defer shared.ReleaseIdleClose()
	}
	eng := s.eng
	s.eng, s.engRO = nil, false
	if err := eng.Close(); err != nil {
		// The flush of what Update applied failed: the state machine is
		// ahead of its tablet, and only a restart (replaying the Raft log
		// from what the tablet holds) can repair that.
		s.failed = fmt.Errorf("keel: close idle tablet %s: %w", s.cfg.Dir, err)
		s.log.Error("keel idle tablet close failed", "err", err)
		return
	}
	s.closedAt = time.Now()
	s.stats.idleCloses.Add(1)
}

// pinned reports whether a snapshot capture or save holds the tablet.
func (s *StateMachine) pinned() bool {
	s.capMu.Lock()
	defer s.capMu.Unlock()
	return len(s.captures) > 0 || len(s.saving) > 0 || s.tracker.Enabled()
}

// TabletOpen reports whether the replica's tablet is open now (it is
// closed while idle when Config.IdleClose is set).
func (s *StateMachine) TabletOpen() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.eng != nil
}
