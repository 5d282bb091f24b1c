package lock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
)

// A Client ignores the pub/sub message of its own releases (valuePrefix),
// so removing a value it left behind (the leftover of a failed attempt or
// of a lost lock, removed in the background by releaseOn) must wake its
// waiters locally. Polls of 2s would otherwise hide the wake-up: the waiter
// must get the key within a second of the removal. (From a review: before
// releaseOn woke them, the waiter slept 1.8s through it.)
func TestOwnLeftoverRemovalWakesWaiters(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t)
	prefix := testenv.Namespace(t) + ":"
	testenv.DeleteKeys(t, rdb, prefix)
	c, err := New([]redis.UniversalClient{rdb}, &Options{TTL: 5 * time.Second, KeyPrefix: prefix,
		PollMin: 2 * time.Second, PollMax: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	ks := c.keys("k")
	v := c.newValue()
	if err := rdb.Set(ctx, ks.lock, v, 5*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		actx, cancel := context.WithTimeout(ctx, 4*time.Second)
		defer cancel()
		l, err := c.Acquire(actx, "k")
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	// The waiter has made its first round, found the leftover and waits.
	testenv.Eventually(t, 5*time.Second, func() error {
		if c.Stats().Waiting == 0 || c.Stats().Attempts == 0 {
			return errors.New("the waiter is not waiting yet")
		}
		return nil
	})
	removed := time.Now()
	c.releaseOn(ctx, ks, v, []int{0}, true)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		if d := time.Since(removed); d > time.Second {
			t.Errorf("the waiter got the key %v after its own leftover went, want well under its 2s poll", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire did not return")
	}
}
