package soldout_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale/soldout"
)

// A cached "sold out" is trusted for CacheTTL, not OpenTTL, even when
// OpenTTL is longer (the defaults: 1s and 5s): a restock waits only Settle
// (2*CacheTTL+100ms) before adding stock, and a gate that missed the
// reopen's announcement (no subscription, or one that was down) must not
// refuse orders once that stock is there.
func TestSoldOutFlagIsTrustedOnlyForCacheTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	const cacheTTL = 50 * time.Millisecond
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: cacheTTL, OpenTTL: time.Hour})
	other := soldout.New(rdb, soldout.Options{KeyPrefix: prefix})
	if ok, err := other.Mark(ctx, "p", 0); err != nil || !ok {
		t.Fatalf("Mark = %v, %v; want true, nil", ok, err)
	}
	if got, err := g.SoldOut(ctx, "p"); err != nil || !got {
		t.Fatalf("SoldOut = %v, %v; want true, nil", got, err)
	}
	if _, err := other.Reopen(ctx, "p", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(g.Settle())
	if got, err := g.SoldOut(ctx, "p"); err != nil || got {
		t.Fatalf("SoldOut a Settle after another gate's Reopen = %v, %v; want false, nil", got, err)
	}
}

// A mark's flag expires after FlagTTL: the safety net should Redis and
// PostgreSQL ever disagree (a Confirm that failed), past which the next
// order re-marks instead of the flag refusing orders for good. It lives for
// FlagTTL, not less (a flag gone early lets orders through to the queue
// until the next mark), and 10m when FlagTTL is not set.
func TestMarkedFlagExpiresAfterFlagTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	for _, tc := range []struct {
		flagTTL, want time.Duration
	}{
		{time.Minute, time.Minute},
		{0, 10 * time.Minute}, // the default
	} {
		g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, FlagTTL: tc.flagTTL})
		if set, err := g.Mark(ctx, "p", 0); err != nil || !set {
			t.Fatalf("FlagTTL %v: Mark = %v, %v; want true, nil", tc.flagTTL, set, err)
		}
		// A margin for a slow machine between the mark and the read.
		if ttl, err := rdb.PTTL(ctx, prefix+"soldout:{p}").Result(); err != nil || ttl <= tc.want-10*time.Second || ttl > tc.want {
			t.Errorf("FlagTTL %v: the flag's TTL = %v, %v; want within (%v, %v]", tc.flagTTL, ttl, err, tc.want-10*time.Second, tc.want)
		}
	}
}
