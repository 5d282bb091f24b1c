package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

// sharedClient is a lock client on the shared Redis under the test's own
// prefix, which it returns; the keys are deleted at cleanup.
func sharedClient(t *testing.T, opts lock.Options) (*lock.Client, *redis.Client, string) {
	t.Helper()
	rdb := testenv.Redis(t)
	prefix := testenv.Namespace(t) + ":"
	testenv.DeleteKeys(t, rdb, prefix)
	opts.KeyPrefix = prefix
	c, err := lock.New([]redis.UniversalClient{rdb}, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, rdb, prefix
}

// "defer l.Release(ctx)" is safe: Release works when ctx has already
// ended (each node call gets NodeTimeout of its own), deleting the key at
// once instead of leaving it for the TTL.
func TestReleaseWithAnEndedContext(t *testing.T) {
	t.Parallel()
	c, rdb, prefix := sharedClient(t, lock.Options{TTL: time.Minute})
	for _, name := range []string{"canceled", "deadline"} {
		ctx, cancel := context.WithCancel(context.Background())
		if name == "deadline" {
			cancel()
			ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		}
		l, err := c.TryAcquire(locktest.Ctx(t, 10*time.Second), name)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := l.Release(ctx); err != nil {
			t.Errorf("%s: Release with an ended context: %v, want nil", name, err)
		}
		if locktest.Exists(t, rdb, locktest.LockKey(prefix, name)) {
			t.Errorf("%s: key left after Release with an ended context", name)
		}
	}
}
