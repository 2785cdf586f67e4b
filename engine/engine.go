package engine

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Engine is one open Pebble image holding a replica's state: a tablet.
//
// Invariants:
//   - The applied index is written in the same Pebble batch as the data it
//     covers, so every state Pebble can recover has a matching index.
//   - Commits made through Batch never lower the applied index; the caller
//     (sm) only sets it to the index of the last entry it applied.
//   - User keys live under the 0x01 tag and metadata under 0x00; no
//     user-supplied bytes are ever written outside the 0x01 namespace.
//   - Without a WAL (the default), what survives a crash is exactly the
//     state at the last completed flush: flushed <= commits, and a flush
//     that returned covered every commit counted before it began.
type Engine struct {
	db       *pebble.DB
	dir      string
	fs       vfs.FS
	wal      bool
	readOnly bool
	shared   *Shared
	// ownsShared is set when Open made shared for this engine alone
	// (Options.Shared nil); Close then closes it.
	ownsShared bool
	// recordClose is set for a writable WAL-less engine on a Root's live
	// image: a clean Close then writes the root's closed record.
	recordClose bool

	// commits counts the writes committed through the engine; flushed is
	// the value of commits that the last successful flush covered. Equal
	// means Sync has nothing to do.
	commits, flushed atomic.Uint64
	// mem is the memtable bytes committed and not yet flushed, as counted
	// for the shared budget (see Shared.addMem).
	mem atomic.Int64
	// memFlushed is Pebble's in-memory size of every memtable flushed since
	// Open, the truth the estimate in mem is checked against in tests.
	memFlushed atomic.Uint64
	// failures carries Pebble's flush failures to waiting flushes.
	failures flushFailures

	// life is held shared while a flush is being started and exclusively
	// by Close, so Pebble is never asked to flush a closed database (it
	// panics). closed is set under it; closing is closed after Close's
	// last flush, releasing anyone still waiting on an earlier one.
	life    sync.RWMutex
	closed  atomic.Bool
	closing chan struct{}
}

// Open opens (creating if needed) the Pebble database in dir. Most callers
// want OpenRoot, which picks the live image under a replica's root. A
// directory written with a WAL (by an older Keel, or with Options.WAL)
// opens without one losing nothing: Pebble replays every WAL it finds and,
// on a writable open, flushes the result before Open returns.
func Open(dir string, o Options) (*Engine, error) {
	fixMallocThreshold()
	sh, owns := o.Shared, false
	if sh == nil {
		var err error
		if sh, err = NewShared(o.privateShared()); err != nil {
			return nil, err
		}
		owns = true
	}
	e := &Engine{dir: dir, wal: o.WAL, readOnly: o.ReadOnly, shared: sh, ownsShared: owns, closing: make(chan struct{})}
	fail := func(err error) (*Engine, error) {
		if owns {
			_ = sh.Close()
		}
		return nil, err
	}
	// Registered before Pebble opens, so a closed Shared is refused before
	// Pebble takes references to its caches, and a concurrent Close of the
	// Shared is refused while the open runs. life is held until e.db is
	// set: the budget goroutine skips an engine it cannot lock.
	e.life.Lock()
	if err := sh.register(e); err != nil {
		e.life.Unlock()
		return fail(err)
	}
	po := o.pebbleOptions(sh, e)
	db, err := pebble.Open(dir, po)
	if err != nil {
		e.closed.Store(true)
		e.life.Unlock()
		sh.unregister(e)
		return fail(fmt.Errorf("keel/engine: open %s: %w", dir, err))
	}
	e.db, e.fs = db, po.FS
	e.life.Unlock()
	if !o.ReadOnly {
		if err := e.ensureMeta(o.Identity); err != nil {
			_ = e.Close() // closes a private shared too
			return nil, err
		}
	}
	return e, nil
}

// ensureMeta checks the format record of a writable image and writes the
// records a fresh one lacks (format, and id when given and none is
// recorded) in one batch, made durable by one flush.
func (e *Engine) ensureMeta(id *Identity) error {
	var kvs [][2][]byte
	v, closer, err := e.db.Get(keyFormat)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		kvs = append(kvs, [2][]byte{keyFormat, {FormatVersion}})
	case err != nil:
		return fmt.Errorf("keel/engine: read format: %w", err)
	default:
		bad := len(v) != 1 || v[0] > FormatVersion
		_ = closer.Close()
		if bad {
			return fmt.Errorf("%w: data format %x is not one this Keel reads (max %d)", ErrCorrupt, v, FormatVersion)
		}
	}
	if id != nil {
		switch _, closer, err := e.db.Get(keyIdentity); {
		case errors.Is(err, pebble.ErrNotFound):
			kvs = append(kvs, [2][]byte{keyIdentity, encodeIdentity(*id)})
		case err != nil:
			return fmt.Errorf("keel/engine: read identity: %w", err)
		default:
			_ = closer.Close()
		}
	}
	if len(kvs) == 0 {
		return nil
	}
	return e.setDurably(kvs...)
}

// setDurably writes metadata records in one batch and makes them durable:
// a synced write with a WAL, a write and a flush without.
func (e *Engine) setDurably(kvs ...[2][]byte) error {
	opts := pebble.NoSync
	if e.wal {
		opts = pebble.Sync
	}
	b := e.db.NewBatch()
	defer b.Close()
	n := 0
	for _, kv := range kvs {
		if err := b.Set(kv[0], kv[1], nil); err != nil {
			return fmt.Errorf("keel/engine: write %q: %w", kv[0][2:], err)
		}
		n += len(kv[0]) + len(kv[1])
	}
	if err := b.Commit(opts); err != nil {
		return fmt.Errorf("keel/engine: write metadata: %w", err)
	}
	e.committed(n)
	if e.wal {
		return nil
	}
	return e.Flush()
}

// committed accounts for n bytes of writes just committed.
func (e *Engine) committed(n int) {
	e.commits.Add(1)
	e.shared.addMem(e, int64(n))
}

// Dir is the image directory this engine has open.
func (e *Engine) Dir() string { return e.dir }

// Close flushes a writable engine that has unflushed batches (so a clean
// shutdown replays nothing from the Raft log at restart), then closes the
// database, and the private shared resources if Open made them. It is safe
// to call more than once. A failed final flush is returned; the database is
// closed anyway and the unflushed batches are replayed from the Raft log.
func (e *Engine) Close() error {
	e.life.Lock()
	if e.closed.Load() {
		e.life.Unlock()
		return nil
	}
	var ferr error
	if !e.readOnly && e.dirty() {
		var w flushWait
		if w, ferr = e.beginFlushLocked(); ferr == nil {
			ferr = w.wait(nil)
		}
	}
	// The closed record describes the flushed state, read while nothing
	// can write (the caller has stopped writing; flushes are excluded).
	var rec closedState
	record := e.recordClose && ferr == nil
	if record {
		var rerr error
		rec, rerr = e.recordClosed()
		record = rerr == nil
	}
	e.closed.Store(true)
	close(e.closing)
	e.life.Unlock()
	err := e.db.Close()
	if record && err == nil {
		// A record that cannot be written only costs the next open its
		// shortcut (see ReadClosed), so its error is not Close's.
		_ = e.writeClosed(rec)
	}
	e.shared.unregister(e)
	if e.ownsShared {
		err = errors.Join(err, e.shared.Close())
	}
	if ferr != nil {
		return errors.Join(ferr, err)
	}
	return err
}

// DB exposes the Pebble handle for checkpoints, metrics and offline tools.
// Callers must not write user or metadata keys through it. Writes through
// it are invisible to Sync's dirty check (and a synced one fails: there is
// no WAL), so they become durable only at a flush.
func (e *Engine) DB() *pebble.DB { return e.db }

// AppliedIndex is the index last committed with the data, 0 for a new image.
func (e *Engine) AppliedIndex() (uint64, error) {
	if e.closed.Load() {
		return 0, ErrClosed
	}
	return readApplied(e.db)
}

type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func readApplied(r reader) (uint64, error) {
	v, closer, err := r.Get(keyApplied)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("keel/engine: read applied index: %w", err)
	}
	defer closer.Close()
	return decodeApplied(v)
}

// Identity returns the shard and replica recorded in the image; ok is false
// for an image that has none yet.
func (e *Engine) Identity() (id Identity, ok bool, err error) {
	if e.closed.Load() {
		return Identity{}, false, ErrClosed
	}
	v, closer, err := e.db.Get(keyIdentity)
	if errors.Is(err, pebble.ErrNotFound) {
		return Identity{}, false, nil
	}
	if err != nil {
		return Identity{}, false, fmt.Errorf("keel/engine: read identity: %w", err)
	}
	defer closer.Close()
	id, err = decodeIdentity(v)
	return id, err == nil, err
}

// SetIdentity records the shard and replica the image belongs to, durably.
func (e *Engine) SetIdentity(id Identity) error {
	if e.closed.Load() {
		return ErrClosed
	}
	return e.setDurably([2][]byte{keyIdentity, encodeIdentity(id)})
}

// Sync makes every batch committed before the call durable. Without a WAL
// it is Flush: nothing to do when nothing was committed since the last
// flush, else an sstable and a MANIFEST fsync. With Options.WAL it appends
// a synced empty record to the WAL, whose fsync covers everything written
// before it.
func (e *Engine) Sync() error {
	if e.closed.Load() {
		return ErrClosed
	}
	if !e.wal {
		return e.Flush()
	}
	if err := e.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("keel/engine: sync: %w", err)
	}
	return nil
}

// Get returns a copy of the value of user key k, or ErrNotFound.
func (e *Engine) Get(k []byte) ([]byte, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	return getCopy(e.db, userKey(nil, k))
}

func getCopy(r reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("keel/engine: get: %w", err)
	}
	out := append([]byte(nil), v...)
	return out, closer.Close()
}

// Checkpoint writes a consistent image of the database into destDir, which
// must not exist. The image covers every batch committed before the call and
// may hold later ones. Without a WAL a checkpoint holds only sstables, so it
// flushes first (an engine with nothing unflushed skips that); with one it
// syncs the WAL and Pebble copies it.
func (e *Engine) Checkpoint(destDir string) error {
	if e.closed.Load() {
		return ErrClosed
	}
	var opts []pebble.CheckpointOption
	if e.wal {
		opts = append(opts, pebble.WithFlushedWAL())
	} else if !e.readOnly {
		if err := e.Flush(); err != nil {
			return err
		}
	}
	if err := e.db.Checkpoint(destDir, opts...); err != nil {
		return fmt.Errorf("keel/engine: checkpoint to %s: %w", destDir, err)
	}
	return nil
}

// NewView returns a consistent read-only view of the current state. The
// caller must Close it.
func (e *Engine) NewView() (*View, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	return &View{snap: e.db.NewSnapshot()}, nil
}

// NewBatch starts a batch whose reads see its own writes over the current
// state.
func (e *Engine) NewBatch() *Batch {
	return &Batch{b: e.db.NewIndexedBatch(), e: e}
}

// Metrics returns Pebble's metrics for this image.
func (e *Engine) Metrics() *pebble.Metrics { return e.db.Metrics() }

// memAllocated is Pebble's size of this engine's memtable arenas, 0 once
// closed.
func (e *Engine) memAllocated() uint64 {
	e.life.RLock()
	defer e.life.RUnlock()
	if e.closed.Load() {
		return 0
	}
	return e.db.Metrics().MemTable.Size
}
