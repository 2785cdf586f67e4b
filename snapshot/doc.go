// Package snapshot owns Keel's full snapshots: capturing an exact image of
// a replica's Pebble state without stalling Update, the stream format that
// carries it, verifying and installing a received stream atomically, and
// the periodic snapshot scheduler. sm's PrepareSnapshot, SaveSnapshot and
// RecoverFromSnapshot are thin calls into Begin, Capture.Save and Install;
// host.Export/Import wrap Dragonboat's export and tools.ImportSnapshot.
//
// # Exact images, no stall
//
// Every image Keel produces, for a stream to a follower or an export, holds
// exactly the state at the snapshot index I (the applied index at
// PrepareSnapshot), so the "late image" trap (an imported image claiming
// indexes the new log reuses, whose entries would then be skipped as
// already applied; it lost acknowledged writes in a test) cannot happen,
// and the receiver checks it.
//
//  1. PrepareSnapshot (Update excluded by Dragonboat): read I, take a Pebble
//     snapshot (a sequence number; ~20-40µs measured, whatever the state
//     size) and start a touched-keys log in the Tracker.
//  2. While the capture is pending, Update records every key it puts or
//     deletes and every range it deletes, before its batch commits (a
//     write that reaches Pebble is always recorded first).
//  3. SaveSnapshot (no lock; applies go on): flush the engine's memtable,
//     then take a Pebble checkpoint into <root>/tmp-capture-*. Engines run
//     without a WAL (see package engine), so a checkpoint holds only what
//     is in sstables: the flush is what makes it cover I, and it needs no
//     WAL sync. It holds some index X >= I: everything flushed by the time
//     the checkpoint links its files, which includes the flush's own
//     state (>= I, taken after PrepareSnapshot) and possibly later flushes
//     (Pebble's own, the memtable budget's). Stop recording; the log now
//     covers (I, X] (and possibly a little more, which is harmless). The
//     flush runs here and not in PrepareSnapshot, so Update is never
//     blocked on it.
//  4. Open the checkpoint (compactions off) and rewind it: for each
//     recorded range, delete it and copy the range's keys from the Pebble
//     snapshot at I; for each recorded key, write its value at I or delete
//     it if it had none; set the applied index to I, in a durable commit
//     (a flush), so the files streamed next hold the rewound state. Keys not recorded are
//     equal at I and X, so the image is now exactly the state at I. If the
//     log outgrew its budget (Options.TouchedBudget, 16 MiB) it stops
//     recording and the rewind copies the whole user keyspace from the
//     snapshot instead: slower, equally exact, memory still bounded.
//  5. Close it, stream its files, remove the work dir on every path (a
//     crash leaves a tmp-* that engine.OpenRoot sweeps).
//
// Why it is safe: the Pebble snapshot is immutable state at I; the
// checkpoint is a consistent state at X (a flushed state: its sstables and
// the MANIFEST naming them, with the applied index written in the same
// batch as the data); the two differ only in keys written in (I, X], all
// of which are in the log or the rewind copies everything. That argument
// is unchanged by dropping the WAL: only how X comes to be >= I changed
// (a flush instead of a WAL sync). Before tablets, the checkpoint also
// copied the live WAL and its cut fell while the WAL was copied; now the
// image's WAL file is empty. Commands are deterministic, so every replica's state at I is
// the same. The alternative, an exact checkpoint inside PrepareSnapshot,
// would hold Update off for the flush and checkpoint (15-37 ms measured at
// 10-100 MB here, up to 270 ms cold at 1 GB).
//
// # Stream format (version 1)
//
// All integers are big-endian. CRC is CRC-32C (Castagnoli).
//
//	header, 60 bytes:
//	+---------+---------+-----------+----------+------------+----------+---------------+-------------+--------+
//	| magic 8 | version | filecount | shard ID | replica ID | snapshot | image applied | total bytes | CRC of |
//	|KEELSNAP | 4       | 4         | 8        | 8 (sender) | index 8  | index 8       | 8           | 0..56  |
//	+---------+---------+-----------+----------+------------+----------+---------------+-------------+--------+
//
//	filecount times:
//	+-----------+------+--------+------------------+-------------------------------+-------------+
//	| name len 2| name | size 8 | CRC of the three | chunks: (len 4, 1..1 MiB) data | CRC of file |
//	|           |      |        | fields before, 4 | ... until size bytes           | content, 4  |
//	+-----------+------+--------+------------------+-------------------------------+-------------+
//
//	trailer, 12 bytes:
//	+------------------+--------------------------------------------+
//	| "KEELEND\x00" 8  | CRC of every stream byte before the trailer |
//	+------------------+--------------------------------------------+
//
// File names are plain Pebble file kinds only (ValidFileName): NNNNNN.sst,
// NNNNNN.blob, NNNNNN.log, MANIFEST-NNNNNN, OPTIONS-NNNNNN and
// marker.{manifest,format-version}.NNNNNN.<value>; a v2.1 checkpoint
// reopened and closed holds e.g. 000005.sst 000007.log MANIFEST-000001
// MANIFEST-000006 OPTIONS-000008 marker.format-version.000001.024
// marker.manifest.000002.MANIFEST-000006. Pebble's LOCK is not sent.
//
// The file checksum comes after the content so the writer reads each file
// once. Both sides hold one 1 MiB chunk buffer whatever the image size; the
// reader also keeps the names seen (at most MaxFiles of MaxNameLen bytes).
//
// Compression: exactly one layer, Dragonboat's (host.ShardConfig sets
// SnapshotCompressionType Snappy). Keel does not compress: sstables are
// already compressed (Snappy over a Keel stream of random-valued data:
// ratio 1.000 at 2.6-4 GB/s, so the layer costs little); only WAL files
// compressed well (0.44), and a tablet's image no longer holds WAL data.
//
// # Receiving
//
// Install verifies everything before anything live changes: magic,
// version, header CRC, shard (a valid stream for another shard is refused),
// limits (Options.MaxFiles, MaxBytes), every name (kind, no separators, no
// "..", no duplicates; files are created fresh in a new dir, so no links),
// chunk bounds, sizes against the header, every file CRC and the stream
// CRC. Files and the dir are fsynced. Then the image is opened: its applied
// index must equal the header's (and the header's must equal its snapshot
// index: only exact images are installed), any identity in it must be for
// this shard; it is stamped with the local identity, closed, and published
// with engine.Root.Publish (rename, then atomic CURRENT swap). sm then opens
// it and swaps its engine under its exclusive lock: reads see the old image
// or the new one, never a mix; the old image is closed and removed. A
// crash at any instant reopens on exactly the old or the new image.
// Hostile input yields an error (ErrCorrupt, ErrLimit, ErrBadFileName,
// ErrWrongShard, ErrInexact) and leaves the old image open and readable.
// Going back to an older image is allowed (tools.ImportSnapshot forces it).
//
// Each received file is written through Pebble's syncing file
// (sync_file_range every MiB on Linux): the kernel otherwise keeps the
// whole image dirty until the file's Sync (its own writeback starts only
// at a share of RAM), and the install then waits for all of it at once.
//
// # Catch-up: where the time goes, and the second stream
//
// A follower behind the leader's compacted log catches up in these steps
// (Dragonboat v4 as pinned in go.mod; DB/ is its module root). Measured
// in-process by bench/catchup (bench/README.md, "Catch-up").
//
//  1. The leader reaches the restarted follower. While the follower was
//     down the leader's transport tripped its circuit breaker for the
//     follower's address (DB/internal/transport/transport.go:366,
//     lni/goutils netutil.NewBreaker: one failure trips it, retries back
//     off from 0.5 s to 1 s with ±50% jitter). Every message to that
//     address is dropped until the next retry, so 0-1.5 s pass before
//     the first heartbeat arrives; the follower's pre-votes are refused
//     meanwhile. Nothing in NodeHostConfig or the shard config changes
//     this, and a Keel-side retry cannot reset a breaker. It is the
//     largest part of the "time before RecoverFromSnapshot" at a few
//     hundred MB.
//  2. The follower answers; the leader finds the entries compacted
//     (DB/internal/raft/raft.go:804), marks the remote "snapshot" and asks
//     its state machine to stream: PrepareSnapshot, then SaveSnapshot into
//     Dragonboat's chunk writer (2 MiB chunks, Snappy). Build the image:
//     20-200 ms measured at 300 MB; then the stream, back-pressured by
//     the receiver.
//  3. The receiver writes every chunk to a staging file and fsyncs it on
//     the last one (DB/internal/transport/chunk.go save), renames the
//     directory, and only then hands the snapshot to Raft and calls
//     RecoverFromSnapshot on a reader over the staging file. Every byte is
//     written twice on the follower (staging, then the install), so a
//     catch-up cannot exceed half the disk's sequential write bandwidth,
//     whatever Keel does.
//  4. Install (above) and the engine swap; then the log from the snapshot
//     index on.
//
// The second stream. When the sender has pushed the last chunk into the
// socket, the transport reports success (transport/snapshot.go
// processSnapshot), and the NodeHost delivers it to Raft 10 ticks later
// (nodehost.go streamPushDelayTick). The leader moves the remote to
// "wait" with next = the log's snapshot index + 1 (raft.go
// handleLeaderSnapshotStatus, remote.go becomeWait) and replicates from
// there at the next heartbeat. If the receiver is still in step 3 (its
// fsync of the staging file waits for the whole image: at 400 MB/s, 1.3 s
// for 500 MB, against 10 ticks = 200 ms at Keel's 20 ms RTT), its log
// does not hold that index, it rejects the Replicate with its old last
// index, the leader falls back to it, finds it compacted and streams a
// whole new snapshot. The receiver takes the first, stages the second in
// full while it installs the first, and drops the second at the end
// ("chunk rejected": FinalizeSnapshot finds that index installed). Cost:
// one more full read and send on the leader and one more full staged
// write on the follower, concurrent with the install; at 300 MB in this
// harness it stretched the install's syncs from 0.26 s to 1.2 s.
// Reproduced in bench/catchup at 300 MB (KEEL_CATCHUP_LOG shows "rejected
// Replicate" 1 ms after "snapshot succeeded").
//
// Why Keel does not stop it. SaveSnapshot is not told the target, so it
// cannot tell a redundant stream from a needed one. Failing it (or
// PrepareSnapshot) aborts the transport job, and a failed job trips the
// same circuit breaker (processSnapshot calls breaker.Fail), which drops
// every message to that host, for all its shards, for 0.5-1.5 s; an error
// from PrepareSnapshot leaves the job waiting forever. A placeholder
// stream would be installed by a follower that really needed it.
// Delaying SaveSnapshot does not save the bytes either: the job is
// committed to send once it runs. The only knobs that widen the window
// are RTTMillisecond (10 ticks) and a smaller image; neither is worth
// it. A fix belongs in Dragonboat: report stream success only on the
// receiver's SnapshotReceived (it already sends one), not when the last
// chunk leaves the sender.
//
// # Concurrency
//
// Begin runs with Update excluded; Capture.Save runs on Dragonboat's
// snapshot goroutine concurrently with Update and Lookup; Tracker methods
// are safe from Update while captures begin and end. Install runs with
// every other mutating call excluded. A Scheduler runs its own goroutine
// and calls only NodeHost.SyncRequestSnapshot.
package snapshot
