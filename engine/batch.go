package engine

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Batch collects writes to commit atomically with an applied index. Reads
// through the batch see its own earlier writes, which is what lets a Raft
// batch of several commands (and a transaction's preconditions) apply in
// order inside one Pebble batch. A Batch is used by one goroutine.
type Batch struct {
	b   *pebble.Batch
	e   *Engine
	buf []byte
	// rec, when set, is told of every user write before it enters b.
	rec Recorder
}

// Get reads user key k through the batch, returning ErrNotFound when absent.
func (b *Batch) Get(k []byte) ([]byte, error) {
	b.buf = userKey(b.buf, k)
	return getCopy(b.b, b.buf)
}

// Put sets user key k to v.
func (b *Batch) Put(k, v []byte) error {
	if b.rec != nil {
		b.rec.Key(k)
	}
	b.buf = userKey(b.buf, k)
	return b.b.Set(b.buf, v, nil)
}

// Delete removes user key k.
func (b *Batch) Delete(k []byte) error {
	if b.rec != nil {
		b.rec.Key(k)
	}
	b.buf = userKey(b.buf, k)
	return b.b.Delete(b.buf, nil)
}

// DeleteRange removes every user key in [start, end). A nil end means the end
// of user data.
func (b *Batch) DeleteRange(start, end []byte) error {
	if end != nil && bytes.Compare(start, end) >= 0 {
		return ErrInvalidRange
	}
	if b.rec != nil {
		b.rec.Range(start, end)
	}
	return b.b.DeleteRange(lowerBound(start), upperBound(end), nil)
}

// SetAppliedIndex records the Raft index the batch brings the image up to.
func (b *Batch) SetAppliedIndex(index uint64) error {
	return b.b.Set(keyApplied, encodeUint64(index), nil)
}

// memEntryOverhead estimates the bytes a memtable spends per entry beyond
// the batch's own encoding (skiplist node and links, sequence trailer). It
// is deliberately on the low side: Keel's count is corrected down by the
// exact in-memory size of each flushed memtable and clamped at zero, so an
// underestimate heals itself while an overestimate would pile up.
const memEntryOverhead = 24

// Commit applies the batch atomically. Without sync it goes to the
// memtable only, and becomes durable at the next Engine.Sync (or any
// flush). With sync it is durable when Commit returns: a flush without a
// WAL, a WAL fsync with Options.WAL.
func (b *Batch) Commit(sync bool) error {
	if b.e.closed.Load() {
		return ErrClosed
	}
	opts := pebble.NoSync
	if sync && b.e.wal {
		opts = pebble.Sync
	}
	if err := b.b.Commit(opts); err != nil {
		return fmt.Errorf("keel/engine: commit: %w", err)
	}
	b.e.committed(b.b.Len() + memEntryOverhead*int(b.b.Count()))
	if sync && !b.e.wal {
		return b.e.Flush()
	}
	return nil
}

// Len is the size of the batch's encoded writes in bytes.
func (b *Batch) Len() int { return b.b.Len() }

// Close releases the batch. It must be called whether or not it committed.
func (b *Batch) Close() error { return b.b.Close() }
