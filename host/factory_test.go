package host

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4/logger"
)

func TestUseSlogFilters(t *testing.T) {
	var buf testutil.LockedBuffer
	UseSlog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), slog.LevelWarn)
	lg := logger.GetLogger("keeltest-a")
	lg.Debugf("debug %d", 1)
	lg.Infof("info %d", 1)
	lg.Warningf("warning %d", 1)
	lg.Errorf("error %d", 1)
	out := buf.String()
	for _, s := range []string{"debug 1", "info 1"} {
		if strings.Contains(out, s) {
			t.Fatalf("%q got through a warn floor:\n%s", s, out)
		}
	}
	for _, s := range []string{`msg="warning 1"`, `msg="error 1"`, "level=WARN", "level=ERROR", "pkg=keeltest-a"} {
		if !strings.Contains(out, s) {
			t.Fatalf("missing %q:\n%s", s, out)
		}
	}

	// Dragonboat's SetLevel raises a package's floor above the host's.
	// (New format strings: a repeat of one would be rate-limited.)
	lg.SetLevel(logger.ERROR)
	lg.Warningf("warning %d after SetLevel", 2)
	lg.Errorf("error %d after SetLevel", 2)
	if out := buf.String(); strings.Contains(out, "warning 2") || !strings.Contains(out, "error 2") {
		t.Fatalf("SetLevel(ERROR) not honoured:\n%s", out)
	}

	// A second UseSlog does not panic (Dragonboat's factory can only be
	// set once) and redirects loggers created before it.
	var buf2 testutil.LockedBuffer
	UseSlog(slog.New(slog.NewTextHandler(&buf2, &slog.HandlerOptions{Level: slog.LevelDebug})), slog.LevelDebug)
	lg.Errorf("error %d", 3)
	lb := logger.GetLogger("keeltest-b")
	lb.Debugf("debug %d", 3)
	if out := buf2.String(); !strings.Contains(out, "error 3") || !strings.Contains(out, "debug 3") {
		t.Fatalf("second UseSlog not in effect:\n%s", out)
	}
	if strings.Contains(buf.String(), "error 3") {
		t.Fatalf("old logger still receives records")
	}
	// The slog handler's own level still applies.
	var buf3 testutil.LockedBuffer
	UseSlog(slog.New(slog.NewTextHandler(&buf3, &slog.HandlerOptions{Level: slog.LevelError})), slog.LevelDebug)
	lb.Warningf("warning %d", 4)
	if buf3.String() != "" {
		t.Fatalf("handler level ignored: %s", buf3.String())
	}
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(buf3.String(), "fatal=true") {
				t.Fatalf("Panicf must log and panic: recovered %v, log %q", r, buf3.String())
			}
		}()
		lb.Panicf("boom %d", 5)
	}()
}

func TestFactory(t *testing.T) {
	if _, err := NewFactory(Config{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("empty RootDir: %v", err)
	}
	root := t.TempDir()
	f, err := NewFactory(Config{RootDir: root})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Config().DataDir(3, 4), filepath.Join(root, "shard-3", "replica-4"); got != want {
		t.Fatalf("DataDir %q, want %q", got, want)
	}
	if f.StateMachine(3, 4) != nil {
		t.Fatalf("state machine before Create")
	}
	s := f.Func()(3, 4)
	if s == nil || f.StateMachine(3, 4) != s {
		t.Fatalf("StateMachine does not return the created one")
	}
	applied, err := s.Open(make(chan struct{}))
	if err != nil || applied != 0 {
		t.Fatalf("open: %d %v", applied, err)
	}
	defer s.Close()
	if f.StateMachine(4, 3) != nil {
		t.Fatalf("another replica's state machine exists")
	}
}

func TestShardConfigValid(t *testing.T) {
	c := ShardConfig(1, 2)
	if err := c.Validate(); err != nil {
		t.Fatalf("ShardConfig is not a valid Dragonboat config: %v", err)
	}
	if c.ShardID != 1 || c.ReplicaID != 2 {
		t.Fatalf("ids %d %d", c.ShardID, c.ReplicaID)
	}
	l := LogDBConfig()
	if l.Shards != 1 || l.IsEmpty() {
		t.Fatalf("LogDBConfig %+v", l)
	}
}

// TestFactoryCloseClosesLeftovers: a state machine Dragonboat never closed
// (NodeHost.Close gives up on its close workers after a timed wait) is
// closed by Factory.Close, which then releases the shared resources, and
// the tablet is left with a valid CLOSED record so the next start need
// not open it.
func TestFactoryCloseClosesLeftovers(t *testing.T) {
	root := t.TempDir()
	f, err := NewFactory(Config{RootDir: root})
	if err != nil {
		t.Fatal(err)
	}
	for shard := uint64(1); shard <= 3; shard++ {
		s := f.Create(shard, 1)
		if _, err := s.Open(make(chan struct{})); err != nil {
			t.Fatalf("open shard %d: %v", shard, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close with state machines left open: %v", err)
	}
	for shard := uint64(1); shard <= 3; shard++ {
		if s := f.StateMachine(shard, 1); s.IsOpen() {
			t.Fatalf("shard %d still open after Factory.Close", shard)
		}
		r := engine.NewRoot(f.Config().DataDir(shard, 1), nil)
		if _, ok := r.ReadClosed(); !ok {
			t.Fatalf("shard %d: no valid CLOSED record after Factory.Close", shard)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
