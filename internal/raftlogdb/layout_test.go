package raftlogdb

import (
	"crypto/md5"
	"errors"
	"os"
	"path/filepath"
	"testing"

	oldpebble "github.com/cockroachdb/pebble"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// writeLayout lays out a NodeHost directory as the package doc describes:
// a flag file with status and one Pebble DB per entry of keys (each a set
// of keys with empty values).
func writeLayout(t *testing.T, status pb.RaftDataStatus, shards ...[][]byte) string {
	t.Helper()
	dir := t.TempDir()
	data, err := status.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(data)
	if err := os.WriteFile(filepath.Join(dir, flagFile), append(sum[8:], data...), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, keys := range shards {
		db, err := oldpebble.Open(filepath.Join(dir, "host", "00000000000000000001", "logdb-"+string(rune('0'+i))), &oldpebble.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if err := db.Set(k, nil, oldpebble.Sync); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func goodStatus() pb.RaftDataStatus {
	return pb.RaftDataStatus{BinVer: binVerPlain, LogdbType: logDBType, LogdbShardCount: 1, StepWorkerCount: 16, EntryBatchSize: batchSize}
}

// TestOpenRefusesUnknownLayouts: every departure from the documented
// layout is refused with its own sentinel, never read by guessing.
func TestOpenRefusesUnknownLayouts(t *testing.T) {
	state := key(hdrState, 1, 1, 0, false)
	with := func(f func(*pb.RaftDataStatus)) pb.RaftDataStatus {
		s := goodStatus()
		f(&s)
		return s
	}
	cases := []struct {
		name string
		dir  func(t *testing.T) string
		want error
	}{
		{"documented layout", func(t *testing.T) string { return writeLayout(t, goodStatus(), [][]byte{state}) }, nil},
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, ErrNotFound},
		{"no flag file", func(t *testing.T) string { return t.TempDir() }, ErrNotFound},
		{"other LogDB type", func(t *testing.T) string {
			return writeLayout(t, with(func(s *pb.RaftDataStatus) { s.LogdbType = "tan" }), [][]byte{state})
		}, ErrUnknownLayout},
		{"unknown binary version", func(t *testing.T) string {
			return writeLayout(t, with(func(s *pb.RaftDataStatus) { s.BinVer = 300 }), [][]byte{state})
		}, ErrUnknownLayout},
		{"batched with another batch size", func(t *testing.T) string {
			return writeLayout(t, with(func(s *pb.RaftDataStatus) { s.BinVer, s.EntryBatchSize = binVerBatched, 64 }), [][]byte{state})
		}, ErrUnknownLayout},
		{"shard count differs from the directories", func(t *testing.T) string {
			return writeLayout(t, goodStatus(), [][]byte{state}, [][]byte{state})
		}, ErrUnknownLayout},
		{"unknown key header", func(t *testing.T) string {
			return writeLayout(t, goodStatus(), [][]byte{state, key(0x09, 1, 1, 0, false)})
		}, ErrUnknownLayout},
		{"header bytes differ", func(t *testing.T) string {
			k := key(hdrMaxIndex, 1, 1, 0, false)
			k[1] = 0
			return writeLayout(t, goodStatus(), [][]byte{state, k})
		}, ErrUnknownLayout},
		{"flag file fails its hash", func(t *testing.T) string {
			dir := writeLayout(t, goodStatus(), [][]byte{state})
			p := filepath.Join(dir, flagFile)
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 1
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Open(tc.dir(t))
			if d != nil {
				defer d.Close()
			}
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestLogRefusesMixedEntryKinds: a replica with 07 batches in a plain
// LogDB is a layout Dragonboat never writes.
func TestLogRefusesMixedEntryKinds(t *testing.T) {
	boot, err := (&pb.Bootstrap{}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := writeLayout(t, goodStatus(), [][]byte{key(hdrEntryBatch, 1, 1, 0, true)})
	db, err := oldpebble.Open(filepath.Join(dir, "host", "00000000000000000001", "logdb-0"), &oldpebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(key(hdrBootstrap, 1, 1, 0, false), boot, oldpebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Log(1, 1); !errors.Is(err, ErrUnknownLayout) {
		t.Fatalf("Log: %v, want ErrUnknownLayout", err)
	}
	if _, err := d.Log(1, 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Log of an absent replica: %v, want ErrNotFound", err)
	}
}
