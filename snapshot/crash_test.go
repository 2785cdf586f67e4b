package snapshot_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/sm"
)

// nthOp injects one error at the target-th filesystem operation while
// armed. It leaves alone operations inside published images: the old one
// (Pebble's background work there is not part of the install) and the new
// one once it is published (a failed pebble.Open can leave a compaction
// running against its closed file cache and panic, a Pebble error path
// this test cannot survive; the install returns that open's error and the
// restart below covers the state it leaves). It also skips writes/syncs of Pebble's own
// WAL and MANIFEST files, because Pebble treats a failure there as fatal
// and exits the process (db.go "fatal commit error", version_set.go
// "MANIFEST sync failed", "MANIFEST set current failed" for markers and
// the directory sync that follows): that case is a crash, which the
// CrashClone below covers instead. The same writes of received files of
// those names, and syncs of image directories, are skipped too; received
// sstables, every create/open/read/rename/remove, the root directory syncs
// and CURRENT are covered.
type nthOp struct {
	armed  atomic.Bool
	fired  atomic.Bool
	count  atomic.Int64
	target int64
	oldDir string
}

func (n *nthOp) MaybeError(op errorfs.Op) error {
	if !n.armed.Load() || strings.HasPrefix(op.Path, n.oldDir) || strings.Contains(op.Path, "/img-") {
		return nil
	}
	base := op.Path[strings.LastIndexByte(op.Path, '/')+1:]
	pebbleCritical := strings.HasSuffix(base, ".log") || strings.HasPrefix(base, "MANIFEST-") ||
		strings.HasPrefix(base, "marker.") ||
		// Pebble syncs its directory when it moves a marker, fatally.
		(op.Kind == errorfs.OpFileSync && (strings.HasPrefix(base, "tmp-") || strings.HasPrefix(base, "img-")))
	if pebbleCritical && op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
		return nil
	}
	if n.count.Add(1) == n.target {
		n.fired.Store(true)
		return errorfs.ErrInjected
	}
	return nil
}

func (n *nthOp) String() string { return fmt.Sprintf("error at op %d", n.target) }

func TestInstallCrashAtEveryOperation(t *testing.T) {
	src := newReplica(t, 1, 1)
	src.fill("new", 400, 64)
	stream, index := src.stream(nil)
	newHash := src.hash()

	mem := vfs.NewCrashableMem()
	for i := int64(1); ; i++ {
		if i > 5000 {
			t.Fatal("install never succeeded")
		}
		dir := fmt.Sprintf("/r%d", i)
		inj := &nthOp{target: i}
		fs := errorfs.Wrap(mem, inj)
		cfg := sm.Config{Dir: dir, ShardID: 1, ReplicaID: 2, Engine: engine.Options{FS: fs}}
		s := sm.New(cfg)
		if _, err := s.Open(nil); err != nil {
			t.Fatal(err)
		}
		r := &replica{t: t, dir: dir, sm: s}
		r.fill("old", 50, 16)
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		oldHash := r.hash()
		cur, err := engine.NewRoot(dir, mem).Current()
		if err != nil {
			t.Fatal(err)
		}
		inj.oldDir = dir + "/" + cur

		inj.armed.Store(true)
		err = s.RecoverFromSnapshot(bytes.NewReader(stream), nil)
		inj.armed.Store(false)
		if !inj.fired.Load() {
			if err != nil {
				t.Fatalf("op %d: install failed with no injected error: %v", i, err)
			}
			if got := r.hash(); got != newHash {
				t.Fatalf("clean install: %+v want %+v", got, newHash)
			}
			t.Logf("install takes %d covered file operations; each failed once", i-1)
			_ = s.Close()
			return
		}
		live := r.hash()
		switch {
		case err == nil && live != newHash:
			t.Fatalf("op %d: install reported success, live state %+v", i, live)
		case err != nil && live != oldHash:
			t.Fatalf("op %d: install failed (%v) but live state is %+v, not the old %+v", i, err, live, oldHash)
		}
		// A crash right now: only synced data survives.
		crashed := mem.CrashClone(vfs.CrashCloneCfg{})
		checkReopen(t, i, "after crash", crashed, cfg, oldHash, newHash, index)
		// A clean restart after the error.
		if err := s.Close(); err != nil {
			t.Logf("op %d: close: %v", i, err)
		}
		got := checkReopen(t, i, "after restart", mem, cfg, oldHash, newHash, index)
		if err == nil && got != newHash {
			t.Fatalf("op %d: install succeeded but restart is on %+v", i, got)
		}
	}
}

// checkReopen opens cfg.Dir on fs and checks it is exactly the old or the
// new image, with no leftovers.
func checkReopen(t *testing.T, i int64, when string, fs vfs.FS, cfg sm.Config, oldHash, newHash engine.StateHash, index uint64) engine.StateHash {
	t.Helper()
	cfg.Engine.FS = fs
	s := sm.New(cfg)
	applied, err := s.Open(nil)
	if err != nil {
		t.Fatalf("op %d %s: open: %v", i, when, err)
	}
	defer s.Close()
	v, err := s.Lookup(sm.HashQuery{})
	if err != nil {
		t.Fatalf("op %d %s: hash: %v", i, when, err)
	}
	got := v.(engine.StateHash)
	if got != oldHash && got != newHash {
		t.Fatalf("op %d %s: state %+v is neither old %+v nor new %+v", i, when, got, oldHash, newHash)
	}
	if got.AppliedIndex != applied {
		t.Fatalf("op %d %s: Open returned %d, image holds %d", i, when, applied, got.AppliedIndex)
	}
	if got == newHash && applied != index {
		t.Fatalf("op %d %s: new image at %d, want %d", i, when, applied, index)
	}
	left, err := engine.NewRoot(cfg.Dir, fs).Leftovers()
	if err != nil || len(left) != 0 {
		t.Fatalf("op %d %s: leftovers %v %v", i, when, left, err)
	}
	return got
}
