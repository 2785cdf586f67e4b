package snapshot

import (
	"context"
	"io"

	"github.com/lni/dragonboat/v4/statemachine"
	"golang.org/x/time/rate"
)

// throttledWriter writes to w at no more than a set rate. A stream to a
// follower competes with the leader's Raft work for CPU and disk (and the
// receiver's install with its own); spreading it out keeps the quorum's
// write latency near its idle level at the cost of a longer catch-up.
// Waits end when ctx does, so a stopped stream does not sleep on.
type throttledWriter struct {
	ctx context.Context
	w   io.Writer
	lim *rate.Limiter
}

// throttle returns w limited to bytesPerSecond, or w itself when the rate
// is 0 (unlimited).
func throttle(ctx context.Context, w io.Writer, bytesPerSecond int64) io.Writer {
	if bytesPerSecond <= 0 {
		return w
	}
	// A burst of one chunk: writes come in chunks of at most ChunkSize
	// (plus headers), and any larger burst would defeat the limit at the
	// start of every stream.
	burst := ChunkSize + 64<<10
	return &throttledWriter{ctx: ctx, w: w, lim: rate.NewLimiter(rate.Limit(bytesPerSecond), burst)}
}

func (t *throttledWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), t.lim.Burst())
		if err := t.lim.WaitN(t.ctx, n); err != nil {
			return written, statemachine.ErrSnapshotStopped
		}
		m, err := t.w.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}
