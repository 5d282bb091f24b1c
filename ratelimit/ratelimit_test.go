package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/ratelimit"
)

func newLimiter(t *testing.T, opts ratelimit.Options) (*ratelimit.Limiter, string) {
	t.Helper()
	rdb := testenv.Redis(t)
	opts.KeyPrefix = "t:" + testenv.Namespace(t) + ":"
	testenv.DeleteKeys(t, rdb, "rate:"+opts.KeyPrefix)
	l, err := ratelimit.New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l, opts.KeyPrefix
}

func TestNewRefusesBadOptions(t *testing.T) {
	t.Parallel()
	for _, o := range []ratelimit.Options{{}, {Rate: 0, Per: time.Second}, {Rate: 1}, {Rate: 1, Per: -time.Second}, {Rate: -1, Per: time.Second}} {
		if _, err := ratelimit.New(nil, o); !errors.Is(err, ratelimit.ErrBadOptions) {
			t.Errorf("New(%+v) = %v, want ErrBadOptions", o, err)
		}
	}
}

func TestAllowSpendsTheBurstThenRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, prefix := newLimiter(t, ratelimit.Options{Rate: 3, Per: time.Minute})
	if got, want := l.String(), "3 req/m (burst 3)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for i := range 3 {
		if wait, err := l.Allow(ctx, "alice"); err != nil || wait != 0 {
			t.Fatalf("order %d: Allow = %v, %v; want 0, nil", i+1, wait, err)
		}
	}
	// One every 20s after the burst: the next is about 20s away, and
	// refused attempts do not push it further.
	for range 3 {
		wait, err := l.Allow(ctx, "alice")
		if err != nil || wait <= 0 || wait > 20*time.Second {
			t.Fatalf("Allow past the burst = %v, %v; want a wait in (0, 20s]", wait, err)
		}
		if wait < 15*time.Second {
			t.Fatalf("Allow past the burst = %v; want about 20s", wait)
		}
	}
	// Keys are independent.
	if wait, err := l.Allow(ctx, "bob"); err != nil || wait != 0 {
		t.Fatalf("Allow(bob) = %v, %v; want 0, nil", wait, err)
	}
	// The state lives under the prefix, with an expiry.
	ttl, err := testenv.Redis(t).TTL(ctx, "rate:"+prefix+"alice").Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL of alice's key = %v, %v; want in (0, 1m]", ttl, err)
	}
}

func TestAllowRefillsOverTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// One a second: the second Allow comes well within the second even on
	// a loaded machine (at one per 50ms, a 50ms stall between the two calls
	// refilled the bucket and failed the test now and then).
	l, _ := newLimiter(t, ratelimit.Options{Rate: 1, Per: time.Second, Burst: 1})
	if wait, err := l.Allow(ctx, "u"); err != nil || wait != 0 {
		t.Fatalf("first Allow = %v, %v; want 0, nil", wait, err)
	}
	wait, err := l.Allow(ctx, "u")
	if err != nil || wait <= 0 || wait > time.Second {
		t.Fatalf("second Allow = %v, %v; want a wait in (0, 1s]", wait, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if wait, err := l.Allow(ctx, "u"); err != nil || wait != 0 {
			return fmt.Errorf("Allow = %v, %v; want 0, nil", wait, err)
		}
		return nil
	})
}

func TestAllowFailsWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	l, err := ratelimit.New(testenv.UnreachableRedis(t), ratelimit.Options{Rate: 1, Per: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if wait, err := l.Allow(context.Background(), "u"); err == nil || wait != 0 {
		t.Fatalf("Allow with Redis down = %v, %v; want 0 and an error", wait, err)
	}
}

// A Burst set apart from Rate is what a key may spend at once: more than
// the rate (a limit too hard otherwise) or less (not enforced otherwise);
// the rate still sets the pace after it.
func TestBurstApartFromRate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct{ rate, burst int }{{1, 3}, {5, 2}} {
		l, _ := newLimiter(t, ratelimit.Options{Rate: tc.rate, Per: time.Hour, Burst: tc.burst})
		key := fmt.Sprintf("rate-%d-burst-%d", tc.rate, tc.burst)
		for i := range tc.burst {
			if wait, err := l.Allow(ctx, key); err != nil || wait != 0 {
				t.Fatalf("%s: event %d: Allow = %v, %v; want 0, nil", key, i+1, wait, err)
			}
		}
		// Past the burst, one every Per/Rate: Rate, not Burst, sets how
		// soon the next event is allowed.
		every := time.Hour / time.Duration(tc.rate)
		if wait, err := l.Allow(ctx, key); err != nil || wait <= every*3/4 || wait > every {
			t.Fatalf("%s: Allow past the burst = %v, %v; want a wait in (%v, %v]", key, wait, err, every*3/4, every)
		}
	}
}

// Without a KeyPrefix, keys are stored under the documented default,
// "rate:flashsale:ratelimit:<key>", apart from the service's other keys.
func TestDefaultKeyPrefix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := testenv.Redis(t)
	key := testenv.Namespace(t) // of this test's own
	stored := "rate:flashsale:ratelimit:" + key
	testenv.DeleteKeys(t, rdb, stored)
	l, err := ratelimit.New(rdb, ratelimit.Options{Rate: 1, Per: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if wait, err := l.Allow(ctx, key); err != nil || wait != 0 {
		t.Fatalf("Allow = %v, %v; want 0, nil", wait, err)
	}
	if ttl, err := rdb.TTL(ctx, stored).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL of %s = %v, %v; want in (0, 1m]", stored, ttl, err)
	}
}
