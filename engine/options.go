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
	// Shared is the block cache, file cache and memtable budget the engine
	// uses alongside every other engine on the host. Nil makes private ones
	// for this engine alone (offline tools, tests), sized by CacheSize and
	// released by Close.
	Shared *Shared
	// CacheSize is the private block cache in bytes when Shared is nil
	// (ignored otherwise). Default 32 MiB, the size Keel used before
	// tablets shared a cache.
	CacheSize int64
	// MemTableSize is the largest one memtable grows to, in bytes. Pebble
	// starts each engine at min(256 KiB, MemTableSize) and doubles at each
	// rotation. Default 4 MiB: small enough that one hot shard holds at
	// most MemTableStopWritesThreshold (2) of them, 8 MiB, of a 64 MiB
	// shared budget, large enough that a busy shard's flushes stay around
	// a few per second (see BenchmarkMemTableSize).
	MemTableSize uint64
	// WAL keeps Pebble's write-ahead log, as Keel ran before tablets: Sync
	// is a synced empty WAL record instead of a flush. It exists only to
	// compare the two in benchmarks; a host leaves it off, because the Raft
	// log already is the write-ahead log (see the package documentation).
	WAL bool
	// Identity, when set on a writable open, is recorded in an image that
	// has none, in the same batch and the same flush as the format record
	// of a fresh image: creating a tablet then costs one flush (an fsync of
	// sstable, MANIFEST and directory) and one L0 sstable instead of two.
	// An image that already records an identity keeps it, whatever
	// Identity says: the caller compares (Engine.Identity), as sm.Open
	// does. Ignored with ReadOnly.
	Identity *Identity
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

	// testFatal, when set by a test, replaces the process exit on Pebble's
	// Fatalf: it must not return (Pebble holds its locks and expects the
	// process to be gone), so tests block in it and abandon the engine.
	testFatal func(msg string)
}

const (
	defaultCacheSize    = 32 << 20
	defaultMemTableSize = 4 << 20
	// memTableStopWrites is Pebble's MemTableStopWritesThreshold: writes
	// to one engine stall once this many MemTableSize worth of memtables
	// are queued. Two is one flushing and one filling: a shard that
	// outruns its flushes backs up into Raft's apply queue (nothing is
	// dropped) instead of taking the whole shared budget.
	memTableStopWrites = 2
)

// privateShared sizes the Shared an engine opened without one gets.
func (o Options) privateShared() SharedOptions {
	cacheSize := o.CacheSize
	if cacheSize <= 0 {
		cacheSize = defaultCacheSize
	}
	return SharedOptions{
		CacheSize: cacheSize,
		// What Pebble gives one database by default.
		OpenTables:     pebble.FileCacheSize(1000),
		MemTableBudget: defaultMemTableBudget,
	}
}

// pebbleOptions turns Options into Pebble's for engine e on sh.
func (o Options) pebbleOptions(sh *Shared, e *Engine) *pebble.Options {
	memtable := o.MemTableSize
	if memtable == 0 {
		memtable = defaultMemTableSize
	}
	logger := pebbleLogger{l: o.Logger}
	if o.testFatal != nil {
		logger.onFatal = func(msg string) {
			e.failures.report(fmt.Errorf("keel/engine: pebble fatal error: %s", msg))
			o.testFatal(msg)
		}
	}
	fs := o.FS
	if fs == nil {
		// Not Pebble's default, which wraps the OS filesystem in a disk
		// health checker per database: three goroutines and tickers per
		// tablet (one for the FS, one per file open for writing: the
		// MANIFEST and the .log), whose slow-disk events Keel's
		// EventListener dropped anyway.
		fs = vfs.Default
	}
	po := &pebble.Options{
		FS:        newTabletFS(fs, !o.WAL),
		Cache:     sh.cache,
		FileCache: sh.fileCache,
		// The newest format gives the best sstable format and is fine: a
		// Keel image is only ever opened by the Keel that wrote it or a
		// newer one.
		FormatMajorVersion:          pebble.FormatNewest,
		MemTableSize:                memtable,
		MemTableStopWritesThreshold: memTableStopWrites,
		// The Raft log is the write-ahead log; see the package doc.
		DisableWAL: !o.WAL,
		// Sync dirty data in 1 MiB steps so the fsync ending a flush, a
		// WAL sync or a checkpoint never has to push a large backlog.
		BytesPerSync:    1 << 20,
		WALBytesPerSync: 1 << 20,
		ReadOnly:        o.ReadOnly,
		// Only for short-lived opens; see Options.DisableCompactions.
		DisableAutomaticCompactions: o.DisableCompactions,
		Logger:                      logger,
		EventListener:               &pebble.EventListener{FlushEnd: e.onFlushEnd},
	}
	// One compaction scheduler per tablet, but no goroutine or ticker
	// per tablet: the Shared re-checks waiting tablets (compactsched.go).
	po.Experimental.CompactionScheduler = sh.compactions.scheduler()
	po.EnsureDefaults()
	return po
}

// pebbleLogger sends Pebble's log lines to slog. Pebble logs every flush and
// compaction at Info; those go to slog's Debug level so a host is quiet by
// default.
type pebbleLogger struct {
	l *slog.Logger
	// onFatal runs before the exit in Fatalf; only tests set it (see
	// Options.testFatal).
	onFatal func(msg string)
}

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

// Fatalf is called by Pebble on an internal invariant violation and when
// a MANIFEST write, sync or rotation fails while a flush or compaction
// installs its result (Pebble cannot tell whether the edit reached the
// disk). Pebble's contract is that it does not return, so the process
// exits with status 70: to Keel that is a crash, and the next Open
// recovers the last flushed state while Dragonboat replays the rest.
func (p pebbleLogger) Fatalf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	p.logger().Error(msg, "component", "pebble", "fatal", true)
	if p.onFatal != nil {
		p.onFatal(msg)
	}
	os.Exit(70)
}
