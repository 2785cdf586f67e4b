package host

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4/logger"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestUseSlogRateLimitsRepeats: a warning or error repeated with the same
// format in one package (a down peer's transport errors, ~3 a second) is
// logged once per RepeatInterval with a count of those suppressed; other
// formats, other packages and Info records are not held back.
func TestUseSlogRateLimitsRepeats(t *testing.T) {
	var buf testutil.LockedBuffer
	clk := &fakeClock{t: time.Unix(1000, 0)}
	useSlog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), slog.LevelInfo, clk.now)
	t.Cleanup(func() { UseSlog(nil, slog.LevelInfo) })
	lt, lo := logger.GetLogger("keeltest-transport"), logger.GetLogger("keeltest-other")
	for i := 0; i < 30; i++ { // ten seconds of a down peer
		lt.Warningf("failed to connect to %s: %d", "127.0.0.1:1", i)
		lt.Errorf("send batch failed %d", i)
		lo.Warningf("failed to connect to %s: %d", "127.0.0.1:1", i)
		lt.Infof("routine %d", i)
		clk.add(300 * time.Millisecond)
	}
	clk.add(2 * time.Second)
	lt.Warningf("failed to connect to %s: %d", "127.0.0.1:1", 99)
	out := buf.String()
	count := func(s string) int { return strings.Count(out, s) }
	if n := count("pkg=keeltest-transport") - count("routine"); n != 3 {
		t.Errorf("transport logged %d warning/error lines in 11 s, want 3 (one per format, then one after the window):\n%s", n, out)
	}
	if n := count("pkg=keeltest-other"); n != 1 {
		t.Errorf("another package's same format logged %d times, want 1", n)
	}
	if n := count("routine"); n != 30 {
		t.Errorf("info records: %d, want all 30", n)
	}
	if !strings.Contains(out, `msg="failed to connect to 127.0.0.1:1: 99" pkg=keeltest-transport suppressed=29`) {
		t.Errorf("the line after the window lacks suppressed=29:\n%s", out)
	}
}
