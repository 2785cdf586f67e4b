package sm

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/snapshot"
)

// adoptFault injects one error at the target-th filesystem operation of an
// adoption, once armed, outside any published image (Pebble's own files
// there: a failed WAL or MANIFEST write is fatal to Pebble, a crash the
// CrashClone below stands for anyway).
type adoptFault struct {
	armed  atomic.Bool
	fired  atomic.Bool
	count  atomic.Int64
	target int64
}

func (a *adoptFault) String() string { return "error at an adoption's op" }

func (a *adoptFault) MaybeError(op errorfs.Op) error {
	if !a.armed.Load() || strings.Contains(op.Path, "/img-") {
		return nil
	}
	if a.count.Add(1) == a.target {
		a.fired.Store(true)
		return errorfs.ErrInjected
	}
	return nil
}

// A crash at any point of adopting a staged image leaves a replica that
// adopts it on its next RecoverFromSnapshot (Raft asks again for a
// snapshot it recorded), or that already runs on it; never one whose
// staged image is gone while its snapshot's stream was cut. Before the
// adoption linked the image instead of renaming it, a crash after the
// rename and before the CURRENT swap lost the image to the next Sweep and
// the replica failed every restart (found by the chaos suite).
func TestAdoptionSurvivesACrashAtEveryStep(t *testing.T) {
	src, _ := openSM(t, filepath.Join(t.TempDir(), "src"), 1, 1)
	update(t, src, entries(1, put(t, "a", "1"), put(t, "b", "2"), put(t, "c", "3")))
	stream := streamOf(t, src)
	want := hashOf(t, src)
	// What RecoverFromSnapshot reads of a cut staging file: the header,
	// then nothing usable.
	cut := func() io.Reader {
		return io.MultiReader(bytes.NewReader(stream[:snapshot.HeaderSize]), strings.NewReader(strings.Repeat("x", 4096)))
	}

	for i := int64(1); ; i++ {
		if i > 500 {
			t.Fatal("the adoption never completed")
		}
		mem := vfs.NewCrashableMem()
		inj := &adoptFault{target: i}
		cfg := Config{Dir: "/d", ShardID: 1, ReplicaID: 2, Engine: engine.Options{FS: errorfs.Wrap(mem, inj)}}
		dst := New(cfg)
		if _, err := dst.Open(make(chan struct{})); err != nil {
			t.Fatal(err)
		}
		if _, _, err := dst.StageImage(bytes.NewReader(stream), make(chan struct{})); err != nil {
			t.Fatal(err)
		}
		inj.armed.Store(true)
		err := dst.RecoverFromSnapshot(cut(), make(chan struct{}))
		inj.armed.Store(false)
		if !inj.fired.Load() {
			if err != nil {
				t.Fatalf("op %d: adoption failed with no injected error: %v", i, err)
			}
			if got := hashOf(t, dst); got != want {
				t.Fatalf("clean adoption: %+v, want %+v", got, want)
			}
			_ = dst.Close()
			t.Logf("an adoption takes %d covered file operations; a crash at each was survived", i-1)
			return
		}
		// The process dies right here. Killed, it keeps every completed
		// operation (the page cache survives); on a power loss only what
		// was synced survives. Both must recover.
		crashed := mem.CrashClone(vfs.CrashCloneCfg{})
		_ = dst.Close() // releases the lock; writes nothing of the adoption's
		for _, c := range []struct {
			what string
			fs   vfs.FS
		}{{"killed", mem}, {"power loss", crashed}} {
			cfg.Engine.FS = c.fs
			re := New(cfg)
			applied, err := re.Open(make(chan struct{}))
			if err != nil {
				t.Fatalf("op %d, %s: reopen: %v", i, c.what, err)
			}
			if applied < 3 {
				// Raft recorded the snapshot and asks for it again.
				if err := re.RecoverFromSnapshot(cut(), make(chan struct{})); err != nil {
					t.Fatalf("op %d, %s: RecoverFromSnapshot after a crash in the adoption: %v", i, c.what, err)
				}
			}
			if got := hashOf(t, re); got != want || re.AppliedIndex() != 3 {
				t.Fatalf("op %d, %s: after the crash and recovery: applied %d, hash %+v, want %+v", i, c.what, re.AppliedIndex(), got, want)
			}
			_ = re.Close()
		}
	}
}
