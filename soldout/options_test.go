package soldout_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/soldout"
)

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
	for i := range products {
		if sold, err := g.SoldOut(ctx, fmt.Sprintf("p%d", i)); err != nil || sold {
			t.Fatalf("SoldOut(p%d) = %v, %v; want false, nil", i, sold, err)
		}
	}
	if cache, _ := soldout.Tracked(g); cache > bound {
		t.Errorf("after reading %d products: %d cached answers, want at most %d", products, cache, bound)
	}
	var gen int64
	for i := range products {
		var err error
		if gen, err = g.Reopen(ctx, fmt.Sprintf("p%d", i), 0); err != nil {
			t.Fatal(err)
		}
	}
	if cache, epoch := soldout.Tracked(g); cache > bound || epoch > bound {
		t.Errorf("after reopening %d products: %d cached answers and %d epochs, want at most %d each", products, cache, epoch, bound)
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
	rdb := testenv.Redis(t)
	prefix := "t:" + testenv.Namespace(t) + ":"
	testenv.DeleteKeys(t, rdb, prefix)
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, FlagTTL: 500 * time.Microsecond})
	if set, err := g.Mark(context.Background(), "p", 0); err != nil || !set {
		t.Fatalf("Mark with FlagTTL 500µs = %v, %v; want true, nil", set, err)
	}
}
