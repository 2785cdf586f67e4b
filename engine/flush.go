package engine

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// flushFailures remembers the last flush failure Pebble reported for one
// database and wakes everyone waiting on a flush when the next one comes.
//
// Pebble's DB.Flush waits on the flushed memtable's channel, which is only
// closed once the flush succeeds; after a failure Pebble retries the flush
// in the background, indefinitely. Waiting on that channel alone would turn
// a failing disk into a Sync that never returns, so Keel also waits on this
// signal and returns the error instead.
type flushFailures struct {
	// mu guards err and sig.
	mu  sync.Mutex
	err error
	sig chan struct{}
}

// signal returns a channel closed at the next failure reported after the
// call.
func (f *flushFailures) signal() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sig == nil {
		f.sig = make(chan struct{})
	}
	return f.sig
}

func (f *flushFailures) report(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
	if f.sig != nil {
		close(f.sig)
		f.sig = nil
	}
}

func (f *flushFailures) last() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// isEmptyFlush reports Pebble's marker for a flush that wrote no sstable
// (every key in the memtable was shadowed, or it held nothing). It is not
// a failure: the memtable is gone and nothing was lost. Pebble does not
// export the error, so it is matched by its text; TestSyncCostsNothingWhenClean
// pins it.
func isEmptyFlush(err error) bool {
	return err != nil && err.Error() == "pebble: empty table"
}

// onFlushEnd is Pebble's FlushEnd callback. It runs on Pebble's flush
// goroutine with the database's mutex held: it must not call into the DB.
func (e *Engine) onFlushEnd(info pebble.FlushInfo) {
	if info.Err == nil || isEmptyFlush(info.Err) {
		e.memFlushed.Add(info.InputBytes)
		e.shared.subMem(e, int64(info.InputBytes))
		return
	}
	e.failures.report(info.Err)
}

// flushWait is one flush in progress.
type flushWait struct {
	e *Engine
	// commits is the commit count the flush covers once done is closed.
	commits uint64
	done    <-chan struct{}
	failed  <-chan struct{}
	closing <-chan struct{}
}

// wait blocks until the flush succeeds, Pebble reports a flush failure,
// the engine closes, or stop is closed (nil: never).
func (w flushWait) wait(stop <-chan struct{}) error {
	select {
	case <-w.done:
		w.e.markFlushed(w.commits)
		return nil
	case <-w.failed:
		return fmt.Errorf("keel/engine: flush %s: %w", w.e.dir, w.e.failures.last())
	case <-w.closing:
		return ErrClosed
	case <-stop:
		return errStopped
	}
}

// beginFlushLocked rotates the memtable and returns the wait for its
// flush. The caller holds e.life (either way) and has checked the engine
// is open and writable.
func (e *Engine) beginFlushLocked() (flushWait, error) {
	w := flushWait{e: e, commits: e.commits.Load(), failed: e.failures.signal(), closing: e.closing}
	done, err := e.db.AsyncFlush()
	if err != nil {
		return flushWait{}, fmt.Errorf("keel/engine: flush %s: %w", e.dir, err)
	}
	w.done = done
	return w, nil
}

// startFlush starts a flush for the memtable budget; false if the engine
// is opening, closing or closed, read-only, or Pebble refused.
func (e *Engine) startFlush() (flushWait, bool) {
	if !e.life.TryRLock() {
		return flushWait{}, false
	}
	defer e.life.RUnlock()
	if e.closed.Load() || e.readOnly {
		return flushWait{}, false
	}
	w, err := e.beginFlushLocked()
	return w, err == nil
}

func (e *Engine) markFlushed(c uint64) {
	for {
		cur := e.flushed.Load()
		if c <= cur || e.flushed.CompareAndSwap(cur, c) {
			return
		}
	}
}

func (e *Engine) dirty() bool { return e.commits.Load() != e.flushed.Load() }

// Flush writes every batch committed before the call into sstables (an
// sstable and a MANIFEST fsync), which is what makes it durable without a
// WAL. It returns at once when nothing was committed since the last
// flush, so calling it on a thousand idle engines costs a thousand atomic
// loads. A failed flush returns Pebble's error: the batches stay in the
// memtable and Pebble keeps retrying the flush in the background.
func (e *Engine) Flush() error {
	if e.readOnly {
		return pebble.ErrReadOnly
	}
	if !e.dirty() {
		return nil
	}
	e.life.RLock()
	if e.closed.Load() {
		e.life.RUnlock()
		return ErrClosed
	}
	w, err := e.beginFlushLocked()
	e.life.RUnlock()
	if err != nil {
		return err
	}
	if err := w.wait(nil); err != nil {
		if errors.Is(err, ErrClosed) {
			// Close flushed everything before it closed (or reports why not).
			return ErrClosed
		}
		return err
	}
	return nil
}
