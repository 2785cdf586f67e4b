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
// reader also keeps the names seen (at most MaxFiles of MaxNameLen bytes)
// and, writing with O_DIRECT, up to four 2 MiB aligned buffers for the
// file being written (one filling, two queued for its writer goroutine,
// one being written; recycled through a sync.Pool).
//
// Compression: none. Neither Keel nor Dragonboat compresses a stream
// (host.ShardConfig sets SnapshotCompressionType NoCompression): a stream
// is Pebble sstables, whose blocks Pebble already compresses with Snappy.
// Measured in a catch-up of 200 MiB of values (bench/catchup, 2026-12-07):
// with Dragonboat's Snappy layer on, the staged stream was 172.7 MB for a
// 174.8 MB image of text values and 209.3 MB for 211.3 MB of random ones,
// the same as without it (the 2 MB difference is Dragonboat's first block,
// kept uncut); the layer cost 270 ms of the catch-up's 1.4 s of CPU (its
// Snappy encode and CRC on the leader, decode on the follower) and made
// the catch-up 1.5x as long. Only WAL files compressed well (0.44), and a
// tablet's image holds none. A stream written with Snappy (an older
// sender, an older export) is still read: the envelope records it.
//
// # Receiving
//
// Install verifies everything before anything live changes: magic,
// version, header CRC, shard (a valid stream for another shard is refused),
// limits (Options.MaxFiles, MaxBytes), every name (kind, no separators, no
// "..", no duplicates; files are created fresh in a new dir, so no links),
// chunk bounds, sizes against the header, every file CRC and the stream
// CRC. Files and the dir are fsynced. On Linux, on the OS filesystem,
// received files are written with O_DIRECT (direct_linux.go says why: the
// page cache's copy and writeback were the receiver's largest CPU cost);
// a filesystem that refuses it gets buffered writes with writeback started
// every MiB. Then the image is opened: its applied
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
// # Catch-up: where the time goes
//
// A follower behind the leader's compacted log catches up in these steps
// (Dragonboat v4 as pinned in go.mod; DB/ is its module root). Measured
// in-process by bench/catchup (bench/README.md, "Catch-up"), every
// NodeHost behind host.PeerGuard as in keeld.
//
//  1. The leader reaches the restarted follower. While the follower was
//     down, Dragonboat's sender tripped its circuit breaker for the
//     follower's address (DB/internal/transport/transport.go send,
//     connectAndProcess; lni/goutils netutil.NewBreaker: one failure trips
//     it, retries 0.5 s then up to 1 s apart, ±50% jitter), and every
//     message to that address was dropped until the next retry: 0-1.5 s
//     after the restart before the first heartbeat arrived. Keel's
//     transport (host/redial.go) now reports only the first failure of an
//     outage; the connection Dragonboat asks for next is always granted,
//     drops batches while the peer is down and redials every 50 ms (500 ms
//     after a failure other than a refused connection), so the restarted
//     follower hears the leader within about 50 ms plus a tick.
//  2. The follower answers; the leader finds the entries compacted
//     (DB/internal/raft/raft.go sendReplicateMessage), marks the remote
//     "snapshot" and asks its state machine to stream: PrepareSnapshot,
//     then SaveSnapshot into Dragonboat's chunk writer (2 MiB chunks,
//     Snappy). Building the image takes 20-200 ms at 300 MB; then the
//     stream, back-pressured by the receiver.
//  3. The receiver writes every chunk to a staging file and fsyncs it on
//     the last one (DB/internal/transport/chunk.go save), renames the
//     directory, and only then hands the snapshot to Raft, whose snapshot
//     worker calls RecoverFromSnapshot on a reader over the staging file.
//     Keel's transport stages the image meanwhile (next section), so that
//     file is cut to its first block before that fsync.
//  4. RecoverFromSnapshot publishes the staged image (a rename and the
//     CURRENT swap) or, when there is none, installs from the stream
//     (above); then the engine swap and the log from the snapshot index on.
//
// # Receiving while the stream arrives (staged images)
//
// Dragonboat offers no receive path that hands chunks to the state machine
// as they arrive: it stages the whole stream in a file, fsyncs it, and the
// install then writes every byte again, so a disk-bound catch-up could not
// pass half the disk's write bandwidth. Keel's transport (host/snaptee.go)
// works around it from outside Dragonboat:
//
//  1. Every chunk that reaches PeerGuard's chunk handler is also queued for
//     the receiving replica's state machine (at most 8 streams per
//     process, 4 chunks queued each). sm.StateMachine.StageImage undoes
//     Dragonboat's framing (internal/gbsnap ReceivedPayload: its header,
//     every 2 MiB block's CRC, Snappy, the session table, the tail) and
//     runs Stage: the same checks as Install, into a staged dir
//     <root>/stg-<index>-<random>/img (engine.Root.StageDir), stamped,
//     fsynced, then sealed: a SEALED record holding the stream header,
//     fsynced, and the root fsynced.
//  2. On the last chunk the handler waits for the seal, then cuts
//     Dragonboat's staging file to gbsnap.ReceivedKeep bytes (its header,
//     its first block, which holds the session table and Keel's stream
//     header, and the 16 bytes its reader sets aside as the tail), and
//     only then lets Dragonboat fsync it and hand the snapshot to Raft.
//     The rest of the file was dirty in the page cache and is dropped by
//     the truncation: it never reaches the disk. Where Dragonboat runs on
//     host.DiskFullFS (keeld) it is not even written: that filesystem
//     extends the file over a hole instead of copying the bytes in
//     (host/stagingfs.go), and a stream with holes whose image was not
//     staged is refused at its last chunk, never handed to Raft; the
//     leader sends it again, and that replica's next stream is written in
//     full.
//  3. RecoverFromSnapshot reads the stream header (60 bytes) and looks for
//     a sealed staged image with the same header (FindStaged); it
//     publishes it (engine.Root.AdoptStaged: a copy made of hard links,
//     so the staged image stays whole until CURRENT names the new one)
//     without reading the stream further. Without one it installs from
//     the stream as before.
//
// Why it is exact: a staged image passed every check Install makes, and
// it is adopted only for a stream header identical to the one it was
// built from: the same shard, snapshot index, sender and sizes. Keel's
// images are exact, so any image of a shard at one index holds the same
// state. Why it is safe across crashes: the seal is durable before the
// staging file is cut, and the file is cut before Raft can record the
// snapshot, so whenever Raft holds a snapshot whose file lacks the data,
// the sealed image exists. A staged dir is never swept by engine.OpenRoot;
// the state machine prunes it once its applied index reached the dir's
// index (at Open, after every install, and in the background when Update
// passes it) or when it was never sealed, and keeps
// the one a restarted replica is about to be asked for. Tested by
// sm TestStagedImageSurvivesRestart and tools/keeld
// TestCrashBeforeAdoptingStagedImage (the process SIGKILLed between Raft
// recording the cut snapshot and the adoption; it restarts on the staged
// image, hashes equal; Dragonboat panics on the cut file if the image is
// pruned) and sm TestAdoptionSurvivesACrashAtEveryStep (a kill or a power
// loss at each file operation of the adoption; when the staged image
// itself was renamed into place, a kill between that rename and the
// CURRENT swap lost it to the next Sweep and the replica failed every
// restart, which the chaos suite hit). Any failure on the staging side (a format it does not read, a
// failed check, no state machine, too many streams, a stream cut off)
// leaves Dragonboat's file whole and the snapshot on the ordinary path.
//
// What it costs and leaves: the staging runs on the transport's goroutine
// and its own, back-pressured by the queue, so the stream is received at
// the speed the image is written; a staged image whose snapshot Raft then
// ignores (the replica caught up by log, or a newer image came first) is
// pruned in the background once Update's applied index passes it. The
// truncation
// finds Dragonboat's staging file by its private directory layout and
// cuts it only when exactly one file matches with the size the tee saw.
// Measured by bench/catchup (bench/README.md, "Staging the image while
// the stream arrives"): the process writes 1.01-1.20 bytes to the disk
// per image byte, against 2.00-2.30 without staging, and a catch-up takes
// 0.77-0.91x the time at 211 MB and 0.57-1.01x at 528 MB (paired runs);
// still 0.15-0.26 of the disk probe on this two-core machine, where the
// leader and the follower share the CPU.
//
// The second stream (gone). When the sender has pushed the last chunk
// into the socket, its transport reports success (transport/snapshot.go
// processSnapshot) and the NodeHost delivers it to Raft 10 ticks later
// (nodehost.go streamPushDelayTick). The leader moves the remote to "wait"
// with next = the snapshot index + 1 (raft.go handleLeaderSnapshotStatus,
// remote.go becomeWait) and, at the next heartbeat response, sends a
// Replicate whose LogIndex is the snapshot index. The receiver is then
// usually still in step 3 (fsyncing the staged stream: 1.3 s for 500 MB
// at 400 MB/s, against 10 ticks = 200 ms at Keel's 20 ms RTT); its Raft
// log does not hold that index, so it rejects the Replicate with its old
// last index as the hint (handleReplicateMessage), the leader falls back
// to it (remote.go decreaseTo), finds it compacted and streams the whole
// image again. The receiver installed the first and refused the second at
// its end ("chunk rejected"), having staged it in full meanwhile: one more
// full SaveSnapshot on the leader, one more full staged write on the
// follower, concurrent with the install (at 500 MB it was every catch-up).
// SaveSnapshot is not told its target, and failing it trips the same
// breaker for every shard on the host, so the state machine cannot refuse
// the redundant stream. Keel's transport prevents it on the receiving side
// instead (host/snapstream.go): while a stream for (shard, replica) is in
// flight (first chunk seen, last chunk not yet handed to Raft), it drops
// the Replicate messages for that replica. Dropping a Raft message is
// always safe; the leader, its remote in "wait", resends at every
// heartbeat response; once the last chunk's handler returns, the
// InstallSnapshot is in the node's queue ahead of any later message
// (Dragonboat's MessageQueue.Get returns it first), so the next Replicate
// finds the snapshot index and is accepted. The hold ends on the last
// chunk, on a chunk Dragonboat refuses, after 5 s without a chunk (a
// sender that died half-way) or after one handler call ran a minute; past
// those bounds the old behaviour (at most one more stream) returns.
// Checked by integration TestOneSaveSnapshotPerCatchUp: 1 SaveSnapshot,
// and 2 in 5 of 5 runs with the hold disabled.
//
// Measured by bench/catchup on 2026-12-07 before staging (a machine shared
// with other jobs, load average 20-35): the staging tail alone (the
// leader's SaveSnapshot done to RecoverFromSnapshot started: the staged
// file's fsync, rename and the handoff to Raft) took 0.15-0.73 s at 211 MB
// (once 3.1 s) and 0.29-1.96 s at 528 MB, and the staged copy's writeback
// competed with the install for the disk; staging removes both. First
// contact (the restarted NodeHost up to the leader's SaveSnapshot) took
// 0.02-0.23 s with Keel's redialing transport against 0.24-1.38 s without;
// SaveSnapshot ran once per catch-up in every run with the hold (16 of 16)
// against twice in 13 of 17 runs without it (every run at 528 MB).
//
// # Concurrency
//
// Begin runs with Update excluded; Capture.Save runs on Dragonboat's
// snapshot goroutine concurrently with Update and Lookup; Tracker methods
// are safe from Update while captures begin and end. Install runs with
// every other mutating call excluded. Stage runs on the transport's side,
// concurrently with all of them, and writes only its own staged dir.
// A Scheduler runs its own goroutine
// and calls only NodeHost.SyncRequestSnapshot.
package snapshot
