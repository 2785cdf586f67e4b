package main

import (
	"context"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/raftio"
)

// TestDeletionsRecordsOwnRemovals: deletions answers wait with true only
// for the replica Dragonboat reported deleted, whether the event came
// before or during the wait, and a repeated event does not panic.
func TestDeletionsRecordsOwnRemovals(t *testing.T) {
	d := newDeletions()
	d.NodeDeleted(raftio.NodeInfo{ShardID: 2, ReplicaID: 3})
	d.NodeDeleted(raftio.NodeInfo{ShardID: 2, ReplicaID: 3})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !d.wait(ctx, 2, 3) {
		t.Fatal("replica 3 of shard 2 was reported deleted, wait says not")
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if !d.wait(done, 2, 3) {
		t.Fatal("a reported deletion is not seen by a wait whose context is done")
	}
	for _, k := range []replicaKey{{2, 1}, {3, 3}} {
		if d.wait(done, k.shard, k.replica) {
			t.Fatalf("replica %d of shard %d was not reported deleted, wait says it was", k.replica, k.shard)
		}
	}
	// An event during the wait ends it.
	got := make(chan bool, 1)
	go func() { got <- d.wait(ctx, 4, 1) }()
	d.NodeDeleted(raftio.NodeInfo{ShardID: 4, ReplicaID: 1})
	if !<-got {
		t.Fatal("an event during the wait did not end it")
	}
}
