// Package engine is Keel's Pebble wrapper. It owns everything Keel keeps on
// disk for one replica's state machine: the Pebble database, the key
// namespaces inside it, the applied-index record, checkpoints, and the image
// directory layout that lets a new image be swapped in atomically.
//
// # Key namespaces
//
// Every Pebble key starts with a one-byte namespace tag:
//
//	0x00 'm' <name>   Keel metadata (applied index, identity, format)
//	0x01 <user key>   user data
//
// A user key k is stored as 0x01||k, so no user key, whatever its bytes, can
// reach the metadata namespace. Iteration over user data is bounded to
// [0x01, 0x02). Metadata keys:
//
//	meta/applied   8 bytes, big-endian Raft index of the last applied entry
//	meta/identity  16 bytes, big-endian shard ID then replica ID
//	meta/format    1 byte, Keel's data format version (currently 1)
//
// # Image directory layout
//
// A replica's root directory holds one or more image directories and a
// pointer file naming the live one:
//
//	<root>/CURRENT          "img-000000000000000N\n", replaced atomically
//	<root>/img-<16 digits>/ a complete Pebble database
//	<root>/tmp-*            work in progress (checkpoints, incoming images)
//	<root>/stg-<20 digits>-<random>/
//	                        an image staged for a snapshot at that index
//	                        while its stream arrived: img/ (the image) and,
//	                        once it is complete and durable, SEALED (the
//	                        stream header it came from); see staged.go
//
// CURRENT is only ever replaced by writing a temp file, fsyncing it, renaming
// it over CURRENT and fsyncing the root. The root itself is created with the
// parent of every new directory fsynced, and its parent is fsynced again at
// the first writable open in a process (an earlier run may have crashed
// between the mkdir and that fsync), so a crash cannot drop the whole root. On Open, every img-*
// that CURRENT does not name and every tmp-* is removed: they are leftovers
// of a crash in the middle of an install or a checkpoint. Staged dirs are
// not: Raft may have recorded their snapshot before the crash and ask for
// it again from a copy that no longer holds the data (package snapshot,
// "Receiving while the stream arrives"), so their owner prunes them
// (PruneStaged) only once the applied index reached them, or when they
// were never sealed.
//
// # Durability: WAL-less tablets
//
// Each engine is a tablet: a Pebble database with its write-ahead log
// turned off (DisableWAL). The Raft log is the only write-ahead log: a
// batch Update commits goes to the memtable and nowhere else, and becomes
// durable when the memtable is flushed to an sstable (the flush fsyncs the
// sstable, then the MANIFEST that names it). So:
//
//  1. Durable state is the state at the last completed flush. The applied
//     index is written in the same batch as the data, and a flush writes a
//     prefix of the committed batches, so the recovered applied index always
//     matches the recovered data exactly; Open returns it, and Dragonboat
//     replays the Raft log from the entry after it.
//  2. Sync (and Flush) makes everything applied before the call durable. It
//     returns at once when nothing was committed since the last flush (two
//     atomic loads), so Dragonboat's Syncs of a thousand idle shards cost
//     nothing. A Sync that returns nil is never wrong: when Pebble reports
//     the flush failed, Sync returns that error (Pebble would otherwise
//     retry the flush forever and DB.Flush never return).
//  3. The Raft log must never be compacted past a flushed index. Dragonboat
//     calls Sync before it compacts the log behind a metadata-only
//     snapshot (periodic snapshots of an on-disk state machine write no
//     data), which is what keeps this true; anything else that compacts the
//     log must do the same.
//  4. Flushes also happen without Sync: when a memtable fills (MemTableSize),
//     when the shared memtable budget picks the engine, for a checkpoint,
//     and on Close of a dirty engine, so a clean shutdown replays nothing.
//     Every one only makes more of the applied state durable.
//  5. Writes Keel must keep even if the Raft log will not replay them (the
//     format and identity records, a snapshot's rewound applied index) are
//     written and then flushed before the call returns.
//
// A directory written with a WAL (by Keel before tablets, or with
// Options.WAL) converts on its first writable open: Pebble replays every
// WAL file newer than the MANIFEST's log number whether or not the WAL is
// enabled now, and flushes the replayed memtables before Open returns; the
// old log files then become obsolete and are deleted.
//
// When a flush fails: an error writing or syncing the sstable is returned
// by the Sync waiting for it, the memtable is kept and Pebble retries the
// flush in the background. An error writing, syncing or rotating the
// MANIFEST while the flush installs its sstable is fatal in Pebble v2.1.7
// (version_set.go calls Logger.Fatalf: it cannot tell whether the edit
// reached the disk); Keel's logger then exits the process with status 70,
// which to Keel is a crash, recovered as in step 1.
//
// Options.WAL keeps Pebble's WAL as Keel ran before tablets (Sync is a
// synced empty WAL record, Pebble's WAL replays a committed prefix after a
// crash); it exists to measure the difference and is not for hosts.
//
// # Shared resources and the memtable budget
//
// A Shared holds what every tablet on a host shares: one block cache
// (SharedOptions.CacheSize, default 64 MiB), one Pebble file cache
// (OpenTables, default 1024: it bounds the sstables held open across all
// tablets), and a budget for memtable bytes (MemTableBudget, default
// 64 MiB). Pebble has no write-buffer manager across databases, so Keel
// enforces the budget itself, as RocksDB's WriteBufferManager does:
//
//   - Each commit adds its size (batch bytes plus an estimated 24 bytes of
//     memtable overhead per entry) to the engine's counter and to the
//     shared total: two atomic adds on the write path. When the total
//     passes the budget, the commit wakes the Shared's goroutine (a
//     non-blocking send).
//   - That goroutine sorts engines by their counters and flushes the
//     largest until the total would be under 3/4 of the budget, then waits
//     for those flushes and checks again. Flushes run on Pebble's own
//     goroutines, so the chosen engines flush in parallel.
//   - When any flush of an engine ends, Pebble reports the exact in-memory
//     size of the memtables it wrote; that is subtracted from the engine's
//     counter, clamped at zero, so estimation error cannot accumulate.
//   - A commit that finds the total past the budget by more than an eighth
//     waits for budget passes until it is back under that mark (a write
//     stall, counted in SharedStats.WriteStalls): the goroutine shares the
//     cores with the writers, and without the stall 200 busy writers on two
//     cores took the total to 7x the budget. The wait ends early if a pass
//     finds nothing it can flush, so a failing disk does not hang writers
//     on the budget (their Syncs report the failure).
//   - One engine cannot take the whole budget: its memtable grows from
//     min(256 KiB, MemTableSize) by doubling up to MemTableSize (default
//     4 MiB) and Pebble flushes it when full; writes to it stall once
//     2 x MemTableSize is queued (one memtable flushing, one filling).
//
// The budget is on bytes written to memtables, not on Pebble's arena
// allocation (SharedStats.MemTableAllocated): Pebble allocates each
// memtable's arena whole, so every open engine holds at least one arena of
// 256 KiB or more even when empty; those pages stay untouched, and so not
// resident, until written. After a flush Pebble also keeps one retired
// arena per engine to recycle.
//
// An Engine opened without Options.Shared gets a private Shared sized by
// Options.CacheSize, released by its Close: offline tools and tests use the
// same code path as a host.
//
// # What one tablet costs
//
// Measured with BenchmarkTablets (shared resources, 20 small keys per
// tablet, every key read once) on Pebble v2.1.7. At 1,000 tablets: 3.5
// descriptors, 3 goroutines (2 since the shared compaction re-check below:
// bench/shards counts 2,134 at 1,000 tablets, was 3,134), 248 KB of Go heap and 275-290 KB of resident
// memory per tablet (before the measures below: 8.5, 6, 261 KB and
// 290-335 KB).
//
// File descriptors: 3 per open tablet, plus the sstables the shared file
// cache holds (bounded by SharedOptions.OpenTables across all tablets):
//
//   - LOCK, Pebble's flock on the image, which keeps a second process (a
//     second host, keelctl) off a tablet in use. Kept. One flock on a
//     directory above the images (taken by the Shared) with a no-op Lock
//     per tablet would save this descriptor, but it protects a tablet only
//     from openers that take the same root lock: keelctl, snapshot code
//     and tests open images directly, with Pebble's lock as their only
//     guard, and would then open a tablet a running host holds.
//   - The MANIFEST, which Pebble keeps open to append version edits.
//   - One handle on the image directory, shared by the five places Pebble
//     keeps one (see tabletFS). A handle opened only for each directory
//     sync would save it, but a failure to open (EMFILE) would then be a
//     failed directory sync, and atomicfs.Marker.Move panics on that.
//
// The empty .log Pebble creates at every writable open even without a
// WAL is closed right after it is created (tabletFS), and tablets on the
// OS filesystem do not get Pebble's per-database disk-health wrapper,
// which cost three goroutines with tickers per tablet and whose slow-disk
// events Keel's EventListener dropped. A fresh tablet is written once:
// format and identity in one flush (Options.Identity, as sm.Open passes
// it); Pebble then compacts that sstable and the first data flush into
// one, so an idle tablet holds one sstable.
//
// Memory: about 250 KB of Go heap per tablet, nearly all of it fixed by
// pebble.Open whatever Keel configures: the WAL LogWriter Pebble creates
// even with DisableWAL (about 110 KB: a 4096-slot sync queue and a 32 KiB
// block), the commit pipeline (about 40 KB, a 4096-slot queue), the
// MANIFEST writer (about 40 KB, a 32 KiB block), two goroutines and
// their stacks (the LogWriter's flusher, the obsolete-file cleanup
// manager), and smaller structures. Pebble's default compaction scheduler
// was a third goroutine, with a 100 ms ticker per tablet; each tablet
// instead gets a goroutine-free scheduler and the Shared re-checks only
// tablets waiting for a compaction grant (compactsched.go; idle CPU at
// 1,000 tablets in bench/README.md).
// Resident memory is about 50 KB above that: the written pages of the
// memtable arena (allocated with calloc, so untouched pages stay off the
// resident set), blocks in the shared cache and table readers. Pebble
// v2.1.7 has no option that skips those structures for a WAL-less
// database, so a host keeps memory down by keeping fewer tablets open:
// closing idle ones (sm.Config.IdleClose, below). A closed tablet gives
// all of it back (measured: 238 KB of RSS per open tablet, 12 KB after
// closing them, with 500 tablets), provided the freed memtable arenas
// leave the process: glibc raises its mmap threshold to the size of each
// mmapped chunk freed, after which arenas come from malloc's heap, calloc
// zeroes (touches) them whole and free keeps them, so Open pins the
// threshold at glibc's default 128 KiB (malloc_cgo.go; at 1,000 shards
// that was 140 MiB of resident, freed arenas).
//
// # Closed tablets
//
// Opening a tablet for writing costs seven fsyncs even when nothing
// changed (counted with BenchmarkReopen: Pebble writes a new MANIFEST and
// moves its marker, creates an empty WAL, rewrites the OPTIONS file, and
// syncs the directory after each; Keel syncs the root's parent at a
// process's first writable open of the root, so six after that) and the
// 250 KB above. A clean Close of a writable WAL-less tablet opened through
// OpenRoot therefore leaves a closed record, <root>/CLOSED:
//
//	keel-closed 1 <image> <applied> <has-id> <shard> <replica> <manifest> <size> <crc32>
//
// naming the live image, its applied index and identity, and Pebble's live
// MANIFEST with its size, with a CRC over the line. Root.ReadClosed
// returns it only while it still describes the image exactly: CURRENT
// names the image, and the MANIFEST marker names the same MANIFEST at the
// same size. That is enough because every writable Pebble open starts a
// new MANIFEST (a new file number; Pebble never reuses one) before it can
// flush, every flush or compaction appends to it, and Pebble fsyncs the
// MANIFEST and its marker itself; a read-only open changes nothing. So a
// record that counts describes the durable state, and the record needs no
// fsync of its own: lost or torn in a crash (the CRC), or left from an
// earlier close, it simply does not count and the tablet is opened. It is
// never removed; Sweep removes a stray CLOSED.tmp. TestClosedRecordAfterCrash
// crashes tablets at random (CrashableMem) and checks that a record that
// counts always gives the applied index a real open recovers (it fails
// if the MANIFEST check is dropped).
//
// # Pebble options
//
// See options.go: each setting there says why it was chosen.
//
// # Concurrency
//
// An Engine is safe for concurrent use: Pebble serialises writers and reads
// come from immutable views. Flushes may be started by the caller (Sync,
// Flush, Checkpoint, Close) and by the Shared's budget goroutine at any
// time; Close excludes new ones and waits for its own. A Batch belongs to one goroutine. A View is a
// Pebble snapshot: reads through it see one consistent state, including the
// applied index recorded with that state, until it is closed.
package engine
