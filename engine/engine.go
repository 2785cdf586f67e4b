package engine

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Engine is one open Pebble image holding a replica's state.
//
// Invariants:
//   - The applied index is written in the same Pebble batch as the data it
//     covers, so every state Pebble can recover has a matching index.
//   - Commits made through Batch never lower the applied index; the caller
//     (sm) only sets it to the index of the last entry it applied.
//   - User keys live under the 0x01 tag and metadata under 0x00; no
//     user-supplied bytes are ever written outside the 0x01 namespace.
type Engine struct {
	db     *pebble.DB
	dir    string
	fs     vfs.FS
	closed atomic.Bool
}

// Open opens (creating if needed) the Pebble database in dir. Most callers
// want OpenRoot, which picks the live image under a replica's root.
func Open(dir string, o Options) (*Engine, error) {
	po, release := o.pebbleOptions()
	defer release()
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("keel/engine: open %s: %w", dir, err)
	}
	e := &Engine{db: db, dir: dir, fs: po.FS}
	if !o.ReadOnly {
		if err := e.ensureFormat(); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	return e, nil
}

func (e *Engine) ensureFormat() error {
	v, closer, err := e.db.Get(keyFormat)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return e.db.Set(keyFormat, []byte{FormatVersion}, pebble.Sync)
	case err != nil:
		return fmt.Errorf("keel/engine: read format: %w", err)
	}
	defer closer.Close()
	if len(v) != 1 || v[0] > FormatVersion {
		return fmt.Errorf("%w: data format %x is not one this Keel reads (max %d)", ErrCorrupt, v, FormatVersion)
	}
	return nil
}

// Dir is the image directory this engine has open.
func (e *Engine) Dir() string { return e.dir }

// Close closes the database. It is safe to call more than once.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	return e.db.Close()
}

// DB exposes the Pebble handle for checkpoints, metrics and offline tools.
// Callers must not write user or metadata keys through it.
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
	return e.db.Set(keyIdentity, encodeIdentity(id), pebble.Sync)
}

// Sync makes every batch committed before the call durable: it appends a
// synced empty record to the WAL, and Pebble's WAL fsync covers everything
// written before it.
func (e *Engine) Sync() error {
	if e.closed.Load() {
		return ErrClosed
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
// must not exist. With flushWAL the WAL is synced first, so the image covers
// every batch committed before the call (and may hold later ones).
func (e *Engine) Checkpoint(destDir string, flushWAL bool) error {
	if e.closed.Load() {
		return ErrClosed
	}
	var opts []pebble.CheckpointOption
	if flushWAL {
		opts = append(opts, pebble.WithFlushedWAL())
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
