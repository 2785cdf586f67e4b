package raftlogdb

import (
	"fmt"
	"strings"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// MembershipAt returns the term of entry index and the membership in force
// once entry index is applied. It starts from the latest snapshot record
// at or below index (Dragonboat records the membership in every snapshot)
// and applies the config-change entries after it as Dragonboat's state
// machine does. ordered is the replica's Config.OrderedConfigChange (false
// in host.ShardConfig), which the LogDB does not record.
//
// It fails with ErrCompacted when index is below the latest snapshot (only
// the latest snapshot record is kept) and no entries lead from index 1 to
// it.
func (d *DB) MembershipAt(shardID, replicaID, index uint64, ordered bool) (uint64, pb.Membership, error) {
	m := pb.Membership{
		Addresses: map[uint64]string{}, NonVotings: map[uint64]string{},
		Witnesses: map[uint64]string{}, Removed: map[uint64]bool{},
	}
	ss, err := d.snapshot(d.shard(shardID), shardID, replicaID)
	if err != nil {
		return 0, m, err
	}
	var term uint64
	from := uint64(1)
	if ss.Index > 0 && ss.Index <= index {
		term = ss.Term
		copyMembership(&m, ss.Membership)
		from = ss.Index + 1
	}
	if from > index {
		return term, m, nil
	}
	ents, err := d.Entries(shardID, replicaID, from, index)
	if err != nil {
		return 0, m, fmt.Errorf("membership at %d: %w", index, err)
	}
	for _, e := range ents {
		term = e.Term
		if e.Type != pb.ConfigChangeEntry {
			continue
		}
		var cc pb.ConfigChange
		if err := cc.Unmarshal(e.Cmd); err != nil {
			return 0, m, fmt.Errorf("%w: config change at %d does not decode: %w", ErrCorrupt, e.Index, err)
		}
		if err := applyConfigChange(&m, cc, e.Index, ordered); err != nil {
			return 0, m, err
		}
	}
	return term, m, nil
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

func addressEqual(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

// accepted is Dragonboat's membership.handleConfigChange test
// (internal/rsm/membership.go): a change that would re-add a removed
// replica, add an existing ID or address, change a replica's kind other
// than promoting a non-voting replica at the same address, or remove the
// only voter, is rejected and leaves the membership as it was.
func accepted(m *pb.Membership, cc pb.ConfigChange, ordered bool) bool {
	if ordered && !cc.Initialize && m.ConfigChangeId != cc.ConfigChangeId {
		return false
	}
	id := cc.ReplicaID
	_, voter := m.Addresses[id]
	nvAddr, nonVoting := m.NonVotings[id]
	_, witness := m.Witnesses[id]
	adding := cc.Type == pb.AddNode || cc.Type == pb.AddNonVoting || cc.Type == pb.AddWitness
	switch {
	case adding && m.Removed[id]:
		return false
	case cc.Type == pb.AddNode && (voter || witness):
		return false
	case cc.Type == pb.AddNode && nonVoting:
		// Promotion: allowed only at the same address.
		return addressEqual(nvAddr, cc.Address)
	case cc.Type == pb.AddNonVoting && (nonVoting || voter || witness):
		return false
	case cc.Type == pb.AddWitness && (witness || voter || nonVoting):
		return false
	case cc.Type == pb.RemoveNode && voter && len(m.Addresses) == 1:
		return false
	}
	if adding {
		for _, set := range []map[uint64]string{m.Addresses, m.NonVotings, m.Witnesses} {
			for _, a := range set {
				if addressEqual(a, cc.Address) {
					return false
				}
			}
		}
	}
	return true
}

// applyConfigChange follows membership.apply once accepted.
func applyConfigChange(m *pb.Membership, cc pb.ConfigChange, index uint64, ordered bool) error {
	switch cc.Type {
	case pb.AddNode, pb.AddNonVoting, pb.AddWitness, pb.RemoveNode:
	default:
		return fmt.Errorf("%w: config change at %d has unknown type %d", ErrCorrupt, index, cc.Type)
	}
	if !accepted(m, cc, ordered) {
		return nil
	}
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
	return nil
}
