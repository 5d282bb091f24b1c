package soldout_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/soldout"
)

// The gate's bounds keep their order. A cached "sold out" (CacheTTL) and one
// brought back by a read in flight (freshFor after the read began) are
// trusted for less than Settle, which a restock waits after its Reopen
// before adding stock: no order is refused once the stock may be there.
// And with the default CacheTTL, a read that answers within readTimeout is
// not thrown away as stale: were Settle only CacheTTL plus a margin, a
// "sold out" read in 1.1-2s would be given to no caller, and each order
// meanwhile let through to the queue.
func TestGateBoundsKeepTheirOrder(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t)
	for _, ttl := range []time.Duration{0, 100 * time.Millisecond, time.Second, 5 * time.Second} {
		g := soldout.New(rdb, soldout.Options{CacheTTL: ttl})
		cache := ttl
		if cache == 0 {
			cache = time.Second // the default
		}
		if settle, fresh := g.Settle(), soldout.FreshFor(g); cache >= settle || fresh >= settle {
			t.Errorf("CacheTTL %v: cached answers trusted %v, read answers %v, Settle %v; want both under Settle",
				ttl, cache, fresh, settle)
		}
		if ttl == 0 && soldout.FreshFor(g) <= soldout.ReadTimeout {
			t.Errorf("default CacheTTL: read answers trusted %v, not past the read's own bound %v", soldout.FreshFor(g), soldout.ReadTimeout)
		}
	}
}

// Zero options take the documented defaults: a restock's wait (Settle,
// 2.1s) and the bounds sale documents (RestockBound, 14.2s) rest on
// CacheTTL 1s; how long a "not sold out" and an unchecked stale flag last
// on OpenTTL 5s and CheckInterval 30s.
func TestOptionDefaults(t *testing.T) {
	t.Parallel()
	g := soldout.New(nil, soldout.Options{})
	if got, want := g.Settle(), 2100*time.Millisecond; got != want {
		t.Errorf("Settle() = %v, want %v (CacheTTL 1s)", got, want)
	}
	o := soldout.Opts(g)
	if o.KeyPrefix != "flashsale:" {
		t.Errorf("KeyPrefix = %q, want %q", o.KeyPrefix, "flashsale:")
	}
	for _, d := range []struct {
		name      string
		got, want time.Duration
	}{
		{"CacheTTL", o.CacheTTL, time.Second},
		{"OpenTTL", o.OpenTTL, 5 * time.Second},
		{"FlagTTL", o.FlagTTL, 10 * time.Minute},
		{"CheckInterval", o.CheckInterval, 30 * time.Second},
	} {
		if d.got != d.want {
			t.Errorf("%s = %v, want %v", d.name, d.got, d.want)
		}
	}
}

// A gate keeps state for a bounded number of products: a long-running API
// process reads every product ordered and hears of every product
// announced, and kept a cached answer and an epoch for each of them for
// good. Past the bound its maps are emptied, and it still answers right.
func TestGateStateIsBounded(t *testing.T) {
	t.Parallel()
	g, _ := newGate(t, time.Hour)
	const bound, products = 10, 50
	soldout.SetMaxTracked(g, bound)
	ctx := context.Background()
	// The bound holds after every call, not only at the end: a map trimmed
	// at twice the bound would, by chance, hold fewer than it after the last.
	for i := range products {
		if sold, err := g.SoldOut(ctx, fmt.Sprintf("p%d", i)); err != nil || sold {
			t.Fatalf("SoldOut(p%d) = %v, %v; want false, nil", i, sold, err)
		}
		if cache, _ := soldout.Tracked(g); cache > bound {
			t.Fatalf("after reading %d products: %d cached answers, want at most %d", i+1, cache, bound)
		}
	}
	var gen int64
	for i := range products {
		var err error
		if gen, err = g.Reopen(ctx, fmt.Sprintf("p%d", i), 0); err != nil {
			t.Fatal(err)
		}
		if cache, epoch := soldout.Tracked(g); cache > bound || epoch > bound {
			t.Fatalf("after reopening %d products: %d cached answers and %d epochs, want at most %d each", i+1, cache, epoch, bound)
		}
	}
	last := fmt.Sprintf("p%d", products-1)
	if set, err := g.Mark(ctx, last, gen); err != nil || !set {
		t.Fatalf("Mark(%s) = %v, %v; want true, nil", last, set, err)
	}
	if sold, err := g.SoldOut(ctx, last); err != nil || !sold {
		t.Errorf("SoldOut(%s) after its mark, the maps trimmed = %v, %v; want true, nil", last, sold, err)
	}
}

// A FlagTTL under a millisecond still marks: the mark's PX is in whole
// milliseconds, and it was sent as PX 0, which Redis refuses, so every
// mark failed.
func TestSubMillisecondFlagTTLStillMarks(t *testing.T) {
	t.Parallel()
	rdb, prefix := sharedRedis(t)
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, FlagTTL: 500 * time.Microsecond})
	if set, err := g.Mark(context.Background(), "p", 0); err != nil || !set {
		t.Fatalf("Mark with FlagTTL 500µs = %v, %v; want true, nil", set, err)
	}
}

// A read in flight when the gate reopens the product does not cache its
// answer from before the Reopen (trusted for CacheTTL, an hour here): the
// read compares the product's epoch, and the count of resets, with those
// it began with. The second case trims the epochs (past maxTracked), which
// brings the product's epoch back to the value the read began with: only
// the reset the trim counts tells the read apart. In the third another
// process reopens the product, and the gate hears of it through Run.
func TestReadInFlightAcrossAReopenIsNotCached(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		reopens   []string // by the gate; the last reopens p, while the read is in flight
		announced bool     // p reopened by another process instead, heard through Run
	}{
		{"a Reopen", []string{"p"}, false},
		{"a Reopen that trims the epochs", []string{"q1", "q2", "p"}, false},
		{"another process's Reopen, announced", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb, prefix := sharedRedis(t)
			slow, held, release := heldClient(t, rdb, false)

			g := soldout.New(slow, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Hour, OpenTTL: time.Hour})
			soldout.SetMaxTracked(g, 3)
			other := soldout.New(rdb, soldout.Options{KeyPrefix: prefix})
			if tc.announced {
				runCtx, stop := context.WithCancel(ctx)
				defer stop()
				run(runCtx, t, g)
			}
			gen, err := g.Reopen(ctx, "p", 0) // p's epoch in g: 1
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := other.Mark(ctx, "p", gen); err != nil || !ok {
				t.Fatalf("Mark = %v, %v; want true, nil", ok, err)
			}
			first := make(chan bool, 1)
			go func() {
				sold, _ := g.SoldOut(ctx, "p")
				first <- sold
			}()
			select {
			case <-held.answered: // Redis said "sold out"; the reply is held back
			case <-time.After(10 * time.Second):
				t.Fatal("no GET answered within 10s")
			}
			for _, q := range tc.reopens {
				if _, err := g.Reopen(ctx, q, 0); err != nil {
					t.Fatal(err)
				}
			}
			if tc.announced {
				// s, read open (cached for an hour), is marked after p is
				// reopened elsewhere: once g sees s sold out, it has heard
				// p's reopen too (one channel, in order).
				if sold, err := g.SoldOut(ctx, "s"); err != nil || sold {
					t.Fatalf("SoldOut(s) = %v, %v; want false, nil", sold, err)
				}
				if _, err := other.Reopen(ctx, "p", 0); err != nil {
					t.Fatal(err)
				}
				if ok, err := other.Mark(ctx, "s", 0); err != nil || !ok {
					t.Fatalf("Mark(s) = %v, %v; want true, nil", ok, err)
				}
				testenv.Eventually(t, 5*time.Second, func() error {
					if sold, err := g.SoldOut(ctx, "s"); err != nil || !sold {
						return fmt.Errorf("SoldOut(s) = %v, %v; want true (its mark announced)", sold, err)
					}
					return nil
				})
			}
			release()
			select {
			case <-first: // its answer may be either: it raced the Reopen
			case <-time.After(10 * time.Second):
				t.Fatal("SoldOut did not answer within 10s of the reply's release")
			}
			if sold, err := g.SoldOut(ctx, "p"); err != nil || sold {
				t.Fatalf("SoldOut after the Reopen = %v, %v; want false, nil (the read from before it was cached)", sold, err)
			}
		})
	}
}
