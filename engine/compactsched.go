package engine

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Pebble asks a CompactionScheduler for permission before every automatic
// or manual compaction. Its default (pebble.ConcurrencyLimitScheduler) is
// one per database and runs a goroutine with a 100 ms ticker for the
// database's whole life, to notice when the database may run more
// compactions than it did: with a thousand idle tablets that is 10,000
// wake-ups a second doing nothing. Keel gives every tablet a
// tabletCompactions instead, with the default's rule (a tablet runs as
// many compactions at once as Pebble's GetAllowedWithoutPermission allows,
// no host-wide cap), and one compactionPool per Shared does the periodic
// re-check only for the tablets that are waiting for a grant. An idle host
// has no such tablet, so no ticker runs at all.
//
// When a tablet waits: Pebble asks TrySchedule, is refused (the tablet is
// at its limit), and remembers the compaction it picked; it then asks no
// more until the scheduler calls Schedule. The default re-checks on three
// occasions, and so does Keel: when one of the tablet's compactions ends
// (Done, inline, as the default does), when a flush may have raised the
// limit (UpdateGetAllowedWithoutPermission: Pebble holds the database's
// mutex there, so the grant runs on the pool's goroutine), and every
// 100 ms while the tablet waits (the pool's ticker; the limit can also
// rise when a manual compaction is queued).

// compactionPollInterval is the default scheduler's sampling period, kept
// for waiting tablets.
const compactionPollInterval = 100 * time.Millisecond

// compactionPool re-checks waiting tablets for the tablets of one Shared.
// Its zero value is ready; its goroutine runs only while a tablet waits.
type compactionPool struct {
	// mu guards waiting and running.
	mu sync.Mutex
	// waiting are the tablets that may have a compaction waiting for a
	// grant.
	waiting map[*tabletCompactions]struct{}
	// running is true while the pool's goroutine runs; it ends when
	// waiting is empty.
	running bool
	// kick asks the goroutine for a pass now (capacity 1).
	kick chan struct{}
}

// scheduler returns a new CompactionScheduler for one tablet's Pebble.
func (p *compactionPool) scheduler() *tabletCompactions {
	t := &tabletCompactions{pool: p}
	t.mu.grantDone = sync.NewCond(&t.mu.Mutex)
	return t
}

// wait adds t to the tablets the pool re-checks and, with now, asks for a
// pass at once.
func (p *compactionPool) wait(t *tabletCompactions, now bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiting == nil {
		p.waiting = make(map[*tabletCompactions]struct{})
		p.kick = make(chan struct{}, 1)
	}
	p.waiting[t] = struct{}{}
	if !p.running {
		p.running = true
		go p.run()
	}
	if now {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// forget removes t (unregistered) from the waiting set.
func (p *compactionPool) forget(t *tabletCompactions) {
	p.mu.Lock()
	delete(p.waiting, t)
	p.mu.Unlock()
}

func (p *compactionPool) run() {
	tick := time.NewTicker(compactionPollInterval)
	defer tick.Stop()
	for {
		p.mu.Lock()
		kick := p.kick
		p.mu.Unlock()
		select {
		case <-tick.C:
		case <-kick:
		}
		p.mu.Lock()
		ts := make([]*tabletCompactions, 0, len(p.waiting))
		for t := range p.waiting {
			ts = append(ts, t)
		}
		p.mu.Unlock()
		for _, t := range ts {
			if !t.grant() {
				p.mu.Lock()
				delete(p.waiting, t)
				p.mu.Unlock()
			}
		}
		p.mu.Lock()
		if len(p.waiting) == 0 {
			// A wait that comes after this sees running false and starts
			// a new goroutine.
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// tabletCompactions is one tablet's pebble.CompactionScheduler and the
// grant handle of its compactions: pebble.ConcurrencyLimitScheduler's
// rule without its goroutine.
//
// Invariant: mu.running is the number of compactions granted and not yet
// Done; grants happen only with mu.granting set, so two grant loops never
// interleave.
type tabletCompactions struct {
	pool *compactionPool
	// db is set by Register, before any other call.
	db pebble.DBForCompaction

	mu struct {
		// Mutex guards the fields below. Lock order: Pebble's database
		// mutex, then this, then the pool's.
		sync.Mutex
		running      int
		unregistered bool
		// granting is true while a grant loop runs (without the mutex:
		// it calls into the database); grantDone signals its end.
		granting  bool
		grantDone *sync.Cond
		// lastAllowed is GetAllowedWithoutPermission when last sampled.
		lastAllowed int
	}
}

var (
	_ pebble.CompactionScheduler   = (*tabletCompactions)(nil)
	_ pebble.CompactionGrantHandle = (*tabletCompactions)(nil)
)

// Register implements pebble.CompactionScheduler.
func (t *tabletCompactions) Register(_ int, db pebble.DBForCompaction) { t.db = db }

// Unregister implements pebble.CompactionScheduler: no grant runs after it
// returns.
func (t *tabletCompactions) Unregister() {
	t.mu.Lock()
	t.mu.unregistered = true
	for t.mu.granting {
		t.mu.grantDone.Wait()
	}
	t.mu.Unlock()
	t.pool.forget(t)
}

// TrySchedule implements pebble.CompactionScheduler. Pebble calls it
// holding the database's mutex; a refused tablet waits in the pool.
func (t *tabletCompactions) TrySchedule() (bool, pebble.CompactionGrantHandle) {
	t.mu.Lock()
	if t.mu.unregistered {
		t.mu.Unlock()
		return false, nil
	}
	t.mu.lastAllowed = t.db.GetAllowedWithoutPermission()
	if t.mu.lastAllowed > t.mu.running {
		t.mu.running++
		t.mu.Unlock()
		return true, t
	}
	t.mu.Unlock()
	t.pool.wait(t, false)
	return false, nil
}

// UpdateGetAllowedWithoutPermission implements pebble.CompactionScheduler:
// Pebble calls it after a flush, holding the database's mutex, so a raised
// limit is granted on the pool's goroutine.
func (t *tabletCompactions) UpdateGetAllowedWithoutPermission() {
	allowed := t.db.GetAllowedWithoutPermission()
	t.mu.Lock()
	raised := allowed > t.mu.lastAllowed && !t.mu.unregistered
	t.mu.lastAllowed = allowed
	t.mu.Unlock()
	if raised {
		t.pool.wait(t, true)
	}
}

// Started, MeasureCPU and CumulativeStats implement
// pebble.CompactionGrantHandle; Keel neither paces nor measures.
func (t *tabletCompactions) Started()                                          {}
func (t *tabletCompactions) MeasureCPU(pebble.CompactionGoroutineKind)         {}
func (t *tabletCompactions) CumulativeStats(pebble.CompactionGrantHandleStats) {}

// Done implements pebble.CompactionGrantHandle: Pebble calls it without
// locks when a granted compaction ends; the freed slot is granted at once
// to a waiting compaction, as the default does.
func (t *tabletCompactions) Done() {
	t.mu.Lock()
	t.mu.running--
	t.mu.Unlock()
	if t.grant() {
		t.pool.wait(t, false)
	}
}

// grant lets the database start waiting compactions up to its limit. It
// reports whether the tablet may still have one waiting (it was at its
// limit), so the pool keeps re-checking it. It must be called without the
// database's mutex.
func (t *tabletCompactions) grant() bool {
	t.mu.Lock()
	for t.mu.granting {
		t.mu.grantDone.Wait()
	}
	if t.mu.unregistered {
		t.mu.Unlock()
		return false
	}
	t.mu.lastAllowed = t.db.GetAllowedWithoutPermission()
	toGrant := t.mu.lastAllowed - t.mu.running
	if toGrant <= 0 {
		t.mu.Unlock()
		return true
	}
	t.mu.granting = true
	t.mu.Unlock()
	stillWaiting := false
	for toGrant > 0 {
		// GetWaitingCompaction first, as the default does, so no
		// compaction is picked that cannot run.
		if waiting, _ := t.db.GetWaitingCompaction(); !waiting {
			break
		}
		if !t.db.Schedule(t) {
			break
		}
		t.mu.Lock()
		t.mu.running++
		t.mu.Unlock()
		toGrant--
		if toGrant == 0 {
			// At the limit with a compaction maybe still waiting: Done or
			// the pool grants it later.
			stillWaiting = true
		}
	}
	t.mu.Lock()
	t.mu.granting = false
	t.mu.grantDone.Broadcast()
	t.mu.Unlock()
	return stillWaiting
}
