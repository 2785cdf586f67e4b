package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
)

func TestRetryDropped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	calls := 0
	err := retryDropped(ctx, func() error {
		calls++
		if calls < 3 {
			return dragonboat.ErrShardNotReady
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("dropped twice then ok: err %v after %d calls", err, calls)
	}
	calls = 0
	err = retryDropped(ctx, func() error { calls++; return dragonboat.ErrTimeout })
	if !errors.Is(err, dragonboat.ErrTimeout) || calls != 1 {
		t.Fatalf("a timeout may have applied and must not be retried: err %v after %d calls", err, calls)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	err = retryDropped(short, func() error { return dragonboat.ErrSystemBusy })
	if !errors.Is(err, dragonboat.ErrSystemBusy) {
		t.Fatalf("at the deadline: %v, want the last drop", err)
	}
}

// TestRetryRead: a read whose attempt times out is tried again within the
// caller's deadline, each attempt with its own shorter deadline; other
// errors end it at once.
func TestRetryRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	calls := 0
	err := retryRead(ctx, func(actx context.Context) error {
		calls++
		dl, ok := actx.Deadline()
		if !ok || time.Until(dl) > readAttempt {
			t.Errorf("attempt %d: deadline in %v, want at most %v", calls, time.Until(dl), readAttempt)
		}
		if calls < 3 {
			return dragonboat.ErrTimeout
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("timed out twice then ok: err %v after %d calls", err, calls)
	}
	calls = 0
	boom := errors.New("boom")
	if err := retryRead(ctx, func(context.Context) error { calls++; return boom }); !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("another error: %v after %d calls, want boom after 1", err, calls)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	err = retryRead(short, func(actx context.Context) error { <-actx.Done(); return dragonboat.ErrTimeout })
	if !errors.Is(err, dragonboat.ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Fatalf("at the caller's deadline: %v after %v, want ErrTimeout soon", err, time.Since(start))
	}
}

// TestRetryDroppedNearDeadline: retries stop before the deadline is too
// close for Dragonboat to take the request, so the caller sees the drop
// (a retryable 503 in keeld), never ErrTimeoutTooSmall. The op applies
// Dragonboat's own rule (under one 20 ms tick left: too small); the
// deadlines are chosen so the old backoff schedule (2, 4, ... 100 ms) woke
// with less than a tick left.
func TestRetryDroppedNearDeadline(t *testing.T) {
	for _, d := range []time.Duration{40, 70, 135, 235, 335} {
		ctx, cancel := context.WithTimeout(context.Background(), d*time.Millisecond)
		err := retryDropped(ctx, func() error {
			if dl, _ := ctx.Deadline(); time.Until(dl) < 20*time.Millisecond {
				return dragonboat.ErrTimeoutTooSmall
			}
			return dragonboat.ErrShardNotReady
		})
		cancel()
		if !errors.Is(err, dragonboat.ErrShardNotReady) {
			t.Errorf("deadline %v ms: %v, want the drop (ErrShardNotReady)", int(d), err)
		}
	}
}
