// Package logcompact owns when a replica's Raft log is compacted, how far
// back it is kept, and how the disk space is reclaimed.
//
// # Durability
//
// The log is only ever compacted through a Dragonboat snapshot request. For
// Keel's on-disk state machine a requested snapshot is metadata-only, and
// Dragonboat records it only after the state machine's Sync returned
// (Dragonboat's internal/rsm/statemachine.go: concurrentSave runs prepare, then
// sync() which takes the write lock and calls Sync, then doSave); only then
// does node.doSave call compactLog with the snapshot index
// (Dragonboat's node.go doSave/compactLog/getCompactionIndex), which never compacts
// past the snapshot index. Keel's Sync flushes the tablet's memtable to
// fsynced sstables (the tablets have no WAL of their own: the Raft log is
// their write-ahead log), so every removed entry's effect is durable. On
// restart Open reports the applied index of the last flush and Dragonboat
// replays the rest from the log.
//
// Invariant: the log is never compacted past a flushed index. Every
// compaction follows a snapshot request, every snapshot request runs Sync
// first, and Sync returns only after the flush is durable; a flush Pebble
// starts on its own (a full memtable, the memtable budget) only moves the
// durable index forward.
//
// # Policy
//
// Policy keeps a trailing window of the newest entries, bounded by entry
// count and by estimated bytes (encoded entry size + EntryOverhead; sizes
// are read once per entry through NodeHost.GetLogReader, in 1 MiB chunks).
// Compactor.SnapshotOption turns the window into
// SnapshotOption{OverrideCompactionOverhead: true, CompactionIndex: i}
// with i = window start - 1, lowered to the StreamFloor (the lowest snapshot
// index being streamed to a follower, which needs i+1.. right after it
// installs it). Dragonboat compacts only if the snapshot index >= i+1.
//
// # Reclamation
//
// Dragonboat removes entries with a range delete; space comes back only
// when LogDB's Pebble compacts the range. logcompact.Configure sets
// DisableAutoCompactions in the replica's shard config so that the Compactor issues that compaction
// itself (NodeHost.RequestCompaction, which returns ErrRejected when nothing
// new was removed), waits for it, and measures the allocated bytes (du:
// st_blocks*512) of the Raft directories before and after. Pebble deletes
// obsolete files synchronously (MinDeletionRate 0), so the "after" figure
// is real.
//
// # Disk bound with Keel's defaults
//
// With host.LogDBConfig (one LogDB shard, 2 MiB memtables, at most 4) and
// DefaultPolicy, one replica's Raft directory holds at most about
//
//	WAL: up to 5 files preallocated at 1.1 x 2 MiB        ~ 11.5 MiB
//	log before a compaction: KeepBytes + TriggerBytes   =  18 MiB
//	  + entries appended during one Run interval (1 s)  ~   2-4 MiB
//	window rewritten by the manual compaction (output)  ~  12-14 MiB
//	metadata, MANIFEST, snapshot records                <   1 MiB
//	                                                    ~ 45-50 MiB
//
// which the integration test checks against 64 MiB, sampled every 100 ms
// (measured peak 47.0 MiB over 500,000 writes of 256-byte values).
// Write bursts faster than the Run interval and a long-running stream (the
// floor) let the log grow past this.
//
// # Concurrency
//
// A Compactor serves one replica. Step, Reclaim, Due, SnapshotOption and
// SyncRequestSnapshot are serialised by an internal mutex and may be called
// from any goroutine; Run calls them every Interval. Stats is safe at any
// time and never waits for a running Step.
//
// A host with many replicas runs their Compactors on one Runner instead of
// a Run each: one goroutine and one ticker look at every log's range each
// Interval, and only a Compactor with work to do gets a goroutine, for that
// tick. A Compactor is quiet while its log's range is the one a tick with
// nothing to do found (nothing is due and no reclaim is pending until the
// range moves); a quiet tick only takes the latest shared disk figure,
// without walking the directories.
//
// # One owner of snapshot requests
//
// Dragonboat allows one pending snapshot request per shard; a second one
// fails with ErrSystemBusy. A host that also takes timed snapshots
// (snapshot.Scheduler) passes the Compactor as the scheduler's Requester,
// so every request for the replica goes through the Compactor's mutex:
// the timer's snapshots carry the trailing window too, and the two never
// collide.
package logcompact
