package sale_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale/sale/saletest"
	"github.com/flashsale/flashsale/soldout"
)

// A restock adds its stock no sooner than Settle after its Reopen: an API
// process that read the flag just before the Reopen, and missed its
// announcement (no subscription here, or one that was down), trusts that
// "sold out" for CacheTTL, and must have dropped it by the time the stock
// is there, or it answers 409 with stock.
func TestRestockWaitsOutOtherProcessesCaches(t *testing.T) {
	t.Parallel()
	const cacheTTL = 2 * time.Second // Settle 4.1s
	e := saletest.New(t, &saletest.Options{CacheTTL: cacheTTL})
	e.CreateProduct(t, "p1", 0, 0)
	e.MarkSoldOut(t, "p1")
	ctx := context.Background()
	other := soldout.New(e.Redis, soldout.Options{KeyPrefix: e.Prefix, CacheTTL: cacheTTL, OpenTTL: cacheTTL})
	if sold, err := other.SoldOut(ctx, "p1"); err != nil || !sold {
		t.Fatalf("the other process's read before the restock: %v, %v; want sold out (now cached)", sold, err)
	}
	p, _, err := e.Service.Restock(ctx, "p1", 5, "")
	if err != nil || p.Stock != 5 {
		t.Fatalf("restock: %+v, %v; want stock 5", p, err)
	}
	if sold, err := other.SoldOut(ctx, "p1"); err != nil || sold {
		t.Fatalf("the other process, once the restock committed stock %d: sold out %v, %v; want open", p.Stock, sold, err)
	}
}
