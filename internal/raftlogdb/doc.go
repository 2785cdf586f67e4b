// Package raftlogdb reads the Raft log that Dragonboat's default LogDB
// ("sharded-pebble") keeps under a stopped NodeHost's directory, without a
// NodeHost: keelctl's inspect, check and export use it, and its tests hold
// it equal to what a NodeHost restarted on the same directory reports.
//
// # Why hand-decoded
//
// Dragonboat offers no offline reader. The LogDB implementation
// (internal/logdb) cannot be imported; tools.ImportSnapshot opens it only to
// write; a NodeHost opens it read-write, takes the directory's lock, needs a
// Raft address and, to hand out a ReadonlyLogReader (NodeHost.GetLogReader),
// must start the replica, which replays and may append to its log. An
// offline tool must not change what it inspects, so this package decodes the
// records itself, refuses any layout it does not recognise (ErrUnknownLayout)
// instead of guessing, and its oracle test fails when Dragonboat's format
// moves.
//
// # Pinned version
//
// The layout below is that of github.com/lni/dragonboat/v4 at
// v4.0.0-20250723143628-076c7f6497dc (files internal/logdb/key.go, db.go,
// plain.go, batch.go, sharded.go, logreader.go, internal/server/environment.go
// and internal/rsm/membership.go), which stores its Pebble databases with
// github.com/cockroachdb/pebble v0.0.0-20221207173255-0f086d933dac. Check
// both files again before moving the pin.
//
// # Directory layout
//
//	<NodeHostDir>/
//	    dragonboat.ds   flag file: 8-byte hash, then a RaftDataStatus
//	    LOCK, NODEHOST.ID
//	    <hostname>/<deployment ID as %020d>/
//	        logdb-0 ... logdb-<N-1>   one Pebble DB per LogDB shard
//
// The flag file's hash is bytes 8..16 of the MD5 of the rest. Open accepts
// LogdbType "sharded-pebble", BinVer 100 (plain entries) or 210 (batched
// entries; then EntryBatchSize must be 48), and exactly LogdbShardCount
// logdb-N directories. A replica's records live in LogDB shard
// (shardID % StepWorkerCount) % LogdbShardCount. A NodeHost with WALDir set
// keeps Pebble's WAL elsewhere; this package does not follow it.
//
// # Keys
//
// Every key is a two-byte header (the same byte twice), two zero bytes,
// then big-endian uint64s:
//
//	header     name        rest of the key                   value
//	01 01      entry       shard, replica, index   (28 B)    raftpb.Entry
//	02 02      state       shard, replica          (20 B)    raftpb.State (term, vote, commit)
//	03 03      max index   shard, replica          (20 B)    8-byte big-endian last index
//	04 04      node info   shard, replica          (20 B)    unused at this version
//	05 05      snapshot    shard, replica, index   (28 B)    raftpb.Snapshot (only the latest is kept)
//	06 06      bootstrap   shard, replica          (20 B)    raftpb.Bootstrap
//	07 07      entry batch shard, replica, batch   (28 B)    raftpb.EntryBatch
//
// A LogDB stores entries either one per 01 record (plain) or 48 per 07
// record (batched): batch b holds entries b*48 .. b*48+47 that were saved.
// Within a batch of more than one entry whose last entry has term 0, only
// the first entry carries its index and term: entry i has index first+i and
// the first entry's term. A NodeHost creates a plain LogDB; it keeps using
// batched records once any 07 record exists (LogDBs from Dragonboat 3.x).
//
// Entries above the max-index record are stale (overwritten by a later
// leader) and ignored. Log compaction deletes records below the compaction
// index (plain: entries below it; batched: whole batches two below it), so
// the entries on disk can start below the snapshot index.
//
// # What a NodeHost would see
//
// Log follows Dragonboat's restart (node.replayLog, LogReader.SetRange):
// the log starts after the latest snapshot record whatever older entries
// remain, and ends at the max index. MembershipAt replays the config-change
// entries after the snapshot with Dragonboat's acceptance rules, so a
// change Dragonboat rejected (re-adding a removed replica, an existing
// address) is rejected here too; it assumes Config.OrderedConfigChange is
// off unless told otherwise, since that setting is not stored on disk.
//
// # Concurrency
//
// A DB is read by one goroutine at a time; Open holds each Pebble DB's
// lock until Close, so no NodeHost can start on the directory meanwhile.
package raftlogdb
