package main

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4"
)

// membershipTimeout bounds the linearizable membership read in /status;
// status must answer quickly even when the shard has no leader.
const membershipTimeout = time.Second

// statusResponse is GET /status. Fields that could not be read are zero and
// the reason is in the matching *_error field.
type statusResponse struct {
	ShardID    uint64 `json:"shard_id"`
	ReplicaID  uint64 `json:"replica_id"`
	NodeHostID string `json:"nodehost_id"`
	// LeaderID is 0 while no leader is known to this replica.
	LeaderID uint64 `json:"leader_id"`
	IsLeader bool   `json:"is_leader"`
	// Term is this replica's Raft term, known leader or not (0 only
	// before the replica has started).
	Term uint64 `json:"term"`
	// AppliedIndex is the last Raft index applied to this replica's state
	// machine.
	AppliedIndex uint64 `json:"applied_index"`
	// Members maps replica IDs to Raft addresses. MembersSource is
	// "consensus" when read through the leader (SyncGetShardMembership),
	// "local" when it is this replica's possibly stale view.
	Members        map[string]string `json:"members"`
	NonVoting      map[string]string `json:"non_voting,omitempty"`
	Witnesses      map[string]string `json:"witnesses,omitempty"`
	MembersSource  string            `json:"members_source"`
	MembersError   string            `json:"members_error,omitempty"`
	ConfigChangeID uint64            `json:"config_change_index"`
	// LogFirstIndex and LogLastIndex are the range of Raft entries held in
	// this replica's log (entries below it were compacted away).
	LogFirstIndex uint64 `json:"log_first_index"`
	LogLastIndex  uint64 `json:"log_last_index"`
	// RaftLog is the log's range, disk use and compaction counters.
	RaftLog raftLogStatus `json:"raft_log"`
	// Snapshots counts snapshot work on this replica.
	Snapshots snapshotStatus `json:"snapshots"`
	// Keys and Bytes describe the user data; exact for small data sets,
	// estimated for large ones (StatsExact says which).
	Keys          uint64  `json:"keys"`
	Bytes         uint64  `json:"bytes"`
	StatsExact    bool    `json:"stats_exact"`
	StatsError    string  `json:"stats_error,omitempty"`
	DiskBytes     uint64  `json:"disk_bytes"`
	RaftAddr      string  `json:"raft_addr"`
	HTTPAddr      string  `json:"http_addr"`
	DataDir       string  `json:"data_dir"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Version       string  `json:"version"`

	// DiskFull is true while writes are refused with 507 because the
	// filesystem's free space is below --disk-reserve; Disk has the
	// figures (diskguard.go).
	DiskFull bool        `json:"disk_full"`
	Disk     *diskStatus `json:"disk,omitempty"`

	// ShardCount is the number of shards the keyspace is split into
	// (--shards, or the shard map's); Shards lists every one this process
	// hosts. The top-level fields above describe the first of them.
	ShardCount uint64        `json:"shard_count"`
	Shards     []shardStatus `json:"shards"`
}

// shardStatus is one hosted shard in /status, read locally (members are
// this replica's view, which may lag).
type shardStatus struct {
	ShardID       uint64            `json:"shard_id"`
	ReplicaID     uint64            `json:"replica_id"`
	LeaderID      uint64            `json:"leader_id"`
	IsLeader      bool              `json:"is_leader"`
	AppliedIndex  uint64            `json:"applied_index"`
	LogFirstIndex uint64            `json:"log_first_index"`
	LogLastIndex  uint64            `json:"log_last_index"`
	Members       map[string]string `json:"members"`
	Keys          uint64            `json:"keys"`
	Bytes         uint64            `json:"bytes"`
	// SnapshotsReceived counts snapshot images this replica installed
	// since the process started: streamed by a leader to a replica whose
	// log was compacted behind it, or to a joining one. Local snapshots of
	// Keel's on-disk state machine are metadata only and never installed,
	// so they do not count.
	SnapshotsReceived uint64 `json:"snapshots_received"`
	// SnapshotsStaged counts received images built while their stream
	// arrived, and SnapshotsAdopted the installs that published such an
	// image instead of writing it again from Dragonboat's staged copy.
	SnapshotsStaged  uint64 `json:"snapshots_staged"`
	SnapshotsAdopted uint64 `json:"snapshots_adopted"`
}

// shardStatuses describes every shard this process hosts, in shard order.
func (s *server) shardStatuses() []shardStatus {
	members := map[uint64]map[string]string{}
	if info := s.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true}); info != nil {
		for _, si := range info.ShardInfoList {
			members[si.ShardID] = idMap(si.Replicas)
		}
	}
	placement := s.route.placed()
	out := make([]shardStatus, 0, len(placement))
	for _, p := range placement {
		ss := shardStatus{ShardID: p.ShardID, ReplicaID: p.ReplicaID, Members: members[p.ShardID]}
		if leader, _, ok, err := s.nh.GetLeaderID(p.ShardID); err == nil && ok {
			ss.LeaderID, ss.IsLeader = leader, leader == p.ReplicaID
		}
		if m := s.factory.StateMachine(p.ShardID, p.ReplicaID); m != nil {
			ss.AppliedIndex = m.AppliedIndex()
			st := m.SnapshotStats()
			ss.SnapshotsReceived, ss.SnapshotsStaged, ss.SnapshotsAdopted = st.Received, st.Staged, st.Adopted
		}
		if lr, err := s.nh.GetLogReader(p.ShardID); err == nil {
			ss.LogFirstIndex, ss.LogLastIndex = lr.GetRange()
		}
		if ls := s.route.get(p.ShardID); ls != nil {
			if es, err := ls.client.LocalStats(false); err == nil {
				ss.Keys, ss.Bytes = es.Keys, es.Bytes
			}
		}
		out = append(out, ss)
	}
	return out
}

func (s *server) handleStatus(w http.ResponseWriter, r *http.Request) {
	members := r.URL.Query().Get("members")
	if members != "" && members != "local" && members != "consensus" {
		s.fail(w, fmt.Errorf("%w: members=%q must be local or consensus", errBadRequest, members))
		return
	}
	st := statusResponse{
		ShardID:       s.cfg.ShardID,
		ReplicaID:     s.cfg.ReplicaID,
		NodeHostID:    s.nh.ID(),
		RaftAddr:      s.cfg.RaftAddr,
		HTTPAddr:      s.cfg.HTTPAddr,
		DataDir:       s.cfg.DataDir,
		UptimeSeconds: time.Since(s.started).Seconds(),
		Version:       version(),
	}
	// Dragonboat reports the term with or without a known leader; during
	// an election it is the term being contested.
	if leader, term, ok, err := s.nh.GetLeaderID(s.cfg.ShardID); err == nil {
		st.Term = term
		if ok {
			st.LeaderID = leader
			st.IsLeader = leader == s.cfg.ReplicaID
		}
	}
	st.AppliedIndex = s.appliedIndex()
	// members=local skips the read through the leader: a monitor polling
	// /status would otherwise keep shard 1 from quiescing.
	s.fillMembers(r.Context(), &st, members == "local")
	if lr, err := s.nh.GetLogReader(s.cfg.ShardID); err == nil {
		st.LogFirstIndex, st.LogLastIndex = lr.GetRange()
	}
	if es, err := s.client.LocalStats(false); err == nil {
		st.Keys, st.Bytes, st.StatsExact = es.Keys, es.Bytes, es.Exact
	} else {
		st.StatsError = err.Error()
	}
	st.RaftLog = s.raftLogStatus(st.LogFirstIndex, st.LogLastIndex)
	st.Snapshots = s.snapshotStatus()
	st.DiskBytes = diskUsage(s.cfg.SMDir()) + st.RaftLog.DiskBytes
	if s.disk != nil {
		var ds diskStatus
		st.DiskFull, ds = s.disk.status()
		st.Disk = &ds
	}
	st.ShardCount = s.route.n
	st.Shards = s.shardStatuses()
	writeJSON(w, http.StatusOK, st)
}

// raftLogStatus is the Raft log part of /status.
type raftLogStatus struct {
	FirstIndex uint64 `json:"first_index"`
	LastIndex  uint64 `json:"last_index"`
	// DiskBytes is the allocated size (du) of the Raft directory.
	DiskBytes uint64 `json:"disk_bytes"`
	// Compaction is false when --log-compaction=false; the counters are then
	// zero.
	Compaction     bool   `json:"compaction"`
	Compactions    uint64 `json:"compactions"`
	EntriesRemoved uint64 `json:"entries_removed"`
	Reclaims       uint64 `json:"reclaims"`
	BytesReclaimed uint64 `json:"bytes_reclaimed"`
	Errors         uint64 `json:"errors"`
}

func (s *server) raftLogStatus(first, last uint64) raftLogStatus {
	st := raftLogStatus{FirstIndex: first, LastIndex: last, DiskBytes: diskUsage(s.cfg.RaftDir())}
	comp := s.svc.compactorOf(s.cfg.ShardID)
	if comp != nil {
		cs := comp.Stats()
		st.Compaction = true
		st.Compactions, st.EntriesRemoved = cs.Compactions, cs.EntriesRemoved
		st.Reclaims, st.BytesReclaimed, st.Errors = cs.Reclaims, cs.BytesReclaimed, cs.Errors
	}
	return st
}

// snapshotStatus is the snapshot part of /status: the state machine's
// counters and the snapshot timer's.
type snapshotStatus struct {
	sm.SnapshotStats
	TimerTaken     uint64 `json:"timer_taken"`
	TimerSkipped   uint64 `json:"timer_skipped"`
	TimerRejected  uint64 `json:"timer_rejected"`
	TimerFailed    uint64 `json:"timer_failed"`
	LastTimerIndex uint64 `json:"last_timer_index"`
}

func (s *server) snapshotStatus() snapshotStatus {
	return s.snapshotStatusOf(s.cfg.ShardID, s.cfg.ReplicaID)
}

// snapshotStatusOf is snapshotStatus for any replica this process hosts.
func (s *server) snapshotStatusOf(shardID, replicaID uint64) snapshotStatus {
	var st snapshotStatus
	if m := s.factory.StateMachine(shardID, replicaID); m != nil {
		st.SnapshotStats = m.SnapshotStats()
	}
	if ss := s.svc.of(shardID); ss != nil && ss.sched != nil {
		ss := ss.sched.Stats()
		st.TimerTaken, st.TimerSkipped, st.TimerRejected, st.TimerFailed = ss.Taken, ss.Skipped, ss.Rejected, ss.Failed
		st.LastTimerIndex = ss.LastIndex
	}
	return st
}

// appliedIndex reads the state machine's applied index without a lookup.
func (s *server) appliedIndex() uint64 {
	if m := s.factory.StateMachine(s.cfg.ShardID, s.cfg.ReplicaID); m != nil {
		return m.AppliedIndex()
	}
	return 0
}

// fillMembers asks the shard for its membership when a leader is known and
// falls back to the local view otherwise, so /status never waits for an
// election. local asks for the local view only: the read through the
// leader is a ReadIndex, a Raft round that wakes a quiesced shard.
func (s *server) fillMembers(ctx context.Context, st *statusResponse, local bool) {
	if st.LeaderID != 0 && !local {
		ctx, cancel := context.WithTimeout(ctx, membershipTimeout)
		defer cancel()
		m, err := s.nh.SyncGetShardMembership(ctx, s.cfg.ShardID)
		if err == nil {
			st.Members, st.NonVoting, st.Witnesses = idMap(m.Nodes), idMap(m.NonVotings), idMap(m.Witnesses)
			st.ConfigChangeID = m.ConfigChangeID
			st.MembersSource = "consensus"
			return
		}
		st.MembersError = err.Error()
	}
	st.MembersSource = "local"
	info := s.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if info == nil {
		return
	}
	for _, si := range info.ShardInfoList {
		if si.ShardID == s.cfg.ShardID {
			st.Members = idMap(si.Replicas)
			st.ConfigChangeID = si.ConfigChangeIndex
		}
	}
}

func idMap(m map[uint64]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for id, addr := range m {
		out[strconv.FormatUint(id, 10)] = addr
	}
	return out
}

// version is the module version keeld was built from, or "devel".
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	return v + " " + bi.GoVersion
}
