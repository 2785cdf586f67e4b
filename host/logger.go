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
// own logger does, because Dragonboat relies on it not returning. A hook
// set with OnFatal sees it first and may end the process instead.
func (s *slogLogger) Panicf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	if h := fatalHook.Load(); h != nil {
		(*h)(msg, firstError(args))
	}
	l, _ := s.target()
	l.Error(msg, "pkg", s.pkg, "fatal", true)
	panic(msg)
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
