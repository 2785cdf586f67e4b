package engine

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Options configures an Engine. The zero value is usable and gives the
// defaults below.
type Options struct {
	// FS is the filesystem Pebble runs on. Nil means the operating system's.
	// Tests pass vfs.NewCrashableMem() or an errorfs wrapper.
	FS vfs.FS
	// CacheSize is Pebble's block cache in bytes. Default 32 MiB: Keel's
	// memory budget is 200 MiB RSS per replica, shared with Dragonboat's
	// LogDB, and point reads of recently written keys mostly hit memtables.
	CacheSize int64
	// MemTableSize is the size of one memtable in bytes. Default 16 MiB:
	// large enough that a burst of small writes does not flush constantly,
	// small enough that the WAL a checkpoint copies (and that a restart
	// replays) stays short, which keeps snapshot stalls and restart time flat.
	MemTableSize uint64
	// ReadOnly opens the database without write access (offline tools).
	ReadOnly bool
	// DisableCompactions turns off Pebble's automatic compactions. The
	// snapshot package sets it for its short-lived opens of an image it is
	// about to stream or publish: they write a few keys and close, so a
	// compaction there only adds I/O (and could race the close).
	DisableCompactions bool
	// Logger receives Pebble's messages. Nil means slog.Default(), with
	// Pebble's informational chatter dropped below slog's debug level.
	Logger *slog.Logger
}

const (
	defaultCacheSize    = 32 << 20
	defaultMemTableSize = 16 << 20
)

// pebbleOptions turns Options into Pebble's, and returns the cache so the
// caller can release its reference after Open.
func (o Options) pebbleOptions() (*pebble.Options, func()) {
	cacheSize := o.CacheSize
	if cacheSize <= 0 {
		cacheSize = defaultCacheSize
	}
	memtable := o.MemTableSize
	if memtable == 0 {
		memtable = defaultMemTableSize
	}
	cache := pebble.NewCache(cacheSize)
	po := &pebble.Options{
		FS:    o.FS,
		Cache: cache,
		// The newest format gives the best sstable format and is fine: a
		// Keel image is only ever opened by the Keel that wrote it or a
		// newer one.
		FormatMajorVersion: pebble.FormatNewest,
		MemTableSize:       memtable,
		// Writes stall once four memtables' worth (MemTableSize each) is
		// queued for flushing: Keel writes in Raft-sized batches, so a
		// stall here backs up into Raft's apply queue rather than
		// dropping anything.
		MemTableStopWritesThreshold: 4,
		// Sync dirty data in 1 MiB steps so an fsync in Sync() or a
		// checkpoint never has to push a large backlog at once.
		BytesPerSync:    1 << 20,
		WALBytesPerSync: 1 << 20,
		ReadOnly:        o.ReadOnly,
		// Only for short-lived opens; see Options.DisableCompactions.
		DisableAutomaticCompactions: o.DisableCompactions,
		Logger:                      pebbleLogger{l: o.Logger},
	}
	po.EnsureDefaults()
	return po, cache.Unref
}

// pebbleLogger sends Pebble's log lines to slog. Pebble logs every flush and
// compaction at Info; those go to slog's Debug level so a host is quiet by
// default.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) logger() *slog.Logger {
	if p.l != nil {
		return p.l
	}
	return slog.Default()
}

func (p pebbleLogger) Infof(format string, args ...interface{}) {
	p.logger().Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...interface{}) {
	p.logger().Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf is called by Pebble on an internal invariant violation; Pebble's
// contract is that it does not return.
func (p pebbleLogger) Fatalf(format string, args ...interface{}) {
	p.logger().Error(fmt.Sprintf(format, args...), "component", "pebble", "fatal", true)
	os.Exit(70)
}
