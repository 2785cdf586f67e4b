package raftlogdb

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	oldpebble "github.com/cockroachdb/pebble"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Record headers (first key byte; the second repeats it). See doc.go.
const (
	hdrEntry      byte = 0x01
	hdrState      byte = 0x02
	hdrMaxIndex   byte = 0x03
	hdrNodeInfo   byte = 0x04
	hdrSnapshot   byte = 0x05
	hdrBootstrap  byte = 0x06
	hdrEntryBatch byte = 0x07

	shortKeyLen = 20 // header, shard, replica
	longKeyLen  = 28 // header, shard, replica, index or batch ID

	flagFile = "dragonboat.ds"
	// The values Open accepts from the flag file.
	logDBType     = "sharded-pebble"
	binVerPlain   = 100
	binVerBatched = 210
	batchSize     = 48
)

// key returns header h's key for (shard, replica), with index appended
// when withIndex is set.
func key(h byte, shardID, replicaID, index uint64, withIndex bool) []byte {
	n := shortKeyLen
	if withIndex {
		n = longKeyLen
	}
	k := make([]byte, n)
	k[0], k[1] = h, h
	binary.BigEndian.PutUint64(k[4:], shardID)
	binary.BigEndian.PutUint64(k[12:], replicaID)
	if withIndex {
		binary.BigEndian.PutUint64(k[20:], index)
	}
	return k
}

// ReplicaID names one replica's records in the LogDB.
type ReplicaID struct {
	ShardID, ReplicaID uint64
}

// DB is an open, read-only view of a NodeHost directory's LogDB.
type DB struct {
	// Dir is the <hostname>/<deployment ID> directory holding the Pebble
	// DBs.
	Dir string
	// Status is the flag file's content.
	Status  pb.RaftDataStatus
	batched bool
	shards  []*oldpebble.DB
}

// Batched reports whether entries are stored as 07 entry batches.
func (d *DB) Batched() bool { return d.batched }

// Open opens nodeHostDir's LogDB read-only. It fails with ErrNotFound when
// there is none, ErrLive when a process holds it and ErrUnknownLayout when
// it is not the layout described in the package doc.
func Open(nodeHostDir string) (*DB, error) {
	flag := filepath.Join(nodeHostDir, flagFile)
	if _, err := os.Stat(flag); err != nil {
		if _, err := os.Stat(nodeHostDir); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, fmt.Errorf("%w: no Dragonboat LogDB (%s) in %s", ErrNotFound, flagFile, nodeHostDir)
	}
	d := &DB{}
	if err := d.readFlagFile(flag); err != nil {
		return nil, err
	}
	subs, err := filepath.Glob(filepath.Join(nodeHostDir, "*", "*", "logdb-0"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if len(subs) != 1 {
		return nil, fmt.Errorf("%w: want one <hostname>/<deployment ID>/logdb-0 in %s, found %d",
			ErrUnknownLayout, nodeHostDir, len(subs))
	}
	d.Dir = filepath.Dir(subs[0])
	dirs, err := filepath.Glob(filepath.Join(d.Dir, "logdb-*"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	sort.Strings(dirs)
	for i := range dirs {
		if want := filepath.Join(d.Dir, fmt.Sprintf("logdb-%d", i)); !contains(dirs, want) {
			return nil, fmt.Errorf("%w: LogDB directories %v are not logdb-0..logdb-%d", ErrUnknownLayout, dirs, len(dirs)-1)
		}
	}
	if uint64(len(dirs)) != d.Status.LogdbShardCount {
		return nil, fmt.Errorf("%w: %d logdb-N directories in %s, the flag file says %d",
			ErrUnknownLayout, len(dirs), d.Dir, d.Status.LogdbShardCount)
	}
	for i := range dirs {
		db, err := openShard(filepath.Join(d.Dir, fmt.Sprintf("logdb-%d", i)))
		if err != nil {
			_ = d.Close()
			return nil, err
		}
		d.shards = append(d.shards, db)
		if err := checkKeys(db); err != nil {
			_ = d.Close()
			return nil, fmt.Errorf("logdb-%d: %w", i, err)
		}
	}
	return d, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (d *DB) readFlagFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if len(data) < 8 {
		return fmt.Errorf("%w: %s is %d bytes, shorter than its hash", ErrCorrupt, path, len(data))
	}
	sum := md5.Sum(data[8:])
	if !bytes.Equal(data[:8], sum[8:]) {
		return fmt.Errorf("%w: %s fails its hash", ErrCorrupt, path)
	}
	if err := d.Status.Unmarshal(data[8:]); err != nil {
		return fmt.Errorf("%w: %s does not decode: %w", ErrCorrupt, path, err)
	}
	s := d.Status
	switch {
	case s.LogdbType != logDBType:
		return fmt.Errorf("%w: LogDB type %q, want %q", ErrUnknownLayout, s.LogdbType, logDBType)
	case s.BinVer == binVerPlain:
	case s.BinVer == binVerBatched && s.EntryBatchSize == batchSize:
		d.batched = true
	default:
		return fmt.Errorf("%w: LogDB binary version %d with entry batch size %d (known: %d plain, %d batched by %d)",
			ErrUnknownLayout, s.BinVer, s.EntryBatchSize, binVerPlain, binVerBatched, batchSize)
	}
	if s.LogdbShardCount == 0 || s.StepWorkerCount == 0 {
		return fmt.Errorf("%w: flag file has %d LogDB shards and %d step workers", ErrUnknownLayout, s.LogdbShardCount, s.StepWorkerCount)
	}
	return nil
}

func openShard(dir string) (*oldpebble.DB, error) {
	db, err := oldpebble.Open(dir, &oldpebble.Options{ReadOnly: true, Logger: quietLogger{}})
	if err == nil {
		return db, nil
	}
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) ||
		strings.Contains(err.Error(), "resource temporarily unavailable") || strings.Contains(err.Error(), "lock held") {
		return nil, fmt.Errorf("%w: %s; stop it first", ErrLive, dir)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotFound, dir, err)
	}
	return nil, fmt.Errorf("%w: open %s: %w", ErrCorrupt, dir, err)
}

// checkKeys refuses a Pebble DB holding a key outside the documented
// layout. It costs two seeks per header byte present, not a scan: keys
// sort bytewise, so when the first and the last key starting with byte h
// both start h h 0 0, every key in between does too.
func checkKeys(db *oldpebble.DB) error {
	it := db.NewIter(nil)
	defer it.Close()
	for ok := it.First(); ok; {
		h := it.Key()[0]
		if h < hdrEntry || h > hdrEntryBatch {
			return fmt.Errorf("%w: key %x has unknown header %#02x", ErrUnknownLayout, it.Key(), h)
		}
		prefix := []byte{h, h, 0, 0}
		if !bytes.HasPrefix(it.Key(), prefix) {
			return fmt.Errorf("%w: key %x does not start %x", ErrUnknownLayout, it.Key(), prefix)
		}
		if !it.SeekLT([]byte{h + 1}) || !bytes.HasPrefix(it.Key(), prefix) {
			return fmt.Errorf("%w: key %x does not start %x", ErrUnknownLayout, it.Key(), prefix)
		}
		ok = it.SeekGE([]byte{h + 1})
	}
	return it.Error()
}

// Close releases the Pebble DBs.
func (d *DB) Close() error {
	var err error
	for _, s := range d.shards {
		err = errors.Join(err, s.Close())
	}
	d.shards = nil
	return err
}

// shard returns the Pebble DB that holds shardID's records, as Dragonboat's
// partitioner places them.
func (d *DB) shard(shardID uint64) *oldpebble.DB {
	return d.shards[(shardID%d.Status.StepWorkerCount)%d.Status.LogdbShardCount]
}

// Replicas lists the replicas with a bootstrap record, as
// NodeHost.GetNodeHostInfo reports in LogInfo.
func (d *DB) Replicas() ([]ReplicaID, error) {
	var out []ReplicaID
	for _, s := range d.shards {
		it := s.NewIter(&oldpebble.IterOptions{LowerBound: []byte{hdrBootstrap}, UpperBound: []byte{hdrBootstrap + 1}})
		for ok := it.First(); ok; ok = it.Next() {
			k := it.Key()
			if len(k) != shortKeyLen {
				_ = it.Close()
				return nil, fmt.Errorf("%w: bootstrap key %x is %d bytes", ErrCorrupt, k, len(k))
			}
			out = append(out, ReplicaID{binary.BigEndian.Uint64(k[4:]), binary.BigEndian.Uint64(k[12:])})
		}
		if err := it.Close(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].ShardID < out[j].ShardID || out[i].ShardID == out[j].ShardID && out[i].ReplicaID < out[j].ReplicaID
	})
	return out, nil
}

// get reads one value; found is false when the key is absent.
func get(db *oldpebble.DB, k []byte) (v []byte, found bool, err error) {
	val, closer, err := db.Get(k)
	if errors.Is(err, oldpebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: read %x: %w", ErrCorrupt, k, err)
	}
	v = append([]byte(nil), val...)
	return v, true, closer.Close()
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{}) {}

// Fatalf panics as Pebble expects; keelctl turns a panic into an error line.
func (quietLogger) Fatalf(format string, args ...interface{}) {
	panic(fmt.Sprintf(format, args...))
}
