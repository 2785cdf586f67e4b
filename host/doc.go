// Package host is what a program embedding Keel in a Dragonboat NodeHost
// uses to run Keel shards: the state-machine factory and the resources its
// shards share, the NodeHost's lifetime around them, Keel's Dragonboat
// defaults, and disaster-recovery export and import.
//
// # What it owns
//
//   - Host (host.go): opens the shared resources, then a NodeHost with
//     Keel's defaults; starts replicas; removes a replica's data, Keel's
//     tablet included (Dragonboat's RemoveData clears only its own);
//     closes the NodeHost and then the shared resources.
//   - Factory (config.go): creates Keel state machines for
//     NodeHost.StartOnDiskReplica, owns the engine.Shared every one of them
//     uses (one block cache, one file cache, one memtable budget), and
//     keeps them reachable by shard and replica for metrics, status and
//     the log compactor's stream floor.
//   - Keel's Dragonboat defaults (nodehost.go): LogDBConfig, ShardConfig,
//     NodeHostConfig, RTTMillisecond.
//   - Export and Import of snapshots (export.go); Import verifies the whole
//     export before it changes anything.
//   - PeerGuard (peerguard.go), the Raft transport NodeHostConfig
//     installs: Dragonboat's TCP transport behind a filter that drops, and
//     counts, every received batch that would make Dragonboat panic (a
//     known replica ID from another address, no recipient, a malformed
//     source address) or that does not belong here (another deployment
//     ID, a shard not hosted). It also shortens catch-ups: it holds back a
//     replica's Replicate messages while a snapshot stream for it is still
//     being received (snapstream.go; without it the leader streamed the
//     whole image a second time); with AttachFactory (Open calls it) it
//     hands every stream, chunk by chunk, to the receiving state machine,
//     which builds the image aside while it arrives, and then cuts
//     Dragonboat's own staged copy of the stream to its first block before
//     Dragonboat fsyncs it (snaptee.go), so the image is written to the
//     disk once, not twice; and its message connections outlive a
//     peer's outage so a restarted peer hears from this host within 50 ms,
//     not after Dragonboat's circuit breaker backoff (redial.go). Without
//     MutualTLS the transport sends each message batch in one write
//     (sendcoalesce.go) and listens itself, reading batches and snapshot
//     chunks through a buffer (recvbuffer.go); both keep Dragonboat's wire
//     format.
//     DeploymentID (deployment.go) derives a deployment ID from a cluster
//     name; neither authenticates peers.
//   - Member-list parsing (members.go) and slog routing for Dragonboat's
//     process-global loggers (logger.go), which lets through at most one warning or
//     error per package and format string every RepeatInterval (10 s),
//     the next carrying a "suppressed" count, so a down peer does not
//     flood the log; Dragonboat's Panicf panics with an error value, and
//     OnFatal hooks it.
//   - DiskFullFS (diskfull.go): Dragonboat's filesystem with ENOSPC sent to
//     a handler (free a ballast and retry, or end the process) before
//     Dragonboat or its LogDB's Pebble can panic on it; IsNoSpace and
//     IsStorageFailure classify errors. It also keeps Dragonboat from
//     writing the part of a staged snapshot stream the transport stages
//     itself (stagingfs.go): on a host that runs it, as keeld does, that
//     copy is never written at all, not only cut before writeback, and a
//     stream whose staging then fails is refused at its end and sent
//     again in full.
//
// # Lifetimes
//
// Dragonboat creates and closes state machines one replica at a time, so
// the resources every shard shares belong to neither: they belong to the
// Factory, and the Host closes the Factory only after the NodeHost (and so
// every state machine) has closed:
//
//	h, _ := host.Open(host.Options{NodeHostDir: ..., RaftAddress: ..., Keel: host.Config{RootDir: ...}})
//	defer h.Close()                 // NodeHost first, then the shared resources
//	h.StartReplica(members, false, host.ShardConfig(shardID, replicaID))
//
// # Concurrency
//
// Host and Factory are safe for concurrent use; Factory's map is guarded by
// its mutex. UseSlog may be called more than once; the last call wins.
// Errors are the sentinels in errors.go wrapped with %w, or Dragonboat's.
package host
