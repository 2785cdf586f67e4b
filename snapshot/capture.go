package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/keel-db/keel/engine"
)

// Tracker records the user keys and ranges that Update writes while at
// least one capture is pending, so the capture can rewind its (later)
// checkpoint to the exact snapshot index. It is an engine.Recorder: Update
// checks Enabled once per call and, when a capture is pending, hands the
// Tracker to its engine.Batch, which reports every key and range before
// the write enters the batch, so a write that reaches Pebble is always
// recorded first, whatever operation made it.
//
// Captures Begin with Update excluded (Dragonboat's PrepareSnapshot), so a
// capture never starts in the middle of an Update call; they end on their
// own goroutine while Update runs.
type Tracker struct {
	// active is the number of pending captures; Update's fast path reads
	// only this.
	active atomic.Int32

	// mu guards logs and every touched log's contents.
	mu   sync.Mutex
	logs map[*touched]struct{}
}

var _ engine.Recorder = (*Tracker)(nil)

// touched is one capture's record of writes after its snapshot index.
//
// Invariant: unless overflow is set, every user key written (and committed
// or not) since the capture began is in keys or inside one of ranges.
type touched struct {
	keys     map[string]struct{}
	ranges   [][2][]byte
	bytes    int
	budget   int
	overflow bool
}

func (t *touched) add(n int) bool {
	if t.overflow {
		return false
	}
	t.bytes += n
	if t.bytes > t.budget {
		// Give up recording: the rewind copies every key instead.
		t.overflow = true
		t.keys, t.ranges = nil, nil
		return false
	}
	return true
}

// Enabled reports whether any capture is pending; when false Update records
// nothing.
func (t *Tracker) Enabled() bool { return t.active.Load() > 0 }

// Key records a put or delete of user key k.
func (t *Tracker) Key(k []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for l := range t.logs {
		if _, ok := l.keys[string(k)]; ok {
			continue
		}
		if l.add(len(k) + 48) {
			l.keys[string(k)] = struct{}{}
		}
	}
}

// Range records a delete of the user keys in [start, end); a nil end
// means the end of user data (the rewind copies such a range to the end).
func (t *Tracker) Range(start, end []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for l := range t.logs {
		if l.add(len(start) + len(end) + 48) {
			l.ranges = append(l.ranges, [2][]byte{append([]byte(nil), start...), append([]byte(nil), end...)})
		}
	}
}

func (t *Tracker) begin(budget int) *touched {
	l := &touched{keys: make(map[string]struct{}), budget: budget}
	t.mu.Lock()
	if t.logs == nil {
		t.logs = make(map[*touched]struct{})
	}
	t.logs[l] = struct{}{}
	t.mu.Unlock()
	t.active.Add(1)
	return l
}

// end stops recording into l. After it returns no goroutine writes to l.
func (t *Tracker) end(l *touched) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.logs[l]; ok {
		delete(t.logs, l)
		t.active.Add(-1)
	}
}

// Capture is one pending snapshot: the state at Index, pinned by a Pebble
// snapshot, plus the record of everything written since.
//
// Invariant: until Release, view holds exactly the state at index (it was
// taken with Update excluded) and log records every write after it.
type Capture struct {
	eng     *engine.Engine
	view    *engine.View
	index   uint64
	tracker *Tracker
	log     *touched
	opts    Options

	released atomic.Bool
}

// Begin starts a capture of eng at its applied index. It must run with
// Update excluded (PrepareSnapshot) and costs a Pebble snapshot (about a
// microsecond) and one read of the applied index.
func Begin(eng *engine.Engine, tr *Tracker, opts Options) (*Capture, error) {
	opts = opts.withDefaults()
	view, err := eng.NewView()
	if err != nil {
		return nil, err
	}
	index, err := view.AppliedIndex()
	if err != nil {
		_ = view.Close()
		return nil, err
	}
	return &Capture{eng: eng, view: view, index: index, tracker: tr, log: tr.begin(opts.TouchedBudget), opts: opts}, nil
}

// Index is the snapshot index: the applied index the image will hold.
func (c *Capture) Index() uint64 { return c.index }

// Release stops recording and releases the Pebble snapshot. It is safe to
// call more than once and from Close while a Save is in flight only if the
// engine is being closed anyway (Save then fails).
func (c *Capture) Release() {
	if !c.released.CompareAndSwap(false, true) {
		return
	}
	c.tracker.end(c.log)
	_ = c.view.Close()
}

// SaveConfig says where a capture builds its image and what the header
// names.
type SaveConfig struct {
	// Root is the replica root; the work dir is a tmp-* under it (on the
	// same filesystem, so the checkpoint's sstables are hard links).
	Root engine.Root
	// Engine opens the checkpoint for the rewind.
	Engine engine.Options
	// ShardID and ReplicaID go into the header.
	ShardID, ReplicaID uint64
	// BytesPerSecond caps the stream's rate (0: no cap); see
	// Options.StreamBytesPerSecond.
	BytesPerSecond int64
}

// Save builds the exact image at Index and streams it to w, then releases
// the capture. Steps: flush the engine and take a Pebble checkpoint into a
// work dir (it holds some later index X >= Index, see the package doc);
// stop recording;
// open the checkpoint and rewind every key and range written after Index to
// its value in the pinned view, and set the applied index to Index; close;
// stream the files. The work dir is removed on every path; a crash leaves a
// tmp-* that the next engine.OpenRoot sweeps.
func (c *Capture) Save(w io.Writer, cfg SaveConfig, stopc <-chan struct{}) (err error) {
	defer c.Release()
	dir := cfg.Root.TempPath("capture")
	defer func() {
		if rerr := cfg.Root.FS.RemoveAll(dir); err == nil && rerr != nil {
			err = fmt.Errorf("keel/snapshot: remove %s: %w", dir, rerr)
		}
	}()
	if err := c.BuildImage(dir, cfg.Engine); err != nil {
		return err
	}
	files, err := ListImage(cfg.Root.FS, dir)
	if err != nil {
		return err
	}
	h := Header{ShardID: cfg.ShardID, ReplicaID: cfg.ReplicaID, SnapshotIndex: c.index, ImageAppliedIndex: c.index}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if stopc != nil {
		go func() {
			select {
			case <-stopc:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	return WriteStream(throttle(ctx, w, cfg.BytesPerSecond), h, cfg.Root.FS, dir, files, stopc)
}

// BuildImage writes the exact image at Index into dir (which must not
// exist) and closes it. Recording stops when it returns.
func (c *Capture) BuildImage(dir string, eo engine.Options) (err error) {
	if c.released.Load() {
		return errors.New("keel/snapshot: capture already released")
	}
	// Checkpoint flushes first (a WAL-less engine's checkpoint holds only
	// sstables), which is what makes the image cover Index. This runs in
	// SaveSnapshot, which holds no lock: Update goes on during the flush.
	cerr := c.eng.Checkpoint(dir)
	// Every write the checkpoint can hold happened before Checkpoint
	// returned, and each was recorded before it committed.
	c.tracker.end(c.log)
	if cerr != nil {
		return cerr
	}
	eo.DisableCompactions = true
	ck, err := engine.Open(dir, eo)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := ck.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("keel/snapshot: close image: %w", cerr)
		}
	}()
	return rewind(ck, c.view, c.log, c.index)
}

// rewindBatchBytes bounds one batch of the rewind, so memory stays flat
// when a large range was deleted after the snapshot index.
const rewindBatchBytes = 4 << 20

// rewind makes ck hold exactly the state of at (whose applied index is
// index), given that the two differ only in the keys and ranges of log, or
// anywhere when log overflowed.
func rewind(ck *engine.Engine, at *engine.View, log *touched, index uint64) error {
	b := ck.NewBatch()
	defer func() { _ = b.Close() }()
	flush := func(force bool) error {
		if !force && b.Len() < rewindBatchBytes {
			return nil
		}
		if err := b.Commit(false); err != nil {
			return err
		}
		_ = b.Close()
		b = ck.NewBatch()
		return nil
	}
	copyRange := func(start, end []byte) error {
		if err := b.DeleteRange(start, end); err != nil {
			return err
		}
		var werr error
		err := at.Scan(start, end, 0, func(k, v []byte) bool {
			if werr = b.Put(k, v); werr == nil {
				werr = flush(false)
			}
			return werr == nil
		})
		if err != nil {
			return err
		}
		return werr
	}
	if log.overflow {
		if err := copyRange([]byte{}, nil); err != nil {
			return err
		}
	} else {
		for _, r := range log.ranges {
			if err := copyRange(r[0], r[1]); err != nil {
				return err
			}
		}
		for k := range log.keys {
			v, err := at.Get([]byte(k))
			switch {
			case errors.Is(err, engine.ErrNotFound):
				err = b.Delete([]byte(k))
			case err == nil:
				err = b.Put([]byte(k), v)
			}
			if err != nil {
				return err
			}
			if err := flush(false); err != nil {
				return err
			}
		}
	}
	if err := b.SetAppliedIndex(index); err != nil {
		return err
	}
	// A durable commit: without a WAL, a flush, so the image's files hold
	// the rewound state before they are streamed.
	if err := b.Commit(true); err != nil {
		return err
	}
	got, err := ck.AppliedIndex()
	if err != nil {
		return err
	}
	if got != index {
		return fmt.Errorf("%w: rewound image holds %d, want %d", ErrInexact, got, index)
	}
	return nil
}
