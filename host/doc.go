// Package plugin is Keel's host-facing API: everything a program embedding
// Keel in a Dragonboat NodeHost, or loading it as a Go plugin, needs.
//
// # What it owns
//
//   - Factory (config.go): creates Keel state machines for
//     NodeHost.StartOnDiskReplica and keeps them reachable by shard and
//     replica, for metrics, status and the log compactor's floor.
//   - Client (client.go): writes proposed through Raft (Put, Delete,
//     DeleteRange, Txn) and reads (linearizable Get/Scan through
//     SyncRead, or Stale* from the local replica). Requests Dragonboat
//     dropped before they reached the log are retried until the context's
//     deadline; anything else is returned as is.
//   - Batcher (batcher.go): group commit for single-key writes. Concurrent
//     Put and Delete calls leave in one proposal, a transaction without
//     conditions; each call still returns after its own write is applied.
//   - Command helpers (commands.go) re-exporting the sm codec, so hosts
//     that propose themselves need import only this package.
//   - Keel's Dragonboat defaults (nodehost.go): LogDBConfig, ShardConfig,
//     NodeHostConfig, RTTMillisecond. ShardConfig leaves LogDB space
//     reclamation to logcompact.Compactor, which a host must run.
//   - Export and Import of snapshots for disaster recovery (export.go);
//     Import verifies the whole export before it changes anything.
//   - The storage-plugin handshake (descriptor.go, loader.go): Descriptor,
//     APIVersion, and Load, which classifies every way a .so can fail to
//     load. plugin/keelso is the plugin's main package.
//   - Member-list parsing (members.go) and slog routing for Dragonboat's
//     loggers (logger.go), with OnFatal, a hook on Dragonboat's Panicf.
//   - DiskFullFS (diskfull.go): Dragonboat's filesystem with ENOSPC sent to
//     a handler (free a ballast and retry, or end the process) before
//     Dragonboat or its LogDB's Pebble can panic on it; IsNoSpace and
//     IsStorageFailure classify errors.
//
// # Concurrency
//
// Factory, Client and Batcher are safe for concurrent use. Factory's map
// is guarded by its mutex; Client holds no mutable state; Batcher's queue
// and in-flight count are guarded by its mutex, and its proposals run on
// goroutines of their own. UseSlog may be called more than once; the last
// call wins. Errors are the sentinels in errors.go, wrapped with %w, or
// Dragonboat's own (ErrTimeout, ErrCanceled, ...), which callers match with
// errors.Is.
package host
