package snapshot_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4/statemachine"
)

// replica is one state machine driven directly, as Dragonboat would.
type replica struct {
	t   testing.TB
	dir string
	sm  *sm.StateMachine
}

func openReplica(t testing.TB, cfg sm.Config) *replica {
	t.Helper()
	s := sm.New(cfg)
	if _, err := s.Open(make(chan struct{})); err != nil {
		t.Fatalf("open %s: %v", cfg.Dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &replica{t: t, dir: cfg.Dir, sm: s}
}

func newReplica(t testing.TB, shard, id uint64) *replica {
	return openReplica(t, sm.Config{Dir: t.TempDir(), ShardID: shard, ReplicaID: id})
}

// apply applies cmds as the next entries, one entry each, in one Update.
func (r *replica) apply(cmds ...sm.Command) {
	r.t.Helper()
	next := r.sm.AppliedIndex() + 1
	ents := make([]statemachine.Entry, len(cmds))
	for i := range cmds {
		b, err := cmds[i].Encode()
		if err != nil {
			r.t.Fatalf("encode: %v", err)
		}
		ents[i] = statemachine.Entry{Index: next + uint64(i), Cmd: b}
	}
	if _, err := r.sm.Update(ents); err != nil {
		r.t.Fatalf("update: %v", err)
	}
}

func put(k, v string) sm.Command {
	return sm.Command{Op: sm.OpPut, Key: []byte(k), Value: []byte(v)}
}

func del(k string) sm.Command { return sm.Command{Op: sm.OpDelete, Key: []byte(k)} }

func delRange(s, e string) sm.Command {
	return sm.Command{Op: sm.OpDeleteRange, Key: []byte(s), End: []byte(e)}
}

// fill writes n keys k%06d with values of size vsize in batches.
func (r *replica) fill(prefix string, n, vsize int) {
	r.t.Helper()
	val := bytes.Repeat([]byte{'v'}, vsize)
	var batch []sm.Command
	for i := 0; i < n; i++ {
		batch = append(batch, sm.Command{Op: sm.OpPut, Key: []byte(fmt.Sprintf("%s%08d", prefix, i)), Value: val})
		if len(batch) == 256 {
			r.apply(batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		r.apply(batch...)
	}
}

func (r *replica) hash() engine.StateHash {
	r.t.Helper()
	v, err := r.sm.Lookup(sm.HashQuery{})
	if err != nil {
		r.t.Fatalf("hash: %v", err)
	}
	return v.(engine.StateHash)
}

func (r *replica) get(k string) (string, bool) {
	r.t.Helper()
	v, err := r.sm.Lookup(sm.GetQuery{Key: []byte(k)})
	if err != nil {
		r.t.Fatalf("get %q: %v", k, err)
	}
	g := v.(sm.GetResult)
	return string(g.Value), g.Found
}

// stream prepares and saves a snapshot of r into memory; between would run
// after PrepareSnapshot and before SaveSnapshot (writes made then are after
// the snapshot index and must not be in the image).
func (r *replica) stream(between func()) ([]byte, uint64) {
	r.t.Helper()
	ctx, err := r.sm.PrepareSnapshot()
	if err != nil {
		r.t.Fatalf("prepare: %v", err)
	}
	index := r.sm.AppliedIndex()
	if between != nil {
		between()
	}
	var buf bytes.Buffer
	if err := r.sm.SaveSnapshot(ctx, &buf, make(chan struct{})); err != nil {
		r.t.Fatalf("save: %v", err)
	}
	return buf.Bytes(), index
}

// assertNoLeftovers checks that only the live image remains under the root.
func (r *replica) assertNoLeftovers() {
	r.t.Helper()
	left, err := engine.NewRoot(r.dir, nil).Leftovers()
	if err != nil || len(left) != 0 {
		r.t.Fatalf("leftovers under %s: %v %v", r.dir, left, err)
	}
}

func (r *replica) recover(b []byte) error {
	return r.sm.RecoverFromSnapshot(bytes.NewReader(b), make(chan struct{}))
}
