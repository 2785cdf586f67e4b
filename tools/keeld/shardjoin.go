package main

// Moving a shard's replica between processes at runtime, and comparing
// replicas.
//
// With a shard map, a shard's replica on a host has the host's ID as its
// replica ID. To move shard S from host A to host B (which does not host
// S) with no downtime:
//
//  1. POST /admin/shards/S/members/B?addr=<B's raft_addr> (any process):
//     the shard's members add replica B.
//  2. POST /admin/shards/S/join on B: B starts its replica of S with
//     join=true (and its snapshot timer and log compactor) and serves S
//     from then on; the leader brings it up to date (by a snapshot when
//     its log was compacted).
//  3. Wait until B's /status lists S with the applied index of the others.
//  4. DELETE /admin/shards/S/members/A on A: A takes S's leadership,
//     leaves (S then elects a new leader, as after a leader failure) and
//     deletes its replica's data; requests for S reaching A are
//     forwarded. Why A must lead: selfremove.go.
//  5. Edit the shard map on every host (S's hosts: B instead of A). Every
//     process reads the map only at start-up; until it restarts, a
//     process's forwarding uses the old list, which still reaches S (A
//     forwards on to S's other hosts).
//
// A replica joined at runtime restarts from its data even before the map
// names it (addJoinedReplicas), and A, restarted with the old map, leaves
// out the replica it removed (Dragonboat marks it removed; startReplicas).
// The order matters once: a host whose map places S on it but whose data
// directory never held S bootstraps a new replica from the map's list,
// which is right only when the cluster is created, so B must not be
// restarted with the edited map before step 2. A replica ID that was
// removed can never join its shard again (Dragonboat keeps it removed),
// so a host cannot take back a shard it once left.
//
// GET /admin/shards/{id}/hash answers this process's own replica's
// StateHash (engine.StateHash: SHA-256 over every key and value in order,
// with the applied index and key count of the same consistent view), never
// another's: a shard not hosted here is 404, not forwarded. Replicas at
// the same applied index have the same hash. It reads every key of the
// shard, so it costs one full local scan.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/lni/dragonboat/v4"
)

// shardFromAdminPath parses {id} of /admin/shards/{id}/... and checks it
// names a shard of the keyspace.
func (s *server) shardFromAdminPath(r *http.Request) (uint64, error) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/admin/shards/")
	idStr, _, _ := strings.Cut(rest, "/")
	shard, err := strconv.ParseUint(idStr, 10, 64)
	if err != nil || shard == 0 || shard > s.route.n && s.route.n > 1 {
		return 0, fmt.Errorf("%w: shard %q: shards are numbered 1 to %d", errNotFound, idStr, max(s.route.n, s.cfg.ShardID))
	}
	return shard, nil
}

// handleJoin is POST /admin/shards/{id}/join: start this process's
// replica of the shard as a joining member (see the file comment).
func (s *server) handleJoin(w http.ResponseWriter, r *http.Request) {
	shard, err := s.shardFromAdminPath(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if s.cfg.Sharding.Map == nil {
		s.fail(w, fmt.Errorf("%w: join needs --shard-map: with --members every process already hosts every shard", errBadRequest))
		return
	}
	id := s.cfg.ReplicaID
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	if ls := s.route.get(shard); ls != nil {
		if ls.removed.Load() {
			s.fail(w, fmt.Errorf("%w: replica %d of shard %d was removed from this process; a removed replica ID cannot join again", dragonboat.ErrRejected, id, shard))
			return
		}
		s.fail(w, fmt.Errorf("%w: this process already hosts replica %d of shard %d", dragonboat.ErrRejected, id, shard))
		return
	}
	p := placed{ShardID: shard, ReplicaID: id}
	if err := startReplica(s.nh, s.factory, s.cfg, p, true, s.log); err != nil {
		switch {
		case errors.Is(err, dragonboat.ErrShardAlreadyExist):
			err = fmt.Errorf("%w: %v", dragonboat.ErrRejected, err)
		case errors.Is(err, dragonboat.ErrReplicaRemoved):
			err = fmt.Errorf("%w: %v: replica %d of shard %d was removed from this process and cannot join again", dragonboat.ErrRejected, err, id, shard)
		}
		s.fail(w, fmt.Errorf("join shard %d: %w", shard, err))
		return
	}
	if s.svc != nil {
		if err := s.svc.startJoined(s.nh, s.factory, s.cfg, p, s.log); err != nil {
			// The replica runs and serves; only its timer and compactor
			// are missing until the next restart.
			s.log.Error("joined replica without its snapshot timer and log compactor", "shard", shard, "err", err)
		} else if ss := s.svc.shard(shard); ss != nil && ss.comp != nil && s.metrics != nil {
			s.metrics.compactors.Add(ss.comp)
		}
	}
	s.route.add(p, newLocalShard(s.nh, s.cfg, shard))
	s.log.Info("joined shard", "shard", shard, "replica", id)
	writeJSON(w, http.StatusOK, map[string]any{"shard": shard, "joined": id})
}

// hashResponse is GET /admin/shards/{id}/hash.
type hashResponse struct {
	ShardID      uint64 `json:"shard_id"`
	ReplicaID    uint64 `json:"replica_id"`
	AppliedIndex uint64 `json:"applied_index"`
	Keys         uint64 `json:"keys"`
	Hash         string `json:"hash"`
}

// handleHash is GET /admin/shards/{id}/hash: this process's replica's
// StateHash (see the file comment).
func (s *server) handleHash(w http.ResponseWriter, r *http.Request) {
	shard, err := s.shardFromAdminPath(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	ls := s.route.hosted(shard)
	if ls == nil {
		s.fail(w, fmt.Errorf("%w: shard %d has no replica on this process (the hash is never forwarded)", errNotFound, shard))
		return
	}
	h, err := ls.client.LocalHash()
	if err != nil {
		s.fail(w, fmt.Errorf("hash shard %d: %w", shard, err))
		return
	}
	writeJSON(w, http.StatusOK, hashResponse{ShardID: shard, ReplicaID: s.replicaOf(shard), AppliedIndex: h.AppliedIndex, Keys: h.Keys, Hash: h.Hash})
}

// snapshotVia takes shard's snapshot through its log compactor when one
// runs, so the request is serialised with the compactor's own (Dragonboat
// allows one at a time) and the log is compacted to the compactor's
// window; else straight through Dragonboat.
func (s *server) snapshotVia(ctx context.Context, shard uint64) (uint64, error) {
	if ss := s.svc.shard(shard); ss != nil && ss.comp != nil {
		return ss.comp.SyncRequestSnapshot(ctx, shard, dragonboat.DefaultSnapshotOption)
	}
	return s.nh.SyncRequestSnapshot(ctx, shard, dragonboat.DefaultSnapshotOption)
}
