package sm

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/engine"
	"github.com/lni/dragonboat/v4/statemachine"
)

func hashOf(t *testing.T, s *StateMachine) engine.StateHash {
	t.Helper()
	r, err := s.Lookup(HashQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return r.(engine.StateHash)
}

// TestCrashReplaysFromLastSync drives replicas the way Dragonboat does
// after a crash: Open reports the applied index of the last Sync (the
// engine has no WAL, so nothing after it survives), the log is replayed
// from the next entry, and the replica ends exactly where an uncrashed one
// is. Several replicas share one engine.Shared, as on a host.
func TestCrashReplaysFromLastSync(t *testing.T) {
	sh, err := engine.NewShared(engine.SharedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := sh.Close(); err != nil {
			t.Errorf("close shared: %v", err)
		}
	}()
	mem := vfs.NewCrashableMem()
	log := func(from, to uint64) []statemachine.Entry {
		var cmds [][]byte
		for i := from; i <= to; i++ {
			cmds = append(cmds, put(t, fmt.Sprintf("k%d", i%7), fmt.Sprint(i)))
		}
		return entries(from, cmds...)
	}
	cfg := func(fs vfs.FS, shard uint64) Config {
		return Config{Dir: fmt.Sprintf("/host/shard-%d", shard), ShardID: shard, ReplicaID: 1,
			Engine: engine.Options{FS: fs, Shared: sh}}
	}
	const shards = 5
	var want [shards + 1]engine.StateHash
	live := make([]*StateMachine, 0, shards)
	for shard := uint64(1); shard <= shards; shard++ {
		s := New(cfg(mem, shard))
		if _, err := s.Open(make(chan struct{})); err != nil {
			t.Fatal(err)
		}
		live = append(live, s)
		update(t, s, log(1, 10*shard))
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		update(t, s, log(10*shard+1, 10*shard+25)) // applied, never synced
		want[shard] = hashOf(t, s)
	}
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	for _, s := range live {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for shard := uint64(1); shard <= shards; shard++ {
		s := New(cfg(crashed, shard))
		applied, err := s.Open(make(chan struct{}))
		if err != nil {
			t.Fatal(err)
		}
		if applied != 10*shard {
			t.Fatalf("shard %d: Open after a crash returned %d, want the last Sync's %d", shard, applied, 10*shard)
		}
		// Dragonboat replays from applied+1; an overlap is skipped.
		out := update(t, s, log(applied, 10*shard+25))
		if Code(out[0].Result.Value) != CodeAlreadyApplied {
			t.Fatalf("shard %d: entry %d re-applied: %v", shard, applied, out[0].Result)
		}
		if got := hashOf(t, s); got != want[shard] {
			t.Fatalf("shard %d: after replay %+v, uncrashed %+v", shard, got, want[shard])
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestInstalledTabletRecordsClose: a tablet installed from a snapshot
// leaves a valid CLOSED record when it closes, as one opened by Open does,
// so the next start answers from the record instead of opening Pebble.
func TestInstalledTabletRecordsClose(t *testing.T) {
	dir := t.TempDir()
	src, _ := openSM(t, filepath.Join(dir, "src"), 1, 1)
	update(t, src, entries(1, put(t, "a", "1"), put(t, "b", "2")))
	stream := streamOf(t, src)
	dstDir := filepath.Join(dir, "dst")
	dst := New(Config{Dir: dstDir, ShardID: 1, ReplicaID: 2})
	if _, err := dst.Open(make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if err := dst.RecoverFromSnapshot(bytes.NewReader(stream), make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	c, ok := engine.NewRoot(dstDir, nil).ReadClosed()
	if !ok {
		t.Fatal("no valid CLOSED record after closing an installed tablet")
	}
	if c.Applied != 2 {
		t.Fatalf("CLOSED record's applied index %d, want 2", c.Applied)
	}
}
