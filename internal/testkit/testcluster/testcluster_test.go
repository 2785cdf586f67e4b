package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/statemachine"
)

func TestFreeAddrs(t *testing.T) {
	addrs := FreeAddrs(t, 5)
	seen := map[string]bool{}
	for _, a := range addrs {
		if !strings.HasPrefix(a, "127.0.0.1:") || seen[a] {
			t.Fatalf("bad or repeated address %q in %v", a, addrs)
		}
		seen[a] = true
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("address %s is not free: %v", a, err)
		}
		l.Close()
	}
}

func TestErrorClasses(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("op: %w", err) }
	for _, err := range []error{dragonboat.ErrSystemBusy, dragonboat.ErrShardNotReady, wrap(dragonboat.ErrShardNotInitialized)} {
		if !NotApplied(err) || !Retryable(err) {
			t.Fatalf("%v: NotApplied %v Retryable %v", err, NotApplied(err), Retryable(err))
		}
	}
	for _, err := range []error{dragonboat.ErrTimeout, context.DeadlineExceeded, wrap(dragonboat.ErrCanceled), dragonboat.ErrAborted} {
		if NotApplied(err) || !Retryable(err) {
			t.Fatalf("%v is ambiguous: NotApplied %v Retryable %v", err, NotApplied(err), Retryable(err))
		}
	}
	if err := errors.New("boom"); NotApplied(err) || Retryable(err) {
		t.Fatalf("a plain error is classified as transient")
	}
}

func TestRetry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	calls := 0
	err := Retry(ctx, func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Fatalf("attempt without a deadline")
		}
		calls++
		if calls < 3 {
			return dragonboat.ErrSystemBusy
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Retry: %v after %d calls", err, calls)
	}
	calls = 0
	boom := errors.New("boom")
	if err := Retry(ctx, func(context.Context) error { calls++; return boom }); !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("non-retryable error: %v after %d calls", err, calls)
	}
	short, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	if err := Retry(short, func(context.Context) error { return dragonboat.ErrShardNotReady }); !errors.Is(err, dragonboat.ErrShardNotReady) {
		t.Fatalf("Retry past its context: %v", err)
	}
}

// TestSingleReplicaRestart exercises the harness itself: start, write,
// stop, restart on the same directories, read back, and the wrap hook.
func TestSingleReplicaRestart(t *testing.T) {
	var wrapped atomic.Int32
	c := New(t, 1, Options{ShardID: 7, WrapStateMachine: func(id uint64, s statemachine.IOnDiskStateMachine) statemachine.IOnDiskStateMachine {
		wrapped.Add(1)
		return s
	}})
	if c.ShardID != 7 || len(c.Running()) != 1 || c.Leader().ReplicaID != 1 {
		t.Fatalf("cluster: shard %d, %d running", c.ShardID, len(c.Running()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := c.Node(1)
	if err := Retry(ctx, func(ctx context.Context) error { return n.Client.Put(ctx, []byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	c.Stop(1)
	if c.Node(1) != nil || len(c.Running()) != 0 || n.NH != nil {
		t.Fatalf("replica still listed as running after Stop")
	}
	c.Stop(1) // stopping twice is harmless
	n = c.Start(1)
	c.WaitReady(30 * time.Second)
	var v []byte
	if err := Retry(ctx, func(ctx context.Context) error {
		var err error
		v, _, err = n.Client.Get(ctx, []byte("k"))
		return err
	}); err != nil || string(v) != "v" {
		t.Fatalf("after restart: %q %v", v, err)
	}
	if sm := n.Factory.StateMachine(7, 1); sm == nil || sm.AppliedIndex() == 0 {
		t.Fatalf("factory does not expose the running state machine")
	}
	if got := wrapped.Load(); got != 2 {
		t.Fatalf("WrapStateMachine called %d times for two starts", got)
	}
	h := c.WaitConverged(10 * time.Second)
	if len(h) != 1 || h[1].Keys != 1 {
		t.Fatalf("hashes %+v", h)
	}
}
