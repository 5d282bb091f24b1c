package lock_test

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the tests kill nodes on purpose.
	redis.SetLogger(quietLogger{})
	code := m.Run()
	stopBenchNodes()
	os.Exit(code)
}
