package main

import (
	"context"
	"log/slog"
	"strings"
)

// demoteRoutine wraps the handler given to Dragonboat. Dragonboat logs
// routine events at Warning: every election and role change (package
// "raft"), "mutual TLS disabled" on every start (package "config"), and a
// one-time notice that StaleRead was called (keeld's own status and stale
// reads). At keeld's default level (warn) that would print half a dozen
// warnings on every healthy start, so those records are logged at Info
// instead; everything else passes unchanged.
func demoteRoutine(h slog.Handler) slog.Handler { return &demoteHandler{h: h} }

// demoteHandler is immutable; WithAttrs returns a new one that remembers
// whether the "pkg" attribute names a chatty package. host.UseSlog may
// pass "pkg" either way, so Handle also looks at the record's attributes.
type demoteHandler struct {
	h      slog.Handler
	chatty bool
}

func (d *demoteHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Records may be demoted, so ask about the lowest level they can end
	// at only after demotion, in Handle.
	return true
}

func (d *demoteHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && (d.chatty || chattyRecord(r)) {
		r.Level = slog.LevelInfo
	}
	if !d.h.Enabled(ctx, r.Level) {
		return nil
	}
	return d.h.Handle(ctx, r)
}

func (d *demoteHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	chatty := d.chatty
	for _, a := range attrs {
		if a.Key == "pkg" {
			chatty = chattyPkg(a.Value.String())
		}
	}
	return &demoteHandler{h: d.h.WithAttrs(attrs), chatty: chatty}
}

func (d *demoteHandler) WithGroup(name string) slog.Handler {
	return &demoteHandler{h: d.h.WithGroup(name), chatty: d.chatty}
}

func chattyPkg(pkg string) bool { return pkg == "raft" || pkg == "config" }

// chattyRecord reports a routine warning by its own attributes, for
// loggers that pass "pkg" per record rather than through WithAttrs.
func chattyRecord(r slog.Record) bool {
	if strings.HasPrefix(r.Message, "StaleRead called") {
		return true
	}
	chatty := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "pkg" {
			chatty = chattyPkg(a.Value.String())
			return false
		}
		return true
	})
	return chatty
}
