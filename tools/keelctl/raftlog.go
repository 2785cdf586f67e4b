package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/raftlogdb"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// RaftLogInfo describes one replica's Raft log as stored by Dragonboat,
// read with raftlogdb (whose doc gives the format and the Dragonboat
// version it is pinned to), and what the NodeHost directory occupies.
type RaftLogInfo struct {
	RaftLogRange
	// AllocatedBytes is what the NodeHost directory occupies on disk
	// (allocated blocks, as du reports), log and metadata together, for
	// every replica it hosts.
	AllocatedBytes int64 `json:"allocated_bytes"`
}

// RaftLogRange is one replica's part of RaftLogInfo.
type RaftLogRange struct {
	// FirstIndex and LastIndex bound the log as Dragonboat reads it on
	// restart: from one above the snapshot index to the last saved entry.
	// LastIndex is FirstIndex-1 when no entry follows the snapshot.
	FirstIndex uint64 `json:"first_index"`
	LastIndex  uint64 `json:"last_index"`
	// StoredFirstIndex is the lowest entry still on disk: log compaction
	// keeps some entries below the snapshot. 0 when none is stored.
	StoredFirstIndex uint64 `json:"stored_first_index"`
	// SnapshotIndex is the index of the last snapshot Dragonboat recorded.
	SnapshotIndex uint64 `json:"snapshot_index"`
	// SnapshotOnDiskIndex is that snapshot's OnDiskIndex: the last index
	// Dragonboat had handed to the state machine's Update when it took it.
	// It can be below SnapshotIndex, because membership changes and a new
	// leader's empty entry never reach Update. On restart Dragonboat refuses
	// a state machine whose applied index is below it.
	SnapshotOnDiskIndex uint64 `json:"snapshot_on_disk_index"`
}

// openLogDB opens a stopped NodeHost directory's LogDB, mapping raftlogdb's
// errors to keelctl's exit classes.
func openLogDB(nodeHostDir string) (*raftlogdb.DB, error) {
	d, err := raftlogdb.Open(nodeHostDir)
	if err != nil {
		return nil, logDBErr(err)
	}
	return d, nil
}

func logDBErr(err error) error {
	switch {
	case errors.Is(err, raftlogdb.ErrLive):
		return fmt.Errorf("%w: the Raft log is held by a running process: %w", errLive, err)
	case errors.Is(err, raftlogdb.ErrNotFound):
		return fmt.Errorf("%w: %w", errNotKeel, err)
	case errors.Is(err, raftlogdb.ErrCompacted):
		return fmt.Errorf("%w: %w", errProblems, err)
	default:
		return fmt.Errorf("%w: Raft log: %w", errOpen, err)
	}
}

// readRaftLog reads a replica's log range and last snapshot from a stopped
// NodeHost directory. It fails with errLive when a running process holds
// the LogDB.
func readRaftLog(nodeHostDir string, shardID, replicaID uint64) (RaftLogInfo, error) {
	l := openNodeHostLog(nodeHostDir)
	defer l.close()
	return l.info(shardID, replicaID)
}

// logMeta is what an export's metadata needs from the Raft log: the term of
// the entry at the snapshot index and the membership in force there.
type logMeta struct {
	Term       uint64
	Membership pb.Membership
}

// readLogMeta reads the term and membership at index from a stopped
// replica's LogDB (raftlogdb.MembershipAt, which replays config changes as
// Dragonboat does; keeld runs host.ShardConfig, whose
// OrderedConfigChange is off).
func readLogMeta(nodeHostDir string, shardID, replicaID, index uint64) (logMeta, error) {
	d, err := openLogDB(nodeHostDir)
	if err != nil {
		return logMeta{}, err
	}
	defer d.Close()
	term, m, err := d.MembershipAt(shardID, replicaID, index, host.ShardConfig(shardID, replicaID).OrderedConfigChange)
	if err != nil {
		return logMeta{}, logDBErr(err)
	}
	return logMeta{Term: term, Membership: m}, nil
}

// parseMembers parses --members with host.ParseMembers, as keeld does.
func parseMembers(s string) (map[uint64]string, error) {
	m, err := host.ParseMembers(s)
	if err != nil {
		return nil, fmt.Errorf("%w: --members: %w", errUsage, err)
	}
	return m, nil
}

// allocatedBytes sums the allocated blocks of every file under dir, as du
// does, rather than apparent sizes: preallocated WAL files occupy disk
// before they are written.
func allocatedBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("%w: %w", errNotKeel, err)
		}
		return 0, fmt.Errorf("%w: %w", errOpen, err)
	}
	return total, nil
}
