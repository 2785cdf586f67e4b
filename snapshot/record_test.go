package snapshot_test

import (
	"testing"

	"github.com/keel-db/keel/sm"
)

// opWrites has, for every operation the codec knows, a command that writes
// keys existing at the snapshot index. TestEveryOpIsRecorded fails when a
// new operation is added to the codec without a case here.
var opWrites = map[sm.Op]sm.Command{
	sm.OpPut:         put("a00000001", "changed"),
	sm.OpDelete:      del("a00000002"),
	sm.OpDeleteRange: delRange("a00000010", "a00000050"),
	sm.OpTxn: {Op: sm.OpTxn, Conds: []sm.Cond{{Kind: sm.CondExists, Key: []byte("a00000003")}}, Ops: []sm.TxnOp{
		{Op: sm.OpPut, Key: []byte("a00000060"), Value: []byte("txn")},
		{Op: sm.OpDelete, Key: []byte("a00000061")},
	}},
}

// encodable reports whether the codec accepts some command with op: the
// operation exists.
func encodable(op sm.Op) bool {
	shapes := []sm.Command{
		{Op: op, Key: []byte("k")},
		{Op: op, Key: []byte("k"), Value: []byte("v")},
		{Op: op, Key: []byte("k"), End: []byte("l")},
		{Op: op, Ops: []sm.TxnOp{{Op: sm.OpPut, Key: []byte("k"), Value: []byte("v")}}},
	}
	for _, c := range shapes {
		if _, err := c.Encode(); err == nil {
			return true
		}
	}
	return false
}

// TestEveryOpIsRecorded applies each operation alone after a capture began
// and checks the streamed image is still exactly the state at the snapshot
// index: the write went through the recording batch. Each operation gets
// its own capture, so one that forgot to record cannot hide behind another
// that touched the same keys.
func TestEveryOpIsRecorded(t *testing.T) {
	for op := 0; op < 256; op++ {
		if _, ok := opWrites[sm.Op(op)]; encodable(sm.Op(op)) && !ok {
			t.Errorf("operation %d encodes but has no case in opWrites", op)
		}
	}
	for op, cmd := range opWrites {
		src := openReplica(t, sm.Config{Dir: t.TempDir(), ShardID: 1, ReplicaID: 1})
		src.fill("a", 100, 10)
		want := src.hash()
		b, _ := src.stream(func() { src.apply(cmd) })
		if src.hash() == want {
			t.Fatalf("op %d changed nothing; the case proves nothing", op)
		}
		dst := newReplica(t, 1, 2)
		if err := dst.recover(b); err != nil {
			t.Fatalf("op %d: recover: %v", op, err)
		}
		if got := dst.hash(); got != want {
			t.Errorf("op %d: image %+v, want the state at the snapshot index %+v (a write went unrecorded)", op, got, want)
		}
	}
}
