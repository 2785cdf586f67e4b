package logcompact

import "sync"

// AppliedIndexer is a replica's state machine as far as a quiet Compactor
// cares: the last Raft index applied to it. Implementations must be safe
// for concurrent use and cheap (an atomic load).
type AppliedIndexer interface {
	AppliedIndex() uint64
}

// quietRangeTicks is how many ticks of a quiet Compactor with an
// AppliedIndexer pass between two looks at its log's range.
const quietRangeTicks = 10

// quietState records the last tick that found nothing to do: no reclaim
// pending and no step due. A tick that finds the log's range unchanged
// has nothing to do either: due depends only on the entries in the range,
// and a reclaim becomes pending only when the first index moves. So an
// idle replica's tick costs one look at the range (a map lookup and a
// lock in Dragonboat's NodeHost), and with an AppliedIndexer one atomic
// load on nine ticks out of ten: the range moves without the applied
// index only when the log is compacted (a snapshot request, which
// clears the state when it goes through the Compactor, else seen at the
// next look at the range) or when entries are appended and not yet
// applied (applied soon after, or, on a replica cut off from its leader,
// bounded by Raft's in-flight limits).
//
// Invariant: ok is false until a tick with nothing to do, and again after
// any Step, Reclaim or snapshot request through the Compactor.
type quietState struct {
	// mu guards the fields below.
	mu          sync.Mutex
	ok          bool
	first, last uint64 // the log's range that tick read before it looked
	applied     uint64 // the applied index that tick read before the range
	skipped     int    // ticks since the range was last read
}

// quietLook is what one tick read: the applied index (when there is an
// AppliedIndexer), then the range unless skipped.
type quietLook struct {
	quiet       bool // nothing to do at this tick
	ranged      bool // the range was read (first and last are set)
	applied     uint64
	first, last uint64
}

func (q *quietState) clear() {
	q.mu.Lock()
	q.ok = false
	q.mu.Unlock()
}

// mark records that a tick which read look before it looked found nothing
// to do. A range or applied index that changed meanwhile differs from it
// at the next tick, which then looks again.
func (q *quietState) mark(look quietLook) {
	if !look.ranged {
		return
	}
	q.mu.Lock()
	q.ok, q.first, q.last, q.applied, q.skipped = true, look.first, look.last, look.applied, 0
	q.mu.Unlock()
}

// lookQuiet reads what the quiet state is compared with and says whether
// the Compactor is quiet. It never waits for stepMu.
func (c *Compactor) lookQuiet() (quietLook, error) {
	var look quietLook
	if c.cfg.Applied != nil {
		look.applied = c.cfg.Applied.AppliedIndex()
		q := &c.quiet
		q.mu.Lock()
		skip := q.ok && q.applied == look.applied && q.skipped < quietRangeTicks-1
		if skip {
			q.skipped++
		}
		q.mu.Unlock()
		if skip {
			look.quiet = true
			return look, nil
		}
	}
	r, err := c.reader()
	if err != nil {
		return look, err
	}
	look.ranged = true
	look.first, look.last = r.GetRange()
	q := &c.quiet
	q.mu.Lock()
	defer q.mu.Unlock()
	look.quiet = q.ok && q.first == look.first && q.last == look.last
	if look.quiet {
		q.skipped, q.applied = 0, look.applied
	}
	return look, nil
}

// quietTick is a tick of a quiet Compactor: it counts it and, when it read
// the range, takes the disk figure from the latest measurement another
// Compactor on the same directories took. It walks the directories only
// when none ever did: while every replica is quiet the Raft directory
// does not change, and a Compactor whose log moves measures at most every
// diskRefreshIntervals.
func (c *Compactor) quietTick(look quietLook) error {
	c.statsMu.Lock()
	c.stats.QuietTicks++
	c.statsMu.Unlock()
	if !look.ranged {
		return nil
	}
	n, at, ok := lastSharedAllocatedBytes(c.cfg.Dirs...)
	if !ok {
		return c.refreshDisk(diskRefreshIntervals)
	}
	c.statsMu.Lock()
	if at.After(c.stats.DiskMeasured) {
		c.stats.DiskBytes, c.stats.DiskMeasured = n, at
	}
	c.statsMu.Unlock()
	return nil
}
