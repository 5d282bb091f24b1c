// Package logging builds the process's slog logger (JSON by default, text on
// a terminal) and carries per-request attributes, such as the request id,
// in a context so every log line of a request has them.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/term"
)

type ctxKey struct{}

// With returns a context whose log lines carry attrs in addition to any
// already carried.
func With(ctx context.Context, attrs ...slog.Attr) context.Context {
	prev, _ := ctx.Value(ctxKey{}).([]slog.Attr)
	all := make([]slog.Attr, 0, len(prev)+len(attrs))
	all = append(all, prev...)
	all = append(all, attrs...)
	return context.WithValue(ctx, ctxKey{}, all)
}

// contextHandler adds the context's attributes to each record.
type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if attrs, ok := ctx.Value(ctxKey{}).([]slog.Attr); ok {
		r.AddAttrs(attrs...)
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(attrs)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}

// ParseLevel reads debug, info, warn or error.
func ParseLevel(s string) (slog.Level, bool) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, false
	}
	return l, true
}

// New returns a logger writing to w at level: format "json", "text", or
// "auto" (text when w is a terminal, JSON otherwise; see [Format]).
func New(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if Format(w, format) == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(contextHandler{h})
}

// Format is the format [New] writes to w in, given format: "json" or
// "text" as asked, and for "auto" (or "") text when w is a terminal, JSON
// otherwise. A process whose children write through it (flashsale dev)
// passes them this, so that their lines come out as its own do.
func Format(w io.Writer, format string) string {
	if format != "auto" && format != "" {
		return format
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return "text"
	}
	return "json"
}

// RedisLogger carries go-redis's own log lines (a failed dial, a pool
// warning) into slog.Default() at warn level, so that they come out in the
// process's log format instead of as bare text on stderr. go-redis writes
// them through one process-wide logger, set with redis.SetLogger; main sets
// it once to this, and each command points slog.Default() at its own
// logger.
type RedisLogger struct{}

// Printf logs one go-redis line.
func (RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), "source", "go-redis")
}
