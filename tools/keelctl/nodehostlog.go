package main

import (
	"fmt"
	"path/filepath"

	oldvfs "github.com/cockroachdb/pebble/vfs"
	"github.com/keel-db/keel/internal/raftlogdb"
)

// nodeHostLog is a stopped NodeHost directory's LogDB, opened once for
// every replica a command looks at: a NodeHost may host a thousand shards,
// and opening the LogDB (and measuring the directory) once per shard would
// cost a thousand times what one open does.
//
// The open's outcome is kept rather than returned, because a replica whose
// log cannot be read is a finding of check and a line of inspect, not the
// end of the command; info returns it for each replica.
type nodeHostLog struct {
	db  *raftlogdb.DB // nil when err is set
	err error         // why the LogDB is unusable, in keelctl's classes
	// alloc is the directory's allocated bytes (RaftLogInfo.AllocatedBytes);
	// allocErr, when set, takes precedence over err, as the directory
	// missing altogether is the clearer message.
	alloc    int64
	allocErr error
	// hosted holds the replicas with a bootstrap record: those Dragonboat
	// would restart. Its zero value (nil) means unknown (hostedErr says
	// why, or the LogDB did not open).
	hosted    map[raftlogdb.ReplicaID]bool
	hostedErr error
}

// openNodeHostLog opens dir's LogDB read-only; the caller calls close.
func openNodeHostLog(dir string) *nodeHostLog {
	l := &nodeHostLog{}
	if l.alloc, l.allocErr = allocatedBytes(dir); l.allocErr != nil {
		return l
	}
	if l.err = logDBLive(dir); l.err != nil {
		return l
	}
	if l.db, l.err = openLogDB(dir); l.err != nil {
		return l
	}
	reps, err := l.db.Replicas()
	if err != nil {
		l.hostedErr = logDBErr(err)
		return l
	}
	l.hosted = make(map[raftlogdb.ReplicaID]bool, len(reps))
	for _, r := range reps {
		l.hosted[r] = true
	}
	return l
}

// openErr is why the LogDB could not be read at all, or nil.
func (l *nodeHostLog) openErr() error {
	if l.allocErr != nil {
		return l.allocErr
	}
	return l.err
}

func (l *nodeHostLog) close() {
	if l.db != nil {
		_ = l.db.Close()
		l.db = nil
	}
}

// info reads replica (shardID, replicaID)'s log range and last snapshot.
func (l *nodeHostLog) info(shardID, replicaID uint64) (RaftLogInfo, error) {
	info := RaftLogInfo{AllocatedBytes: l.alloc}
	if err := l.openErr(); err != nil {
		return info, err
	}
	rl, err := l.db.Log(shardID, replicaID)
	if err != nil {
		return info, logDBErr(err)
	}
	info.FirstIndex, info.LastIndex, info.StoredFirstIndex = rl.FirstIndex, rl.LastIndex, rl.StoredFirstIndex
	info.SnapshotIndex, info.SnapshotOnDiskIndex = rl.Snapshot.Index, rl.Snapshot.OnDiskIndex
	return info, nil
}

// isHosted reports whether the NodeHost would restart replica (shardID,
// replicaID): Dragonboat restarts the replicas it holds a bootstrap record
// of, and NodeHost.RemoveData (which host.RemoveReplica calls) deletes that
// record with the replica's state, max index and snapshot records. known
// is false when the LogDB could not be listed.
func (l *nodeHostLog) isHosted(shardID, replicaID uint64) (hosted, known bool) {
	if l.hosted == nil {
		return false, false
	}
	return l.hosted[raftlogdb.ReplicaID{ShardID: shardID, ReplicaID: replicaID}], true
}

// logDBLive fails with errLive when a process holds one of dir's LogDB
// Pebble directories. It tries each directory's lock itself because the
// Pebble version Dragonboat pins panics, instead of failing, when its Open
// meets a held lock (the lock-failure path closes the data directory, and
// the deferred cleanup closes it again: "close of closed channel" in its
// disk-health wrapper), and raftlogdb.Open opens with that Pebble.
// Taking the lock with that Pebble's own vfs sees a NodeHost in another
// process (fcntl) and one in this process (its registry of held locks),
// as tests run them.
func logDBLive(dir string) error {
	dbs, err := filepath.Glob(filepath.Join(dir, "*", "*", "logdb-*"))
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	for _, db := range dbs {
		lock, err := oldvfs.Default.Lock(filepath.Join(db, "LOCK"))
		if err != nil {
			if isLockErr(err) {
				return fmt.Errorf("%w: the Raft log %s is held by a running process; stop it first", errLive, db)
			}
			// Anything else is raftlogdb.Open's to report.
			continue
		}
		_ = lock.Close()
	}
	return nil
}
