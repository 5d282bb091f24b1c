package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/flashsale/flashsale/internal/logging"
)

// Not parallel: it points slog.Default() at its own buffer.
func TestRedisLoggerWritesThroughSlog(t *testing.T) {
	prev := slog.Default()
	t.Cleanup(func() { slog.SetDefault(prev) })
	var buf bytes.Buffer
	slog.SetDefault(logging.New(&buf, "json", slog.LevelInfo).With("component", "worker"))

	logging.RedisLogger{}.Printf(context.Background(), "redis: %s: failed to dial after %d attempts\n", "connection pool", 5)

	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
	}
	for k, want := range map[string]string{
		"level": "WARN", "msg": "redis: connection pool: failed to dial after 5 attempts",
		"source": "go-redis", "component": "worker",
	} {
		if line[k] != want {
			t.Errorf("%s: got %v, want %q (line %s)", k, line[k], want, buf.String())
		}
	}
}

// "auto" is text on a terminal only: anything else (a pipe, a buffer) gets
// JSON; a format asked for stays as it is.
func TestFormat(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	for format, want := range map[string]string{"auto": "json", "": "json", "json": "json", "text": "text"} {
		if got := logging.Format(&buf, format); got != want {
			t.Errorf("Format(buffer, %q) = %q, want %q", format, got, want)
		}
	}
}

// A line logged with a request's context carries every attribute put in
// it, through a logger with attributes of its own (the component's), and
// lines under the level are dropped. Before, nothing here read them: a
// logger's With losing the context's attributes, a second With dropping
// the first's (the request id gone from a request's lines), or the level
// ignored (info lines written under -log-level warn) went
// unnoticed.
func TestNewCarriesContextAttrsAndLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := logging.New(&buf, "json", slog.LevelWarn).With("component", "api")
	ctx := logging.With(context.Background(), slog.String("request_id", "r1"))
	ctx = logging.With(ctx, slog.Int("user_id", 7))
	log.InfoContext(ctx, "not shown")
	log.WarnContext(ctx, "shown")

	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
	}
	for k, want := range map[string]any{"msg": "shown", "component": "api", "request_id": "r1", "user_id": 7.0} {
		if line[k] != want {
			t.Errorf("%s: got %v, want %v (line %s)", k, line[k], want, buf.String())
		}
	}
}
