package plugin

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/lni/dragonboat/v4/logger"
)

// UseSlog routes all of Dragonboat's logging through l. Dragonboat's
// packages log routine events (elections, snapshots, connections) at Info;
// records below minLevel are dropped, so slog.LevelWarn makes a host quiet.
// Dragonboat's logger is process-global: call this once, before creating a
// NodeHost.
func UseSlog(l *slog.Logger, minLevel slog.Level) {
	logger.SetLoggerFactory(func(pkg string) logger.ILogger {
		return &slogLogger{l: l.With("pkg", pkg), min: minLevel}
	})
}

// slogLogger adapts slog to Dragonboat's ILogger. Dragonboat calls SetLevel
// on some package loggers; that can raise but never lower the host's floor.
type slogLogger struct {
	l     *slog.Logger
	min   slog.Level
	level slog.Level
}

func (s *slogLogger) SetLevel(l logger.LogLevel) {
	switch l {
	case logger.CRITICAL:
		s.level = slog.LevelError + 4
	case logger.ERROR:
		s.level = slog.LevelError
	case logger.WARNING:
		s.level = slog.LevelWarn
	case logger.INFO:
		s.level = slog.LevelInfo
	default:
		s.level = slog.LevelDebug
	}
}

func (s *slogLogger) log(level slog.Level, format string, args []interface{}) {
	if level < s.min || level < s.level || !s.l.Enabled(context.Background(), level) {
		return
	}
	s.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
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
// own logger does, because Dragonboat relies on it not returning.
func (s *slogLogger) Panicf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	s.l.Error(msg, "fatal", true)
	panic(msg)
}
