// Package client is how a program talks to a Keel shard running in a
// Dragonboat NodeHost: writes proposed through Raft and reads served by the
// state machine. It is the one package most embedders import; it knows
// nothing of how the state machine is stored.
//
// # What it owns
//
//   - Client (client.go): Put, Delete, DeleteRange and Txn proposed through
//     Raft; Get and Scan linearizable (SyncRead) or Stale* from the local
//     replica. Requests Dragonboat dropped before they reached the log
//     (ErrShardNotReady, ErrSystemBusy, ...) are retried until the
//     context's deadline; a linearizable read that times out is retried in
//     short attempts (reads change nothing); a write that timed out is never
//     retried, because it may have been applied.
//   - Batcher (batcher.go): group commit for single-key writes. Concurrent
//     Put and Delete calls leave in one proposal, a transaction without
//     conditions; each call still returns after its own write is applied.
//   - Command helpers (commands.go): the sm codec's types and encoders, so
//     a host that proposes through NodeHost itself imports only this
//     package.
//
// # Errors
//
// A command the state machine refused wraps sm.ErrInvalidCommand; other
// sentinels are in errors.go; Dragonboat's own errors (ErrTimeout,
// ErrCanceled, ErrShardNotFound, ...) come through wrapped, matched with
// errors.Is.
//
// # Concurrency
//
// Client holds no mutable state and is safe for concurrent use. Batcher's
// queue and in-flight count are guarded by its mutex; its proposals run on
// goroutines of their own.
package client
