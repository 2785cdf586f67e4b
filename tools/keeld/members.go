package main

// Membership checks before a change is proposed. Dragonboat answers a
// refused change only with ErrRejected ("request rejected"), and it
// accepts removing an ID that never was a member, which then marks that ID
// removed for good: it can never join. keeld reads the membership through
// the leader first, so a request that cannot mean what it says is refused
// with a reason and changes nothing.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lni/dragonboat/v4"
)

// checkAdd refuses adding replica id at addr when id is already a member,
// was removed, or addr is another member's address. The errors wrap
// dragonboat.ErrRejected (409), as Dragonboat would have rejected them.
func (s *server) checkAdd(ctx context.Context, shard, id uint64, addr string) error {
	m, err := s.membership(ctx, shard)
	if err != nil {
		return fmt.Errorf("read membership: %w", err)
	}
	for _, set := range []map[uint64]string{m.Nodes, m.NonVotings, m.Witnesses} {
		if a, ok := set[id]; ok {
			return fmt.Errorf("%w: replica %d is already a member at %s", dragonboat.ErrRejected, id, a)
		}
	}
	if _, ok := m.Removed[id]; ok {
		return fmt.Errorf("%w: replica %d was removed; a removed replica ID cannot join again, use a new ID", dragonboat.ErrRejected, id)
	}
	for _, set := range []map[uint64]string{m.Nodes, m.NonVotings, m.Witnesses} {
		for other, a := range set {
			if a == addr {
				return fmt.Errorf("%w: address %s is in use by replica %d", dragonboat.ErrRejected, addr, other)
			}
		}
	}
	return nil
}

// checkDelete refuses (404) removing an ID that is not a member, and
// reports whether it is a voting one (only those can lead).
func (s *server) checkDelete(ctx context.Context, shard, id uint64) (voting bool, err error) {
	m, err := s.membership(ctx, shard)
	if err != nil {
		return false, fmt.Errorf("read membership: %w", err)
	}
	if _, ok := m.Nodes[id]; ok {
		return true, nil
	}
	for _, set := range []map[uint64]string{m.NonVotings, m.Witnesses} {
		if _, ok := set[id]; ok {
			return false, nil
		}
	}
	ids := make([]uint64, 0, len(m.Nodes))
	for i := range m.Nodes {
		ids = append(ids, i)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	return false, fmt.Errorf("%w: replica %d is not a member of shard %d (voting members: %v)", errNotFound, id, shard, ids)
}

// membership reads shard's membership through the leader, retrying while
// Dragonboat drops the read before it starts (no leader yet, busy): it
// changes nothing, so a retry is always safe.
func (s *server) membership(ctx context.Context, shard uint64) (*dragonboat.Membership, error) {
	for {
		m, err := s.nh.SyncGetShardMembership(ctx, shard)
		if err == nil || !(errors.Is(err, dragonboat.ErrShardNotReady) || errors.Is(err, dragonboat.ErrSystemBusy)) {
			return m, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond): // a retry backoff
		}
	}
}
