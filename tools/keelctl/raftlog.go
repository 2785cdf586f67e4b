package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	oldpebble "github.com/cockroachdb/pebble"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Dragonboat's LogDB key layout at the pinned version
// (internal/logdb/key.go): a two-byte header, two zero bytes, then
// big-endian shard ID, replica ID and (for entries and snapshots) index.
// Keel reads it offline because Dragonboat offers no read-only API over a
// stopped NodeHost's log; the keelctl tests run against a real NodeHost's
// directory, so a format change is caught there.
var (
	hdrEntry    = [2]byte{0x1, 0x1}
	hdrMaxIndex = [2]byte{0x3, 0x3}
	hdrSnapshot = [2]byte{0x5, 0x5}
)

func logKey(hdr [2]byte, shardID, replicaID, index uint64) []byte {
	k := make([]byte, 28)
	k[0], k[1] = hdr[0], hdr[1]
	binary.BigEndian.PutUint64(k[4:], shardID)
	binary.BigEndian.PutUint64(k[12:], replicaID)
	binary.BigEndian.PutUint64(k[20:], index)
	return k
}

// RaftLogInfo describes one replica's Raft log as stored by Dragonboat.
type RaftLogInfo struct {
	// FirstIndex and LastIndex bound the entries still in the log; both are
	// zero when it holds none.
	FirstIndex uint64 `json:"first_index"`
	LastIndex  uint64 `json:"last_index"`
	// SnapshotIndex is the index of the last snapshot Dragonboat recorded.
	SnapshotIndex uint64 `json:"snapshot_index"`
	// SnapshotOnDiskIndex is that snapshot's OnDiskIndex: the last index
	// Dragonboat had handed to the state machine's Update when it took it.
	// It can be below SnapshotIndex, because membership changes and a new
	// leader's empty entry never reach Update. On restart Dragonboat refuses
	// a state machine whose applied index is below it.
	SnapshotOnDiskIndex uint64 `json:"snapshot_on_disk_index"`
	// AllocatedBytes is what the NodeHost directory occupies on disk
	// (allocated blocks, as du reports), log and metadata together.
	AllocatedBytes int64 `json:"allocated_bytes"`
}

// logDBDirs finds the LogDB Pebble directories under a NodeHost directory:
// <nodehost-dir>/<hostname>/<deployment id>/logdb-N.
func logDBDirs(nodeHostDir string) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(nodeHostDir, "*", "*", "logdb-*"))
	if err != nil {
		return nil, err
	}
	sort.Strings(dirs)
	return dirs, nil
}

// readRaftLog reads a replica's log range and last snapshot index from a
// stopped NodeHost directory. It fails with errLive when a running process
// holds the LogDB.
func readRaftLog(nodeHostDir string, shardID, replicaID uint64) (RaftLogInfo, error) {
	var info RaftLogInfo
	alloc, err := allocatedBytes(nodeHostDir)
	if err != nil {
		return info, err
	}
	info.AllocatedBytes = alloc
	dirs, err := logDBDirs(nodeHostDir)
	if err != nil {
		return info, err
	}
	if len(dirs) == 0 {
		return info, fmt.Errorf("%w: no Dragonboat LogDB under %s", errNotKeel, nodeHostDir)
	}
	for _, dir := range dirs {
		if err := readOneLogDB(dir, shardID, replicaID, &info); err != nil {
			return info, err
		}
	}
	return info, nil
}

func readOneLogDB(dir string, shardID, replicaID uint64, info *RaftLogInfo) error {
	db, err := oldpebble.Open(dir, &oldpebble.Options{ReadOnly: true, Logger: quietLogger{}})
	if err != nil {
		if isLockErr(err) {
			return fmt.Errorf("%w: the Raft log in %s is held by a running process; stop it first", errLive, dir)
		}
		return fmt.Errorf("%w: open Raft log %s: %v", errOpen, dir, err)
	}
	defer db.Close()
	// Dragonboat's SetMaxIndexKey never sets the header's second byte, so
	// the record's key depends on a pooled buffer's old contents: scan every
	// max-index key and match shard and replica.
	it := db.NewIter(&oldpebble.IterOptions{
		LowerBound: []byte{hdrMaxIndex[0]},
		UpperBound: []byte{hdrMaxIndex[0] + 1},
	})
	want := logKey(hdrMaxIndex, shardID, replicaID, 0)[4:20]
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) == 20 && string(k[4:20]) == string(want) && len(v) == 8 {
			info.LastIndex = max(info.LastIndex, binary.BigEndian.Uint64(v))
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("%w: read Raft log %s: %v", errOpen, dir, err)
	}
	it = db.NewIter(&oldpebble.IterOptions{
		LowerBound: logKey(hdrEntry, shardID, replicaID, 0),
		UpperBound: logKey(hdrEntry, shardID, replicaID+1, 0),
	})
	if it.First() {
		k := it.Key()
		if len(k) == 28 {
			first := binary.BigEndian.Uint64(k[20:])
			if info.FirstIndex == 0 || first < info.FirstIndex {
				info.FirstIndex = first
			}
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("%w: read Raft log %s: %v", errOpen, dir, err)
	}
	it = db.NewIter(&oldpebble.IterOptions{
		LowerBound: logKey(hdrSnapshot, shardID, replicaID, 0),
		UpperBound: logKey(hdrSnapshot, shardID, replicaID+1, 0),
	})
	for ok := it.Last(); ok; ok = false {
		var ss pb.Snapshot
		if err := ss.Unmarshal(it.Value()); err == nil && ss.Index > info.SnapshotIndex {
			info.SnapshotIndex, info.SnapshotOnDiskIndex = ss.Index, ss.OnDiskIndex
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("%w: read Raft log %s: %v", errOpen, dir, err)
	}
	if info.FirstIndex == 0 {
		// No entries left: the log is empty after the last snapshot.
		info.LastIndex = max(info.LastIndex, info.SnapshotIndex)
	}
	return nil
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
			return 0, fmt.Errorf("%w: %v", errNotKeel, err)
		}
		return 0, fmt.Errorf("%w: %v", errOpen, err)
	}
	return total, nil
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{}) {}
func (quietLogger) Fatalf(format string, args ...interface{}) {
	panic(fmt.Sprintf(format, args...))
}
