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
//   - SnapshotCompressionType Snappy: the one compression layer for snapshot
//     streams (Pebble sstables are already compressed; the WAL part gains).
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
//     saving is the heartbeats, not the ticks (bench/README.md).
func ShardConfig(shardID, replicaID uint64) config.Config {
	return config.Config{
		ShardID:                 shardID,
		ReplicaID:               replicaID,
		ElectionRTT:             10,
		HeartbeatRTT:            1,
		CheckQuorum:             true,
		PreVote:                 true,
		CompactionOverhead:      logcompact.DefaultKeepEntries,
		SnapshotCompressionType: config.Snappy,
	}
}

// RTTMillisecond is the Dragonboat tick keeld and keelctl use. 20 ms is a
// few loopback or LAN round trips; with ShardConfig's ElectionRTT of 10 a
// leader is elected within about 200-400 ms and a busy two-core host does
// not lose its leader to a scheduling hiccup.
const RTTMillisecond = 20

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
