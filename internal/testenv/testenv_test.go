package testenv_test

import (
	"context"
	"net"
	"testing"

	"github.com/flashsale/flashsale/internal/testenv"
)

// UnreachableRedis's address stays down for the whole test: nothing can
// listen on its port meanwhile (a private Redis of a parallel test took a
// port that was only free a moment ago, and the "down" Redis answered).
func TestUnreachableRedisStaysUnreachable(t *testing.T) {
	t.Parallel()
	rdb := testenv.UnreachableRedis(t)
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered at an unreachable Redis")
	}
	l, err := net.Listen("tcp", rdb.Options().Addr)
	if err == nil {
		_ = l.Close()
		t.Fatalf("another listener bound %s, the unreachable Redis's address", rdb.Options().Addr)
	}
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered at an unreachable Redis")
	}
}
