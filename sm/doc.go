// Package sm is Keel's Dragonboat state machine: it implements
// statemachine.IOnDiskStateMachine over an engine.Engine, owns the command
// codec, applies commands deterministically, and serves lookups.
//
// # Command format (version 1)
//
// Every command starts with a version byte and an operation byte. Byte
// strings are framed as uvarint(len) followed by the bytes.
//
//	+------+----+----------------------------------------------------+
//	| 0x01 | op | body                                               |
//	+------+----+----------------------------------------------------+
//
//	op 1 Put          key value
//	op 2 Delete       key
//	op 3 DeleteRange  start end                  (start < end)
//	op 4 Txn          uvarint(nconds) cond*  uvarint(nops) txnop*
//
//	cond   kind(1 byte) key [value]   kind 1 absent, 2 exists, 3 value equals
//	                                  (value only for kind 3)
//	txnop  op(1 byte) key [value]     op 1 put (with value), 2 delete
//
// A command must decode exactly, with no trailing bytes, and every uvarint
// must be in its minimal form, so a command has exactly one encoding
// (Decode then Encode gives back the input). Limits: keys are 1
// to MaxKeySize (4 KiB) bytes, values at most MaxValueSize (1 MiB), a
// command at most MaxCommandSize (2 MiB), a transaction at most MaxTxnItems
// (1024) conditions and operations together, with at least one operation.
//
// # Apply
//
// Update applies all entries of one call in one Pebble batch, followed by the
// index of the last applied entry, and commits it to the memtable only: the
// engine runs without a WAL, so the batch becomes durable at the next flush
// (Sync, which Dragonboat calls before compacting the Raft log, flushes;
// so do a full memtable, the shared memtable budget and Close). After a
// crash Open returns the applied index of the last flush and Dragonboat
// replays the rest of the log. For each entry:
//
//  1. index <= applied index: skipped, CodeAlreadyApplied. This happens after
//     a snapshot image later than its snapshot index is installed.
//  2. the command does not decode or breaks a limit: CodeInvalidCommand with
//     the reason as Data. Decoding depends on the bytes alone, so every
//     replica returns the same result; Update never returns an error for a
//     bad command, because an error halts the replica.
//  3. Put, Delete, DeleteRange: applied, CodeOK.
//  4. Txn: conditions are checked in order against the state including every
//     earlier entry of the batch; the first that fails gives
//     CodePreconditionFailed with its position and nothing is written.
//     Otherwise the operations apply in order, CodeOK. All or nothing, like
//     an etcd transaction with an empty else branch.
//
// Apply reads nothing but the entries and the stored state: no clock, no
// randomness, no map iteration.
//
// # Lookups
//
// Lookup takes GetQuery, ScanQuery, StatsQuery or HashQuery. Each is served
// from one consistent Pebble view, so a StateHash and the applied index
// returned with it describe the same state.
//
// # Snapshots
//
// PrepareSnapshot, SaveSnapshot and RecoverFromSnapshot (snapshot.go) call
// into the snapshot package, whose documentation gives the design and the
// stream format. While a capture is pending, Update records the keys it
// writes in the state machine's snapshot.Tracker before committing.
// StageImage (staged.go) builds a received image aside while its stream
// is still arriving, called by host's transport, and RecoverFromSnapshot
// then publishes that image when the stream's header matches it instead of
// reading the stream; Open and every install prune the staged images the
// applied index has passed, and Update starts a background prune when its
// applied index reaches the lowest one (stagedFloor; best effort: one that
// escapes it waits for the next Open or install) (snapshot package,
// "Receiving while the stream arrives").
//
// # Idle tablets
//
// With Config.IdleClose set (a host sets it, host.Config.TabletIdleClose,
// default 2 s), a replica's tablet is open only while it is used:
//
//   - A timer closes the tablet once nothing (Update, Lookup, a snapshot)
//     has used it for IdleClose and no snapshot capture or save pins it:
//     Close flushes, closes Pebble and writes the closed record (see
//     engine, "Closed tablets"). Sync of a closed tablet has nothing to do.
//     If that flush fails the state machine is ahead of its tablet; every
//     later call then returns the error, so Dragonboat halts the replica
//     and a restart replays the log from what the tablet holds.
//   - With Config.KeepOpen (host.Config.TabletKeepOpen, default 32) the
//     timer closes an idle tablet only while more than KeepOpen tablets
//     are open on the shared resources (engine.Shared.ReserveIdleClose
//     counts and reserves under one lock, so racing timers never go
//     below it): a host with a few shards never closes one, and one with
//     thousands keeps memory for KeepOpen of its idle tablets. Nor does
//     it close any while KeepOpen or more writable reopens came in the
//     last 10 s (a reopen storm: a restart, then writes to every shard),
//     so a write wave does not close tablets between two writes.
//   - The idle time adapts per tablet: a tablet reopened within twice its
//     idle time of closing doubles it (up to 32 x IdleClose), one that
//     stayed closed longer halves it back, so a host whose writes slow
//     down does not fall into closing tablets between two writes and
//     reopening them for the next; and a tablet stays open at least 20
//     times as long as its last reopen for writing took, and one Open
//     opened stays open until its first use, for up to 32 x IdleClose (a
//     host takes longer than IdleClose to start many shards; see
//     tablet.go).
//   - Open returns the applied index from a closed record that still
//     describes the live image, without opening Pebble (no fsync, no
//     memory); otherwise it opens the tablet as before.
//   - A Lookup on a closed tablet opens it read-only (no fsync, and
//     without Pebble's write-side structures); Update, PrepareSnapshot and
//     RecoverFromSnapshot open it for writing, closing a read-only one
//     first. Every reopen checks that the tablet's applied index is the
//     one the state machine holds (ErrCorrupt otherwise).
//
// Why this is exact: the applied index Open returns is the tablet's
// durable one (the closed record counts only for the state it was written
// in), and a tablet closes only after a successful flush of everything
// Update applied, so Dragonboat replays exactly the entries after it, as
// after any restart. StateMachine.mu is held shared by every call that
// uses the tablet, for the whole call, and exclusively to open or close
// it, so no call ever sees a tablet close under it; a SaveSnapshot, which
// runs without it, is covered by its capture's pin.
//
// # Concurrency
//
// Dragonboat serialises Open, Update, Sync, PrepareSnapshot,
// RecoverFromSnapshot and Close. Lookup and SaveSnapshot run concurrently
// with them, and so does the idle timer. StageImage runs on the
// transport's goroutine, concurrently with everything: it writes only its
// own staged dir, which stageMu keeps from being pruned while it is built. StateMachine.mu is held shared by
// Lookup and Update for the whole call and exclusively only to open, swap
// or close the engine, so a call never sees a closed engine.
package sm
