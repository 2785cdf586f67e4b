package main

import (
	"encoding/binary"
	"fmt"

	oldpebble "github.com/cockroachdb/pebble"
	"github.com/keel-db/keel/host"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// logMeta is what an export's metadata needs from the Raft log: the term of
// the entry at the snapshot index and the membership in force there.
type logMeta struct {
	Term       uint64
	Membership pb.Membership
}

// readLogMeta reconstructs the term and membership at index from a stopped
// replica's LogDB: it starts from the last snapshot record at or below
// index (Dragonboat records the membership in every snapshot, dummy ones
// included) and replays the config-change entries after it. A config change
// Dragonboat rejected when applying it (e.g. re-adding a removed replica)
// is replayed as if it took effect; pass --members when that matters.
func readLogMeta(nodeHostDir string, shardID, replicaID, index uint64) (logMeta, error) {
	dirs, err := logDBDirs(nodeHostDir)
	if err != nil {
		return logMeta{}, err
	}
	if len(dirs) != 1 {
		return logMeta{}, fmt.Errorf("%w: want one LogDB under %s, found %d", errNotKeel, nodeHostDir, len(dirs))
	}
	db, err := oldpebble.Open(dirs[0], &oldpebble.Options{ReadOnly: true, Logger: quietLogger{}})
	if err != nil {
		if isLockErr(err) {
			return logMeta{}, fmt.Errorf("%w: the Raft log in %s is held by a running process; stop it first", errLive, dirs[0])
		}
		return logMeta{}, fmt.Errorf("%w: open Raft log %s: %v", errOpen, dirs[0], err)
	}
	defer db.Close()

	m := logMeta{Membership: pb.Membership{
		Addresses: map[uint64]string{}, NonVotings: map[uint64]string{},
		Witnesses: map[uint64]string{}, Removed: map[uint64]bool{},
	}}
	var from uint64 = 1
	it := db.NewIter(&oldpebble.IterOptions{
		LowerBound: logKey(hdrSnapshot, shardID, replicaID, 0),
		UpperBound: logKey(hdrSnapshot, shardID, replicaID, index+1),
	})
	if it.Last() {
		var ss pb.Snapshot
		if err := ss.Unmarshal(it.Value()); err != nil {
			_ = it.Close()
			return m, fmt.Errorf("%w: snapshot record does not decode: %v", errOpen, err)
		}
		m.Term = ss.Term
		copyMembership(&m.Membership, ss.Membership)
		from = ss.Index + 1
	}
	if err := it.Close(); err != nil {
		return m, fmt.Errorf("%w: read Raft log: %v", errOpen, err)
	}
	if from > index {
		return m, nil
	}
	it = db.NewIter(&oldpebble.IterOptions{
		LowerBound: logKey(hdrEntry, shardID, replicaID, from),
		UpperBound: logKey(hdrEntry, shardID, replicaID, index+1),
	})
	defer it.Close()
	want := from
	for ok := it.First(); ok; ok = it.Next() {
		var e pb.Entry
		if err := e.Unmarshal(it.Value()); err != nil {
			return m, fmt.Errorf("%w: Raft log entry does not decode: %v", errOpen, err)
		}
		if k := it.Key(); len(k) != 28 || binary.BigEndian.Uint64(k[20:]) != e.Index || e.Index != want {
			return m, fmt.Errorf("%w: Raft log entries %d..%d are missing (found %d)", errProblems, want, index, e.Index)
		}
		want++
		m.Term = e.Term
		if e.Type == pb.ConfigChangeEntry {
			var cc pb.ConfigChange
			if err := cc.Unmarshal(e.Cmd); err != nil {
				return m, fmt.Errorf("%w: config change at %d does not decode: %v", errOpen, e.Index, err)
			}
			applyConfigChange(&m.Membership, cc, e.Index)
		}
	}
	if want != index+1 {
		return m, fmt.Errorf("%w: Raft log entries %d..%d are missing", errProblems, want, index)
	}
	return m, nil
}

func copyMembership(dst *pb.Membership, src pb.Membership) {
	dst.ConfigChangeId = src.ConfigChangeId
	for id, a := range src.Addresses {
		dst.Addresses[id] = a
	}
	for id, a := range src.NonVotings {
		dst.NonVotings[id] = a
	}
	for id, a := range src.Witnesses {
		dst.Witnesses[id] = a
	}
	for id := range src.Removed {
		dst.Removed[id] = true
	}
}

// applyConfigChange follows Dragonboat's internal/rsm/membership.go apply.
func applyConfigChange(m *pb.Membership, cc pb.ConfigChange, index uint64) {
	m.ConfigChangeId = index
	switch cc.Type {
	case pb.AddNode:
		delete(m.NonVotings, cc.ReplicaID)
		m.Addresses[cc.ReplicaID] = cc.Address
	case pb.AddNonVoting:
		m.NonVotings[cc.ReplicaID] = cc.Address
	case pb.AddWitness:
		m.Witnesses[cc.ReplicaID] = cc.Address
	case pb.RemoveNode:
		delete(m.Addresses, cc.ReplicaID)
		delete(m.NonVotings, cc.ReplicaID)
		delete(m.Witnesses, cc.ReplicaID)
		m.Removed[cc.ReplicaID] = true
	}
}

// parseMembers parses --members with host.ParseMembers, as keeld does.
func parseMembers(s string) (map[uint64]string, error) {
	m, err := host.ParseMembers(s)
	if err != nil {
		return nil, fmt.Errorf("%w: --members: %v", errUsage, err)
	}
	return m, nil
}
