package host

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4/logger"
)

// slogTarget is where Dragonboat's records go: the logger UseSlog was last
// given, its floor, and the limiter for repeated warnings and errors.
type slogTarget struct {
	l       *slog.Logger
	min     slog.Level
	repeats *repeatLimiter
}

var (
	// slogCurrent is read on every record, so a later UseSlog call
	// redirects loggers Dragonboat created (and cached) earlier.
	slogCurrent atomic.Pointer[slogTarget]
	// slogInstall installs the factory once: Dragonboat's
	// SetLoggerFactory panics when called a second time.
	slogInstall sync.Once
)

// UseSlog routes all of Dragonboat's logging through l (nil means
// slog.Default()). Dragonboat's packages log routine events (elections,
// snapshots, connections) at Info; records below minLevel are dropped, so
// slog.LevelWarn makes a host quiet. Dragonboat's logger is process-global:
// call UseSlog before creating a NodeHost. Calling it again is safe and
// redirects every Dragonboat logger to the new l and floor. It panics only if
// another logger factory was installed in Dragonboat first, which is a
// programming error in the host.
//
// Warnings and errors are rate-limited per package and format string: at
// most one line per RepeatInterval for each, the next one carrying a
// "suppressed" count of those dropped in between. A down peer otherwise
// makes Dragonboat's transport log about three lines a second for as long
// as it is down.
func UseSlog(l *slog.Logger, minLevel slog.Level) {
	useSlog(l, minLevel, time.Now)
}

// RepeatInterval is the window UseSlog's rate limit allows one warning or
// error line per package and format string in.
const RepeatInterval = 10 * time.Second

func useSlog(l *slog.Logger, minLevel slog.Level, now func() time.Time) {
	slogCurrent.Store(&slogTarget{l: l, min: minLevel, repeats: newRepeatLimiter(RepeatInterval, now)})
	slogInstall.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			s := &slogLogger{pkg: pkg}
			s.level.Store(int64(slog.LevelDebug))
			return s
		})
	})
}

// slogLogger adapts slog to Dragonboat's ILogger. Dragonboat calls SetLevel
// on some package loggers; that can raise but never lower the host's floor.
type slogLogger struct {
	pkg string
	// level is the package's own floor set by SetLevel; atomic because
	// SetLevel may race with logging from Dragonboat's worker goroutines.
	level atomic.Int64
}

func (s *slogLogger) SetLevel(l logger.LogLevel) {
	var lv slog.Level
	switch l {
	case logger.CRITICAL:
		lv = slog.LevelError + 4
	case logger.ERROR:
		lv = slog.LevelError
	case logger.WARNING:
		lv = slog.LevelWarn
	case logger.INFO:
		lv = slog.LevelInfo
	default:
		lv = slog.LevelDebug
	}
	s.level.Store(int64(lv))
}

func (s *slogLogger) target() (*slog.Logger, slog.Level, *repeatLimiter) {
	t := slogCurrent.Load()
	if t == nil {
		return slog.Default(), slog.LevelInfo, nil
	}
	if t.l == nil {
		return slog.Default(), t.min, t.repeats
	}
	return t.l, t.min, t.repeats
}

func (s *slogLogger) log(level slog.Level, format string, args []interface{}) {
	l, min, repeats := s.target()
	if level < min || level < slog.Level(s.level.Load()) || !l.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{"pkg", s.pkg}
	if level >= slog.LevelWarn && repeats != nil {
		ok, suppressed := repeats.allow(s.pkg, format)
		if !ok {
			return
		}
		if suppressed > 0 {
			attrs = append(attrs, "suppressed", suppressed)
		}
	}
	l.Log(context.Background(), level, fmt.Sprintf(format, args...), attrs...)
}

// repeatLimiter lets one record per interval through for each (package,
// format) pair and counts the rest. Dragonboat's format strings are
// constants in its source, so the map stays small.
type repeatLimiter struct {
	every time.Duration
	now   func() time.Time
	// mu guards seen.
	mu   sync.Mutex
	seen map[repeatKey]*repeatState
}

type repeatKey struct{ pkg, format string }

type repeatState struct {
	last       time.Time
	suppressed int
}

func newRepeatLimiter(every time.Duration, now func() time.Time) *repeatLimiter {
	return &repeatLimiter{every: every, now: now, seen: make(map[repeatKey]*repeatState)}
}

// allow reports whether a record may be logged now and, if so, how many
// of its kind were dropped since the last one logged.
func (r *repeatLimiter) allow(pkg, format string) (bool, int) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	k := repeatKey{pkg, format}
	st := r.seen[k]
	if st == nil {
		r.seen[k] = &repeatState{last: now}
		return true, 0
	}
	if now.Sub(st.last) < r.every {
		st.suppressed++
		return false, 0
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	return true, n
}

func (s *slogLogger) Debugf(format string, args ...interface{}) {
	s.log(slog.LevelDebug, format, args)
}

func (s *slogLogger) Infof(format string, args ...interface{}) {
	s.log(slog.LevelInfo, format, args)
}

func (s *slogLogger) Warningf(format string, args ...interface{}) {
	s.log(slog.LevelWarn, format, args)
}

func (s *slogLogger) Errorf(format string, args ...interface{}) {
	s.log(slog.LevelError, format, args)
}

// Panicf is Dragonboat's fatal path: it logs and panics, as Dragonboat's
// own logger does, because Dragonboat relies on it not returning. The panic
// value is a *dragonboatFatal (an error, so Dragonboat's own recover in
// NewNodeHost re-panics rather than swallowing it). A hook set with
// OnFatal sees it first and may end the process instead. The node
// registry's address mismatch neither reaches the hook nor is logged here:
// a peer can trigger it at will, and PeerGuard recovers it and logs it
// rate-limited.
func (s *slogLogger) Panicf(format string, args ...interface{}) {
	f := &dragonboatFatal{pkg: s.pkg, msg: fmt.Sprintf(format, args...)}
	if !f.addressMismatch() {
		if h := fatalHook.Load(); h != nil {
			(*h)(f.msg, firstError(args))
		}
		l, _, _ := s.target()
		l.Error(f.msg, "pkg", s.pkg, "fatal", true)
	}
	panic(f)
}

// currentSlog is the logger UseSlog was last given (slog.Default() before).
func currentSlog() *slog.Logger {
	l, _, _ := (&slogLogger{}).target()
	return l
}

// fatalHook is the function OnFatal installed, read on Dragonboat's fatal
// path from any of its goroutines.
var fatalHook atomic.Pointer[func(msg string, err error)]

// OnFatal installs fn to run when Dragonboat calls its logger's Panicf,
// before the record is logged and the panic raised. msg is the formatted
// message and err the first error among Panicf's arguments, or nil
// (Dragonboat's panicNow passes the error itself, so errors.Is works on
// it). fn may end the process (a host exits with its own code and one line
// for a storage failure, see IsStorageFailure); if it returns, Panicf goes
// on and panics. nil removes the hook. Process-global, like UseSlog.
func OnFatal(fn func(msg string, err error)) {
	if fn == nil {
		fatalHook.Store(nil)
		return
	}
	fatalHook.Store(&fn)
}

func firstError(args []interface{}) error {
	for _, a := range args {
		if err, ok := a.(error); ok {
			return err
		}
	}
	return nil
}
