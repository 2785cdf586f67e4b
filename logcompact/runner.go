package logcompact

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Runner runs the ticks of many Compactors (a host's replicas) from one
// goroutine and one ticker, instead of a goroutine and a ticker per
// Compactor (Run). Every Interval it looks at each Compactor's log range
// (quiet): a quiet one costs nothing more, and one with work to do (a
// reclaim pending, a step perhaps due) gets its tick on a goroutine of its
// own, so that one replica's snapshot or LogDB compaction never delays
// another's. A Compactor whose previous tick is still running is skipped.
// With a thousand idle replicas this is a thousand range reads a second
// rather than a thousand timer wake-ups and goroutine switches.
//
// A Compactor's shard stopping (ErrStopped) removes it. Add and Remove may
// be called from any goroutine, before or during Run.
type Runner struct {
	interval time.Duration

	// mu guards comps: each Compactor added and not removed, with its
	// tick-in-flight flag (set and cleared only by Run's goroutine and the
	// tick goroutine it started, under mu).
	mu    sync.Mutex
	comps map[*Compactor]*bool
}

// NewRunner returns a Runner ticking every interval (default 1 s).
func NewRunner(interval time.Duration) *Runner {
	if interval <= 0 {
		interval = time.Second
	}
	return &Runner{interval: interval, comps: map[*Compactor]*bool{}}
}

// Add starts ticking c at the Runner's next round.
func (r *Runner) Add(c *Compactor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.comps[c]; !ok {
		r.comps[c] = new(bool)
	}
}

// Remove stops ticking c; a tick of c already running finishes.
func (r *Runner) Remove(c *Compactor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.comps, c)
}

// Len returns how many Compactors the Runner ticks.
func (r *Runner) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.comps)
}

// Run ticks every Compactor added until ctx ends, then waits for the ticks
// it started and returns ctx's error. Errors other than ErrStopped are
// logged and retried at the next round, as in Compactor.Run.
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var idle []*Compactor
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		idle = r.ready(idle[:0])
		for _, c := range idle {
			look, err := c.lookQuiet()
			if err == nil && look.quiet {
				err = c.quietTick(look)
			}
			if err == nil && look.quiet {
				r.done(c)
				continue
			}
			if err != nil {
				r.failed(ctx, c, err)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := c.tick(ctx)
				if err != nil {
					r.failed(ctx, c, err)
					return
				}
				r.done(c)
			}()
		}
	}
}

// ready appends to out every Compactor without a tick in flight and marks
// them in flight.
func (r *Runner) ready(out []*Compactor) []*Compactor {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c, busy := range r.comps {
		if !*busy {
			*busy = true
			out = append(out, c)
		}
	}
	return out
}

// done clears c's in-flight mark (if c is still added).
func (r *Runner) done(c *Compactor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if busy, ok := r.comps[c]; ok {
		*busy = false
	}
}

// failed handles a tick's error: a stopped shard's Compactor is removed,
// any other error is logged and the next round retries.
func (r *Runner) failed(ctx context.Context, c *Compactor, err error) {
	if errors.Is(err, ErrStopped) {
		r.Remove(c)
		c.log.Info("log compactor stopped: the replica is gone", "err", err)
		return
	}
	r.done(c)
	if ctx.Err() == nil {
		c.log.Warn("log compaction", "err", err)
	}
}
