package engine

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// SharedOptions sizes the resources one Shared lends to every Engine opened
// with it. The zero value gives the defaults below.
type SharedOptions struct {
	// CacheSize is the one Pebble block cache every tablet reads through.
	// Default 64 MiB: the whole host's hot blocks, not one shard's.
	CacheSize int64
	// OpenTables is the capacity of the one Pebble file cache: it bounds
	// the sstables held open across every tablet, whatever the number of
	// shards. Default 1024, far below a default RLIMIT_NOFILE of 1 Mi.
	OpenTables int
	// MemTableBudget bounds the bytes committed to memtables and not yet
	// flushed, summed over every tablet (see the package documentation,
	// "Memtable budget"). Default 64 MiB.
	MemTableBudget int64
}

const (
	defaultSharedCache    = 64 << 20
	defaultOpenTables     = 1024
	defaultMemTableBudget = 64 << 20
	// budgetLowWater is the share of the budget a budget pass flushes down
	// to: stopping just under the budget would trigger another pass a few
	// writes later.
	budgetLowWaterNum, budgetLowWaterDen = 3, 4
	// stallOverBudget is the share of the budget past it at which a commit
	// waits for the budget goroutine: without it, writers on busy cores
	// outrun a goroutine they share the cores with (measured: 200 writers
	// reached 7x an 8 MiB budget).
	stallOverBudgetDen = 8
)

// Shared is the block cache, file cache and memtable budget that many
// Engines (one per shard) share, so a host's cost grows with its data, not
// with its shard count.
//
// Invariants:
//   - memBytes is the sum of every registered engine's mem counter: every
//     change to a counter (addMem, subMem, unregister) is applied to
//     memBytes too, right after it.
//   - The cache and file cache are released once, in Close, and only when
//     no engine is registered (each open Pebble also holds its own
//     references, so a late reader can never see a freed cache).
type Shared struct {
	cache     *pebble.Cache
	fileCache *pebble.FileCache
	budget    int64

	// memBytes is Keel's count of memtable bytes not yet flushed, across
	// engines; the write path reads and adds to it without locks.
	memBytes      atomic.Int64
	budgetFlushes atomic.Uint64
	writeStalls   atomic.Uint64
	// stallAt is budget plus 1/stallOverBudgetDen of it.
	stallAt int64
	// kick wakes the budget goroutine; capacity 1, so a wake-up is never
	// lost and a writer never blocks.
	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	// mu guards engines, closed, closing and reopens.
	mu      sync.Mutex
	engines map[*Engine]struct{}
	closed  bool
	// closing counts engines an idle close has reserved (ReserveIdleClose)
	// and not yet released: they are still registered but about to go.
	closing int
	// reopens counts the writable reopens of idle-closed tablets in the
	// last reopenStormWindow (NoteWritableReopen; see ReserveIdleClose).
	reopens reopenCounter

	// passMu guards pass, the budget pass stalled writers wait for.
	passMu sync.Mutex
	pass   *budgetPass

	// compactions is every tablet's Pebble compaction scheduler's
	// periodic re-check, one for all (compactsched.go).
	compactions compactionPool

	// clock, when set (tests), is the reopen storm guard's clock.
	clock func() time.Time
}

// budgetPass is one round of the budget goroutine; done is closed when it
// ends, after which stuck says whether it found nothing it could flush.
type budgetPass struct {
	done  chan struct{}
	stuck bool
}

// SharedStats is a point-in-time view of a Shared.
type SharedStats struct {
	// Engines is the number of engines open on it.
	Engines int `json:"engines"`
	// MemTableBytes is Keel's count of bytes committed and not yet flushed,
	// summed over engines: what the budget is enforced on.
	MemTableBytes int64 `json:"memtable_bytes"`
	// MemTableAllocated is Pebble's figure for the memtable arenas the
	// engines have allocated (Metrics().MemTable.Size, summed). Arenas are
	// allocated whole, so this is at least 256 KiB per engine even when
	// MemTableBytes is zero; untouched arena pages cost address space, not
	// resident memory.
	MemTableAllocated uint64 `json:"memtable_allocated"`
	// MemTableBudget is the configured budget.
	MemTableBudget int64 `json:"memtable_budget"`
	// BudgetFlushes counts the engine flushes the budget started.
	BudgetFlushes uint64 `json:"budget_flushes"`
	// WriteStalls counts commits that waited for the budget goroutine
	// because the total passed the budget by more than an eighth.
	WriteStalls uint64 `json:"write_stalls"`
}

// NewShared creates the shared resources and starts the goroutine that
// enforces the memtable budget. Close it after every Engine using it.
func NewShared(o SharedOptions) (*Shared, error) {
	if o.CacheSize < 0 || o.OpenTables < 0 || o.MemTableBudget < 0 {
		return nil, fmt.Errorf("keel/engine: negative shared option in %+v", o)
	}
	if o.CacheSize == 0 {
		o.CacheSize = defaultSharedCache
	}
	if o.OpenTables == 0 {
		o.OpenTables = defaultOpenTables
	}
	if o.MemTableBudget == 0 {
		o.MemTableBudget = defaultMemTableBudget
	}
	shards := runtime.GOMAXPROCS(0)
	if shards > o.OpenTables {
		shards = o.OpenTables
	}
	s := &Shared{
		cache:     pebble.NewCache(o.CacheSize),
		fileCache: pebble.NewFileCache(shards, o.OpenTables),
		budget:    o.MemTableBudget,
		stallAt:   o.MemTableBudget + o.MemTableBudget/stallOverBudgetDen,
		pass:      &budgetPass{done: make(chan struct{})},
		kick:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		engines:   make(map[*Engine]struct{}),
	}
	go s.run()
	return s, nil
}

// Close releases the shared resources. Every Engine opened on s must be
// closed first; otherwise Close returns ErrSharedInUse and changes nothing.
// It is safe to call more than once.
func (s *Shared) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	if n := len(s.engines); n > 0 {
		s.mu.Unlock()
		return fmt.Errorf("%w: %d engines open", ErrSharedInUse, n)
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.fileCache.Unref()
	s.cache.Unref()
	return nil
}

// Stats returns the shared counters. It reads every engine's Pebble
// metrics (for MemTableAllocated), so it costs a few microseconds per
// engine: about 14 ms at 1,000 engines. MemTableBytes is the cheap part.
func (s *Shared) Stats() SharedStats {
	engines := s.snapshotEngines()
	st := SharedStats{
		Engines:        len(engines),
		MemTableBytes:  s.memBytes.Load(),
		MemTableBudget: s.budget,
		BudgetFlushes:  s.budgetFlushes.Load(),
		WriteStalls:    s.writeStalls.Load(),
	}
	for _, e := range engines {
		st.MemTableAllocated += e.memAllocated()
	}
	return st
}

// MemTableBytes returns Stats().MemTableBytes, Keel's count of bytes
// committed and not yet flushed over every engine: one atomic load.
func (s *Shared) MemTableBytes() int64 { return s.memBytes.Load() }

func (s *Shared) register(e *Engine) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrSharedClosed
	}
	s.engines[e] = struct{}{}
	return nil
}

// unregister removes e and takes its remaining count out of the total.
func (s *Shared) unregister(e *Engine) {
	s.mu.Lock()
	delete(s.engines, e)
	s.mu.Unlock()
	s.memBytes.Add(-e.mem.Swap(0))
}

// ReserveIdleClose reports whether one more engine may close for
// idleness while more than keepOpen stay open, and if so reserves that
// close: the caller closes its engine and then calls ReleaseIdleClose.
// Reserving under the lock keeps two idle closes racing each other from
// both seeing keepOpen+1 open engines and taking the count below
// keepOpen.
//
// It also refuses while a reopen storm is on: at least keepOpen writable
// reopens of idle-closed tablets (NoteWritableReopen) in the last
// reopenStormWindow. A host whose writes reach more tablets than
// keepOpen in turn (a restart, then writes to every shard) would
// otherwise close each between two of its writes and reopen it for the
// next, about six fsyncs on Dragonboat's apply worker each time: measured
// at 1,000 shards, the writes that followed such a wave fell to 37-192/s.
// While the storm lasts every tablet stays open, which is what a write
// load on every shard holds open anyway; once it passes, idle tablets
// close again.
func (s *Shared) ReserveIdleClose(keepOpen int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.engines)-s.closing <= keepOpen {
		return false
	}
	if s.reopens.count(s.now()) >= keepOpen {
		return false
	}
	s.closing++
	return true
}

// NoteWritableReopen records that an idle-closed tablet was reopened for
// writing (see ReserveIdleClose).
func (s *Shared) NoteWritableReopen() {
	s.mu.Lock()
	s.reopens.add(s.now())
	s.mu.Unlock()
}

// now is the clock of the reopen storm guard; tests set clock.
func (s *Shared) now() time.Time {
	if s.clock != nil {
		return s.clock()
	}
	return time.Now()
}

// reopenStormWindow is how far back ReserveIdleClose counts reopens.
const reopenStormWindow = 10 * time.Second

// reopenCounter counts events over the last reopenStormWindow in two
// buckets of that width: the current one whole and the previous one in
// proportion to the part of it still inside the window.
type reopenCounter struct {
	start     time.Time // start of the current bucket
	cur, prev int
}

func (c *reopenCounter) roll(now time.Time) {
	if c.start.IsZero() {
		c.start = now
		return
	}
	for now.Sub(c.start) >= reopenStormWindow {
		c.prev, c.cur = c.cur, 0
		c.start = c.start.Add(reopenStormWindow)
		if now.Sub(c.start) >= reopenStormWindow {
			// A whole window passed with nothing: start afresh.
			c.prev, c.start = 0, now
		}
	}
}

func (c *reopenCounter) add(now time.Time) {
	c.roll(now)
	c.cur++
}

func (c *reopenCounter) count(now time.Time) int {
	c.roll(now)
	past := reopenStormWindow - now.Sub(c.start)
	return c.cur + int(int64(c.prev)*int64(past)/int64(reopenStormWindow))
}

// ReleaseIdleClose ends a reservation ReserveIdleClose granted, once the
// engine is closed (or its close was abandoned).
func (s *Shared) ReleaseIdleClose() {
	s.mu.Lock()
	s.closing--
	s.mu.Unlock()
}

func (s *Shared) snapshotEngines() []*Engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Engine, 0, len(s.engines))
	for e := range s.engines {
		out = append(out, e)
	}
	return out
}

// addMem adds n to e's count and the total, and wakes the budget goroutine
// when the total is over budget. Under the budget it is the write path's
// only cost: two atomic adds and a compare. Well over it, the committing
// goroutine waits for budget passes until the total is back under the
// stall mark, so the bound holds however many writers there are; it stops
// waiting when a pass finds nothing it can flush (every flush failing),
// rather than hang a writer on a budget nobody can meet.
func (s *Shared) addMem(e *Engine, n int64) {
	e.mem.Add(n)
	total := s.memBytes.Add(n)
	if total <= s.budget {
		return
	}
	s.wake()
	if total <= s.stallAt {
		return
	}
	s.writeStalls.Add(1)
	for s.memBytes.Load() > s.stallAt {
		s.passMu.Lock()
		p := s.pass
		s.passMu.Unlock()
		s.wake()
		select {
		case <-p.done:
			if p.stuck {
				return
			}
		case <-s.stop:
			return
		}
	}
}

func (s *Shared) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// endPass ends the current budget pass, releasing writers waiting on it.
func (s *Shared) endPass(stuck bool) {
	s.passMu.Lock()
	p := s.pass
	s.pass = &budgetPass{done: make(chan struct{})}
	s.passMu.Unlock()
	p.stuck = stuck
	close(p.done)
}

// subMem takes up to n off e's count (never below zero), for memtable bytes
// Pebble reports flushed. The clamp absorbs the difference between Keel's
// estimate and Pebble's in-memory size.
func (s *Shared) subMem(e *Engine, n int64) {
	for {
		cur := e.mem.Load()
		d := min(cur, n)
		if d <= 0 {
			return
		}
		if e.mem.CompareAndSwap(cur, cur-d) {
			s.memBytes.Add(-d)
			return
		}
	}
}

func (s *Shared) run() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		}
		s.enforce()
	}
}

// enforce flushes the engines holding the most unflushed bytes until the
// total is back under the low-water mark, then waits for those flushes.
// Flushes run on Pebble's goroutines, so the picked engines flush in
// parallel; an engine whose flush fails or that closes is skipped. Each
// round ends a pass (see addMem).
func (s *Shared) enforce() {
	low := s.budget * budgetLowWaterNum / budgetLowWaterDen
	for s.memBytes.Load() > s.budget {
		engines := s.snapshotEngines()
		sizes := make(map[*Engine]int64, len(engines))
		for _, e := range engines {
			sizes[e] = e.mem.Load()
		}
		slices.SortFunc(engines, func(a, b *Engine) int { return cmp.Compare(sizes[b], sizes[a]) })
		projected := s.memBytes.Load()
		var waits []flushWait
		for _, e := range engines {
			if projected <= low || sizes[e] <= 0 {
				break
			}
			w, ok := e.startFlush()
			if !ok {
				continue
			}
			waits = append(waits, w)
			projected -= sizes[e]
		}
		if len(waits) == 0 {
			s.endPass(true)
			return
		}
		s.budgetFlushes.Add(uint64(len(waits)))
		ok := 0
		for _, w := range waits {
			switch err := w.wait(s.stop); {
			case err == nil:
				ok++
			case errors.Is(err, errStopped):
				s.endPass(true)
				return
			}
		}
		s.endPass(ok == 0)
	}
	s.endPass(false)
}
