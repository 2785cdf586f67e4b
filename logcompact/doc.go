// Package logcompact owns when a replica's Raft log is compacted, how far
// back it is kept, and how the disk space is reclaimed.
//
// # Durability
//
// The log is only ever compacted through a Dragonboat snapshot request. For
// Keel's on-disk state machine a requested snapshot is metadata-only, and
// Dragonboat records it only after the state machine's Sync returned
// (DB/internal/rsm/statemachine.go: concurrentSave runs prepare, then
// sync() which takes the write lock and calls Sync, then doSave); only then
// does node.doSave call compactLog with the snapshot index
// (DB/node.go doSave/compactLog/getCompactionIndex), which never compacts
// past the snapshot index. Keel's Sync flushes the engine's memtable to
// sstables (tablets run without a Pebble WAL), so every removed entry's
// effect is durable. On restart Open reports the persisted
// applied index and Dragonboat replays the rest from the log.
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
// when LogDB's Pebble compacts the range. plugin.ShardConfig sets
// DisableAutoCompactions so that the Compactor issues that compaction
// itself (NodeHost.RequestCompaction, which returns ErrRejected when nothing
// new was removed), waits for it, and measures the allocated bytes (du:
// st_blocks*512) of the Raft directories before and after. Pebble deletes
// obsolete files synchronously (MinDeletionRate 0), so the "after" figure
// is real.
//
// # Disk bound with Keel's defaults
//
// With plugin.LogDBConfig (one LogDB shard, 2 MiB memtables, at most 4) and
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
// A Compactor serves one replica. Step, Reclaim, Due and SnapshotOption are
// serialised by an internal mutex and may be called from any goroutine;
// Run calls them every Interval. Stats is safe at any time and never
// waits for a running Step. Only one snapshot request per shard can be
// pending in Dragonboat: a scheduler taking its own snapshots gets
// ErrSnapshotFailed (wrapping dragonboat.ErrSystemBusy) when they collide,
// and retries later.
package logcompact
