package lock

import (
	"context"
	"errors"
	"sync/atomic"
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
	acquires := &acquireCounter{}
	rdb.AddHook(acquires)
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
	// The waiter has made its rounds (the first, then the one it makes once
	// queued), found the leftover in both and waits. Counted when the node
	// has answered: a removal before the second round's answer would let
	// that round take the key without any wake-up.
	testenv.Eventually(t, 5*time.Second, func() error {
		if c.Stats().Waiting == 0 || acquires.n.Load() < 2 {
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

// acquireCounter counts the acquire script calls the node has answered.
type acquireCounter struct{ n atomic.Int64 }

func (h *acquireCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *acquireCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *acquireCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if args := cmd.Args(); err == nil && len(args) > 1 &&
			(args[0] == "evalsha" && args[1] == acquireScript.Hash() || args[0] == "eval" && args[1] == acquireSrc) {
			h.n.Add(1)
		}
		return err
	}
}
