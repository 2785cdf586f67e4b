package host

import (
	"github.com/keel-db/keel/logcompact"
	"github.com/lni/dragonboat/v4/config"
)

// LogDBConfig is Keel's recommended Dragonboat LogDB configuration.
//
// Dragonboat's default (the "large memory" config) runs 16 LogDB shards,
// each a Pebble instance with 128 MiB memtables whose WAL files are
// preallocated: an empty NodeHost already holds about 148 MB of disk and each
// shard keeps about 740 MB allocated after log compaction (docs/design.md §4).
// Keel hosts one or a few Raft shards per NodeHost, so Keel uses the tiny
// config with 2 MiB write buffers on a single LogDB shard: the preallocated
// WAL files stay small, the log's disk use follows compaction down to a few
// MiB (the bound is derived in logcompact's documentation), and memory
// stays far below Keel's 200 MiB per-replica budget. Hosts running hundreds of shards on one
// NodeHost should raise Shards.
func LogDBConfig() config.LogDBConfig {
	c := config.GetTinyMemLogDBConfig()
	c.Shards = 1
	c.KVWriteBufferSize = 2 << 20
	return c
}

// ShardConfig returns Keel's default Raft settings for a replica, for a
// NodeHost whose RTTMillisecond is about one network round trip.
//
//   - ElectionRTT 10, HeartbeatRTT 1: Dragonboat's recommended 10:1 ratio.
//   - CheckQuorum and PreVote: a partitioned or paused leader steps down and
//     a returning replica does not disrupt a healthy leader.
//   - SnapshotEntries 0: snapshots are scheduled by Keel (see the snapshot
//     package), not by Dragonboat's entry count, unless the host sets it.
//   - SnapshotCompressionType NoCompression: a Keel stream is Pebble
//     sstables, whose blocks Pebble already compresses (Snappy), so a
//     second layer gains nothing (stream and staged file within 0.1% of
//     each other, random or text values) and costs CPU on both ends, where
//     a catch-up is bound (snapshot/doc.go, "Compression").
//   - CompactionOverhead logcompact.DefaultKeepEntries: a snapshot taken
//     without logcompact's option (SnapshotEntries, a plain RequestSnapshot)
//     still keeps the trailing window's entry count.
//   - Dragonboat's LogDB auto compactions stay on, so a replica's Raft-log
//     disk comes back after every snapshot. A host that runs a
//     logcompact.Compactor for the replica calls logcompact.Configure on
//     this config, which turns them off so the Compactor issues (and
//     measures) each reclamation itself.
//   - Quiesce stays off. A host running many mostly idle shards may turn it
//     on (sc.Quiesce = true; keeld --quiesce): an idle shard then stops
//     heartbeating. The price, both seen in Keel's tests: a quiesced
//     leader sends nothing, so a replica joining an idle shard waits for
//     the shard's next write or read to wake it; and a single-member shard
//     whose Open outlasts its election timeout can quiesce with no leader
//     and drop proposals (ErrShardNotReady) until a read or a Raft message
//     wakes it. Dragonboat still ticks every shard when quiesced, so the
//     saving is the heartbeats, not the ticks: a host with many shards
//     also needs a longer tick (RTTMillisecond's doc, RTTForShards). A
//     shard quiesces after 100 ticks without traffic (2 s at 20 ms, 20 s
//     at 200 ms), and the election timeout of the second caveat is
//     10-20 ticks too.
func ShardConfig(shardID, replicaID uint64) config.Config {
	return config.Config{
		ShardID:                 shardID,
		ReplicaID:               replicaID,
		ElectionRTT:             10,
		HeartbeatRTT:            1,
		CheckQuorum:             true,
		PreVote:                 true,
		CompactionOverhead:      logcompact.DefaultKeepEntries,
		SnapshotCompressionType: config.NoCompression,
	}
}

// RTTMillisecond is the Dragonboat tick keeld and keelctl use by default. 20
// ms is a few loopback or LAN round trips; with ShardConfig's ElectionRTT of
// 10 a leader is elected within about 200-400 ms and a busy two-core host
// does not lose its leader to a scheduling hiccup.
//
// # The tick and many shards
//
// Dragonboat's tick worker sends every shard a tick message every
// RTTMillisecond, and a step worker then runs a full step for that shard,
// whether it is busy, idle or quiesced (Quiesce only stops heartbeats and
// the election timer). An idle host's CPU is therefore about shards x
// ticks/s x the cost of one step: with 1,000 shards at 20 ms, 50,000 steps
// a second (bench/README.md, "Idle CPU and the tick", has the profiles and
// the figures at 20, 100 and 200 ms). A host running many shards raises the
// tick (Options.RTTMillisecond, keeld --rtt-ms; RTTForShards is Keel's
// rule). What a tick of T ms changes, all counted in ticks in Dragonboat:
//
//   - Failover: ShardConfig's ElectionRTT 10 and HeartbeatRTT 1 mean a
//     heartbeat every T and a dead leader replaced after 10-20 T (1-2 s at
//     T = 100), and CheckQuorum steps a cut-off leader down after 10 T.
//   - Quiesce: a shard quiesces after 10 election timeouts idle (100 T).
//   - Request deadlines are rounded down to whole ticks, and one shorter
//     than T fails at once with ErrTimeoutTooSmall (keeld answers 503):
//     clients' deadlines must exceed T.
//   - Snapshot streams: the leader learns that a stream was sent 10 T
//     after its last chunk (2 T after a SnapshotReceived), so a catch-up
//     by snapshot takes about 10 T longer.
//   - Not changed: the Raft log's writes, replication and commit latency
//     of a busy shard (messages are sent as soon as a step runs, not on
//     the tick), and Dragonboat's periodic Sync of on-disk state machines
//     (its interval is in milliseconds).
//
// Every replica of a shard must use the same tick: a follower whose
// election timeout is shorter than the leader's heartbeat interval starts
// needless elections.
const RTTMillisecond = 20

// ShardsPerTickMillisecond is RTTForShards' rule: one millisecond of tick
// for every this many shards on the NodeHost.
const ShardsPerTickMillisecond = 5

// MaxRTTMillisecond caps RTTForShards: past a second, failover (10-20
// ticks) would take longer than most clients wait.
const MaxRTTMillisecond = 1000

// RTTForShards is the tick Keel recommends for a NodeHost running shards
// shards: RTTMillisecond up to 100 shards, then one millisecond per
// ShardsPerTickMillisecond shards (200 ms at 1,000), at most
// MaxRTTMillisecond. It keeps an idle host near 5,000 shard-ticks a second:
// bench/shards measured 1,000 idle shards at 4-5% of a core with a 200 ms
// tick and 6-7.5% with 100 ms, Keel and Dragonboat's no-op state machine
// alike, on a loaded two-core machine. keeld passes it the cluster's shard
// count, which every process knows alike, so all replicas of a shard tick
// alike.
func RTTForShards(shards int) uint64 {
	rtt := uint64(RTTMillisecond)
	if shards > 0 {
		rtt = max(rtt, uint64(shards)/ShardsPerTickMillisecond)
	}
	return min(rtt, MaxRTTMillisecond)
}

// GoMemoryLimitMiB is the soft limit on the Go heap (debug.SetMemoryLimit)
// keeld sets for a process running one replica, and GoMemoryMiBPerShard
// what it adds for every replica past the first (tools/keeld says how
// they were measured). Keel itself sets no limit: the Go runtime's
// settings belong to the process, so a host embedding Keel picks its own.
const (
	GoMemoryLimitMiB    = 96
	GoMemoryMiBPerShard = 2
)

// GoMemoryLimitForShards is keeld's default Go memory limit in MiB for a
// process running shards replicas: 2,094 MiB at 1,000. Without a limit
// the Go heap grows to twice its live size before each collection
// (GOGC=100), and at many shards the live size is large and mostly never
// touched (Dragonboat's per-shard queues), so collections come rarely and
// the garbage of a write load stays resident until they do: measured at
// 1,000 shards under write load, the limit kept Keel's RSS at the no-op
// state machine's under the same limit, where without one it was 145-817
// MiB above, and cost Keel writes/s, its live heap being closer to the
// limit (bench/README.md).
func GoMemoryLimitForShards(shards int) int64 {
	return GoMemoryLimitMiB + GoMemoryMiBPerShard*int64(max(shards-1, 0))
}

// NodeHostConfig is the NodeHost configuration keeld runs with: the Raft
// log under nodeHostDir, Keel's LogDB settings, RTTMillisecond, and a new
// PeerGuard as the transport (PeerGuardOf returns it), so no batch a peer
// sends can make the NodeHost panic. Tools that rewrite a stopped replica's
// log (keelctl import) must use the same. The caller sets DeploymentID
// (DeploymentID derives one from a cluster name): Dragonboat records it in
// nodeHostDir and refuses to reopen the directory under another.
func NodeHostConfig(nodeHostDir, raftAddr string) config.NodeHostConfig {
	c := config.NodeHostConfig{
		NodeHostDir:    nodeHostDir,
		RTTMillisecond: RTTMillisecond,
		RaftAddress:    raftAddr,
	}
	c.Expert.LogDB = LogDBConfig()
	c.Expert.TransportFactory = NewPeerGuard()
	return c
}
