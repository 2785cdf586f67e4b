package plugin

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
