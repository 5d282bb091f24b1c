package lock_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

// Options.PollMin: a blocked waiter re-tries after [PollMin, PollMax], "or
// sooner when the holder's remaining TTL (returned by the failed attempt) is
// shorter". Holders that die without releasing publish nothing, so only that
// hint lets a waiter with a long poll take the lock soon after their keys
// expire. With N nodes it is the time until enough holders' keys expire for
// a majority: the second-shortest of three PTTLs here, not the longest.
func TestWaiterRetriesWhenTheHoldersExpire(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pttls []time.Duration // a foreign value's TTL on each node
		want  time.Duration   // when enough of them expired
	}{
		{[]time.Duration{400 * time.Millisecond}, 400 * time.Millisecond},
		{[]time.Duration{200 * time.Millisecond, 400 * time.Millisecond, time.Minute}, 400 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("%d nodes", len(tc.pttls)), func(t *testing.T) {
			t.Parallel()
			nodes := locktest.Nodes(t, len(tc.pttls))
			prefix := locktest.Prefix(t)
			// A poll far longer than the context: only the hint can make
			// the second attempt happen in time.
			const poll = time.Minute
			c := locktest.Client(t, nodes, &lock.Options{TTL: 10 * time.Second, PollMin: poll, PollMax: poll, KeyPrefix: prefix})
			rdbs := make([]*redis.Client, len(nodes))
			for i, n := range nodes {
				rdbs[i] = locktest.Redis(t, n)
			}
			start := time.Now()
			for i, r := range rdbs {
				if err := r.Set(context.Background(), locktest.LockKey(prefix, "k"), "crashed", tc.pttls[i]).Err(); err != nil {
					t.Fatalf("SET foreign value: %v", err)
				}
			}
			l, err := c.Acquire(locktest.Ctx(t, 5*time.Second), "k")
			if err != nil {
				t.Fatalf("Acquire while holders' keys expire within %v (poll %v): %v", tc.want, poll, err)
			}
			defer l.Release(context.Background())
			// The bound only separates the hint (want plus a few ms) from the
			// poll (a minute), with room for a loaded machine.
			if d := time.Since(start); d < tc.want-50*time.Millisecond || d > tc.want+3*time.Second {
				t.Errorf("acquired after %v, want soon after the keys expired (%v)", d, tc.want)
			}
		})
	}
}
