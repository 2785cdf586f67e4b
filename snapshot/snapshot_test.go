package snapshot_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/sm"
	"github.com/keel-db/keel/snapshot"
	"github.com/lni/dragonboat/v4/statemachine"
)

// writesAfterPrepare is a mix of every write kind, touching keys that exist
// at the snapshot index and keys that do not.
func writesAfterPrepare(r *replica) func() {
	return func() {
		r.apply(
			put("a00000001", "changed"),
			put("zz-new", "new"),
			del("a00000002"),
			delRange("a00000010", "a00000050"),
			sm.Command{Op: sm.OpTxn, Ops: []sm.TxnOp{
				{Op: sm.OpPut, Key: []byte("a00000060"), Value: []byte("txn")},
				{Op: sm.OpDelete, Key: []byte("a00000061")},
			}},
		)
		r.fill("b", 500, 10)
	}
}

func TestStreamIsExactAtSnapshotIndex(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget int
	}{{"recorded", 0}, {"overflow", 64}} {
		t.Run(tc.name, func(t *testing.T) {
			src := openReplica(t, sm.Config{Dir: t.TempDir(), ShardID: 1, ReplicaID: 1,
				Snapshot: snapshot.Options{TouchedBudget: tc.budget}})
			src.fill("a", 2000, 100)
			want := src.hash()
			b, index := src.stream(writesAfterPrepare(src))
			if want.AppliedIndex != index {
				t.Fatalf("snapshot index %d, hash taken at %d", index, want.AppliedIndex)
			}
			if src.hash() == want {
				t.Fatal("writes after prepare changed nothing; the test would prove nothing")
			}
			dst := newReplica(t, 1, 2)
			dst.fill("old", 10, 10)
			if err := dst.recover(b); err != nil {
				t.Fatalf("recover: %v", err)
			}
			if got := dst.hash(); got != want {
				t.Fatalf("installed image %+v, want state at snapshot index %+v", got, want)
			}
			if dst.sm.AppliedIndex() != index {
				t.Fatalf("applied %d after install, want %d", dst.sm.AppliedIndex(), index)
			}
			if st := dst.sm.SnapshotStats(); st.Received != 1 {
				t.Fatalf("stats %+v", st)
			}
			// The installed replica applies the next entries normally.
			dst.apply(put("after", "x"))
			if v, ok := dst.get("after"); !ok || v != "x" {
				t.Fatalf("write after install: %q %v", v, ok)
			}
			dst.assertNoLeftovers()
			src.assertNoLeftovers()
		})
	}
}

// An import sends a replica back to an older image: it must accept that.
func TestRecoverGoesBackToOlderImage(t *testing.T) {
	r := newReplica(t, 1, 1)
	r.fill("a", 100, 10)
	want := r.hash()
	b, index := r.stream(nil)
	r.fill("b", 100, 10)
	if err := r.recover(b); err != nil {
		t.Fatalf("recover: %v", err)
	}
	if got := r.hash(); got != want || r.sm.AppliedIndex() != index {
		t.Fatalf("after going back: %+v applied %d, want %+v", got, r.sm.AppliedIndex(), want)
	}
	r.assertNoLeftovers()
}

func TestRecoverRefusesAnotherShard(t *testing.T) {
	src := newReplica(t, 1, 1)
	src.fill("a", 50, 10)
	b, _ := src.stream(nil)
	dst := newReplica(t, 2, 1)
	dst.fill("mine", 5, 5)
	want := dst.hash()
	err := dst.recover(b)
	if !errors.Is(err, snapshot.ErrWrongShard) {
		t.Fatalf("recover of another shard's stream: %v", err)
	}
	if got := dst.hash(); got != want {
		t.Fatalf("state changed: %+v want %+v", got, want)
	}
}

func TestSaveStopsAndStreamingErrors(t *testing.T) {
	r := newReplica(t, 1, 1)
	r.fill("a", 3000, 1000)
	ctx, err := r.sm.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	close(stop)
	if err := r.sm.SaveSnapshot(ctx, &bytes.Buffer{}, stop); !errors.Is(err, statemachine.ErrSnapshotStopped) {
		t.Fatalf("stopped save: %v", err)
	}
	ctx, err = r.sm.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	w := &failingWriter{after: 100 << 10, err: fmt.Errorf("chunk sink: %w", statemachine.ErrSnapshotStreaming)}
	if err := r.sm.SaveSnapshot(ctx, w, make(chan struct{})); err != statemachine.ErrSnapshotStreaming {
		t.Fatalf("save to a broken sink: %v", err)
	}
	r.assertNoLeftovers()
}

type failingWriter struct {
	after int
	err   error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, w.err
	}
	w.after -= len(p)
	return len(p), nil
}

// A capture's files are exactly the Pebble kinds the reader accepts.
func TestListImageOnlyPebbleKinds(t *testing.T) {
	r := newReplica(t, 1, 1)
	r.fill("a", 1000, 100)
	ctx, err := r.sm.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.sm.SaveSnapshot(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h, err := snapshot.ReadStream(bytes.NewReader(buf.Bytes()), vfs.Default, dir, 1, snapshot.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	t.Logf("image at %d: %d files, %d bytes: %v", h.SnapshotIndex, h.FileCount, h.TotalBytes, names)
	if int(h.FileCount) != len(names) {
		t.Fatalf("header says %d files, wrote %d", h.FileCount, len(names))
	}
}
