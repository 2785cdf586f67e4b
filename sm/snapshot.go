package sm

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/snapshot"
)

// snapshotCounters count snapshot work for tests, metrics and status.
type snapshotCounters struct {
	prepared, saved, saveFailed, received, receiveFailed atomic.Uint64
	// staged and stageFailed count images built while their stream
	// arrived (StageImage); adopted counts installs that published one
	// instead of reading the stream.
	staged, stageFailed, adopted atomic.Uint64
	// idleCloses counts tablets closed for idleness.
	idleCloses atomic.Uint64
	// keptOpen counts idle checks that left the tablet open because no
	// more than Config.KeepOpen tablets were open.
	keptOpen atomic.Uint64
	// lastPrepareNanos is how long the last PrepareSnapshot held Update off.
	lastPrepareNanos atomic.Int64
}

// SnapshotStats is a copy of a state machine's snapshot counters.
type SnapshotStats struct {
	// Prepared counts PrepareSnapshot calls that succeeded.
	Prepared uint64 `json:"prepared"`
	// Saved and SaveFailed count SaveSnapshot outcomes (streams and exports).
	Saved      uint64 `json:"saved"`
	SaveFailed uint64 `json:"save_failed"`
	// Received counts images installed by RecoverFromSnapshot, ReceiveFailed
	// the streams it refused or failed to install.
	Received      uint64 `json:"received"`
	ReceiveFailed uint64 `json:"receive_failed"`
	// Staged and StageFailed count images built while their stream
	// arrived; Adopted counts installs that published such an image
	// instead of writing the image again from Dragonboat's staged copy.
	Staged      uint64 `json:"staged"`
	StageFailed uint64 `json:"stage_failed"`
	Adopted     uint64 `json:"adopted"`
	// LastPrepare is how long the last PrepareSnapshot ran (Update is
	// excluded for that long).
	LastPrepare time.Duration `json:"last_prepare_ns"`
}

// SnapshotStats returns the snapshot counters.
func (s *StateMachine) SnapshotStats() SnapshotStats {
	return SnapshotStats{
		Prepared:      s.stats.prepared.Load(),
		Saved:         s.stats.saved.Load(),
		SaveFailed:    s.stats.saveFailed.Load(),
		Received:      s.stats.received.Load(),
		ReceiveFailed: s.stats.receiveFailed.Load(),
		Staged:        s.stats.staged.Load(),
		StageFailed:   s.stats.stageFailed.Load(),
		Adopted:       s.stats.adopted.Load(),
		LastPrepare:   time.Duration(s.stats.lastPrepareNanos.Load()),
	}
}

// PrepareSnapshot pins the state at the applied index (a Pebble snapshot)
// and starts recording the keys Update writes from now on. Dragonboat runs
// it with Update excluded; it costs microseconds whatever the state size.
func (s *StateMachine) PrepareSnapshot() (interface{}, error) {
	start := time.Now()
	// Held until the capture is registered: a registered capture keeps an
	// idle close away from the tablet it pins.
	eng, err := s.acquire(true)
	if err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	c, err := snapshot.Begin(eng, &s.tracker, s.cfg.Snapshot)
	if err != nil {
		return nil, err
	}
	if c.Index() != s.applied.Load() {
		c.Release()
		return nil, fmt.Errorf("%w: image applied index %d, state machine %d", engine.ErrCorrupt, c.Index(), s.applied.Load())
	}
	s.capMu.Lock()
	if s.captures == nil {
		s.captures = make(map[*snapshot.Capture]struct{})
	}
	s.captures[c] = struct{}{}
	s.capMu.Unlock()
	s.stats.prepared.Add(1)
	s.stats.lastPrepareNanos.Store(int64(time.Since(start)))
	return c, nil
}

// takeCapture removes c from the pending set; false if it was released.
func (s *StateMachine) takeCapture(c *snapshot.Capture) bool {
	s.capMu.Lock()
	defer s.capMu.Unlock()
	_, ok := s.captures[c]
	delete(s.captures, c)
	return ok
}

func (s *StateMachine) startSaving(index uint64) {
	s.capMu.Lock()
	defer s.capMu.Unlock()
	if s.saving == nil {
		s.saving = make(map[uint64]int)
	}
	s.saving[index]++
}

func (s *StateMachine) endSaving(index uint64) {
	s.capMu.Lock()
	defer s.capMu.Unlock()
	if s.saving[index]--; s.saving[index] <= 0 {
		delete(s.saving, index)
	}
}

// StreamFloor returns the lowest snapshot index that a SaveSnapshot in
// progress is writing (to a follower or an export), and whether there is
// one. Log compaction stays below it: the follower installing that image
// needs the entries right after it. It implements logcompact.StreamFloor.
func (s *StateMachine) StreamFloor() (uint64, bool) {
	s.capMu.Lock()
	defer s.capMu.Unlock()
	var floor uint64
	found := false
	for idx := range s.saving {
		if !found || idx < floor {
			floor, found = idx, true
		}
	}
	return floor, found
}

// releaseCaptures releases every capture prepared and not being saved.
func (s *StateMachine) releaseCaptures() {
	s.capMu.Lock()
	cs := s.captures
	s.captures = nil
	s.capMu.Unlock()
	for c := range cs {
		c.Release()
	}
}

// SaveSnapshot writes the exact image at the prepared index to w (see
// snapshot.Capture.Save). Updates go on while it runs.
func (s *StateMachine) SaveSnapshot(ctx interface{}, w io.Writer, done <-chan struct{}) error {
	c, ok := ctx.(*snapshot.Capture)
	if !ok {
		s.stats.saveFailed.Add(1)
		return fmt.Errorf("keel: SaveSnapshot called with %T, not a pending capture", ctx)
	}
	// Counted as saving before it leaves the pending set, so the tablet it
	// pins is never left unpinned for an idle close.
	s.startSaving(c.Index())
	defer s.endSaving(c.Index())
	if !s.takeCapture(c) {
		s.stats.saveFailed.Add(1)
		return fmt.Errorf("keel: SaveSnapshot called with %T, not a pending capture", ctx)
	}
	err := c.Save(w, snapshot.SaveConfig{
		Root:      s.root,
		Engine:    s.cfg.Engine,
		ShardID:   s.cfg.ShardID,
		ReplicaID: s.cfg.ReplicaID,
		// Exports share the path and the cap: both read the same disk.
		BytesPerSecond: s.cfg.Snapshot.StreamBytesPerSecond,
	}, done)
	if err != nil {
		s.stats.saveFailed.Add(1)
		s.log.Warn("keel snapshot save failed", "index", c.Index(), "err", err)
		return err
	}
	s.stats.saved.Add(1)
	return nil
}

// RecoverFromSnapshot installs the image in r (see snapshot.Install) and
// swaps the engine to it. Every check runs before anything live changes;
// on error the old image stays open and readable. Reads see the old image
// until the swap and the new one after it. It may go back to an older
// index (tools.ImportSnapshot forces that on purpose).
func (s *StateMachine) RecoverFromSnapshot(r io.Reader, done <-chan struct{}) error {
	err := s.recoverFromSnapshot(r, done)
	if err != nil {
		s.stats.receiveFailed.Add(1)
		s.log.Warn("keel snapshot install failed", "err", err)
		return err
	}
	s.stats.received.Add(1)
	return nil
}

func (s *StateMachine) recoverFromSnapshot(r io.Reader, done <-chan struct{}) error {
	old, err := s.acquire(true)
	if err != nil {
		return err
	}
	s.mu.RUnlock()
	name, h, err := s.installOrAdopt(r, done)
	if err != nil {
		return err
	}
	// CURRENT names the new image now; if opening it fails the replica
	// halts and the next Open comes up on it.
	eng, err := s.root.OpenImage(name, s.cfg.Engine)
	if err != nil {
		return err
	}
	s.releaseCaptures()
	s.mu.Lock()
	if s.eng != nil && s.eng != old {
		// Only Dragonboat's serialisation keeps another writer away; if
		// one got here, close what it opened rather than leak it.
		_ = s.eng.Close()
	}
	s.eng, s.engRO = eng, false
	s.applied.Store(h.ImageAppliedIndex)
	s.touch()
	s.armIdle()
	s.mu.Unlock()
	oldName := s.root.FS.PathBase(old.Dir())
	if err := old.Close(); err != nil {
		s.log.Warn("keel: close replaced image", "image", oldName, "err", err)
	}
	if err := s.root.RemoveImage(oldName); err != nil {
		// The next Open sweeps it.
		s.log.Warn("keel: remove replaced image", "image", oldName, "err", err)
	}
	s.pruneStaged(h.ImageAppliedIndex)
	s.log.Info("keel snapshot installed", "image", name, "index", h.ImageAppliedIndex, "from", h.ReplicaID)
	return nil
}
