package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/soldout"
	"github.com/flashsale/flashsale/worker"
)

// The worker flags a product sold out only once its stock is 0: a flag
// while stock remains makes the API's fast path refuse orders that would
// succeed. One unit left: no flag; the last one sold: the flag.
func TestSoldOutFlagOnlyAtZeroStock(t *testing.T) {
	t.Parallel()
	for _, mode := range []worker.Mode{worker.ModeBatch, worker.ModeSingle} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, mode, 5*time.Second)
			e.start(t)
			inventorytest.CreateProduct(t, e.store, "p", 2, 0)
			inventorytest.CreateProduct(t, e.store, "q", 10, 0)
			ctx := context.Background()
			g := soldout.New(e.rdb, soldout.Options{KeyPrefix: e.prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond})
			if err := e.w.ProcessTask(ctx, task(t, "o1", "p", "u1", 1, 1)); err != nil {
				t.Fatal(err)
			}
			// The batcher flags after answering, before its next round:
			// once an order of another product is answered, o1's flagging
			// is done.
			if err := e.w.ProcessTask(ctx, task(t, "q1", "q", "u1", 1, 2)); err != nil {
				t.Fatal(err)
			}
			if sold, err := g.SoldOut(ctx, "p"); err != nil || sold {
				t.Fatalf("SoldOut with 1 unit left = %v, %v; want false, nil", sold, err)
			}
			if err := e.w.ProcessTask(ctx, task(t, "o2", "p", "u2", 1, 3)); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 5*time.Second, func() error {
				if sold, err := g.SoldOut(ctx, "p"); err != nil || !sold {
					return fmt.Errorf("SoldOut with 0 left = %v, %v; want true, nil", sold, err)
				}
				return nil
			})
			// A restock (as sale's: announced, then stored at its
			// generation) reopens p, and its unit sold at once, well within
			// the worker's re-flagging interval, flags p again: the
			// generation is new, so the earlier flag does not stand for it.
			gen, err := g.Reopen(ctx, "p", 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.store.Restock(ctx, inventory.RestockRequest{ProductID: "p", Quantity: 1, Gen: gen, Max: 100}); err != nil {
				t.Fatal(err)
			}
			if sold, err := g.SoldOut(ctx, "p"); err != nil || sold {
				t.Fatalf("SoldOut after the restock = %v, %v; want false, nil", sold, err)
			}
			if err := e.w.ProcessTask(ctx, task(t, "o3", "p", "u3", 1, 4)); err != nil {
				t.Fatal(err)
			}
			if o, err := e.store.Order(ctx, "o3"); err != nil || o.Status != inventory.StatusSucceeded {
				t.Fatalf("order of the restocked unit: %+v, %v; want succeeded", o, err)
			}
			testenv.Eventually(t, 5*time.Second, func() error {
				if sold, err := g.SoldOut(ctx, "p"); err != nil || !sold {
					return fmt.Errorf("SoldOut with the restock sold = %v, %v; want true, nil", sold, err)
				}
				return nil
			})
		})
	}
}

// A sold-out flag that Redis refused is tried again soon, by a later round
// that reads the product sold out, not only once the worker's re-flagging
// interval (5s) has passed: until a flag is set, the API's fast path is off
// and every order of the product goes through the queue. Here Redis refuses
// the first mark (the restock generation's key holds a hash: WRONGTYPE);
// once the key is fixed, orders decided sold out flag the product well
// within the 5s the worker waited before.
func TestRefusedSoldOutFlagIsTriedAgainSoon(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 1, 0)
	ctx := context.Background()
	g := soldout.New(e.rdb, soldout.Options{KeyPrefix: e.prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond})
	genKey := e.prefix + "restock:{p}"
	if err := e.rdb.HSet(ctx, genKey, "not", "a generation").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.w.ProcessTask(ctx, task(t, "o1", "p", "u1", 1, 1)); err != nil {
		t.Fatal(err)
	}
	sold := time.Now()
	// Another product's order answered: o1's round has tried its flag.
	inventorytest.CreateProduct(t, e.store, "q", 10, 0)
	if err := e.w.ProcessTask(ctx, task(t, "q1", "q", "u1", 1, 2)); err != nil {
		t.Fatal(err)
	}
	if s, err := g.SoldOut(ctx, "p"); err != nil || s {
		t.Fatalf("SoldOut with the mark refused = %v, %v; want false, nil", s, err)
	}
	if err := e.rdb.Del(ctx, genKey).Err(); err != nil {
		t.Fatal(err)
	}
	n := 0
	testenv.Eventually(t, 4*time.Second, func() error {
		n++
		if err := e.w.ProcessTask(ctx, task(t, fmt.Sprintf("o%d", n+1), "p", fmt.Sprintf("u%d", n+1), 1, 2+n)); err != nil {
			return err
		}
		if s, err := g.SoldOut(ctx, "p"); err != nil || !s {
			return fmt.Errorf("SoldOut %v after the sell-out, %d orders decided sold out since = %v, %v; want true, nil",
				time.Since(sold).Round(time.Millisecond), n, s, err)
		}
		return nil
	})
}
