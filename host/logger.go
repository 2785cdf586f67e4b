package host

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/lni/dragonboat/v4/logger"
)

// slogTarget is where Dragonboat's records go: the logger UseSlog was last
// given and its floor.
type slogTarget struct {
	l   *slog.Logger
	min slog.Level
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
func UseSlog(l *slog.Logger, minLevel slog.Level) {
	slogCurrent.Store(&slogTarget{l: l, min: minLevel})
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

func (s *slogLogger) target() (*slog.Logger, slog.Level) {
	t := slogCurrent.Load()
	if t == nil || t.l == nil {
		if t == nil {
			return slog.Default(), slog.LevelInfo
		}
		return slog.Default(), t.min
	}
	return t.l, t.min
}

func (s *slogLogger) log(level slog.Level, format string, args []interface{}) {
	l, min := s.target()
	if level < min || level < slog.Level(s.level.Load()) || !l.Enabled(context.Background(), level) {
		return
	}
	l.Log(context.Background(), level, fmt.Sprintf(format, args...), "pkg", s.pkg)
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
// NewNodeHost re-panics rather than swallowing it). The node registry's
// address mismatch is not logged here: a peer can trigger it at will,
// PeerGuard recovers it and logs it rate-limited, and elsewhere the
// runtime prints the panic as the process ends.
func (s *slogLogger) Panicf(format string, args ...interface{}) {
	f := &dragonboatFatal{pkg: s.pkg, msg: fmt.Sprintf(format, args...)}
	if !f.addressMismatch() {
		l, _ := s.target()
		l.Error(f.msg, "pkg", s.pkg, "fatal", true)
	}
	panic(f)
}

// currentSlog is the logger UseSlog was last given (slog.Default() before).
func currentSlog() *slog.Logger {
	l, _ := (&slogLogger{}).target()
	return l
}
