package sale_test

import (
	"context"
	"errors"
	"testing"

	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A restock whose Reopen ran but whose reply was lost fails, and stores the
// generation Redis announced (abandonUnknownRestock): otherwise every
// worker's mark, at the generation PostgreSQL holds, is refused as older
// than the announcement, and the product's orders are queued rather than
// answered 409 until the next restock.
func TestRestockWithALostAnnouncementReplyStoresItsGeneration(t *testing.T) {
	t.Parallel()
	hook := &scriptHook{}
	e := saletest.New(t, &saletest.Options{Hook: hook})
	e.CreateProduct(t, "p1", 0, 0)
	ctx := context.Background()
	hook.arm(e.Prefix+"soldout:{p1}", loseReply) // the Reopen: it runs, its reply is lost
	if _, _, err := e.Service.Restock(ctx, "p1", 5, ""); !errors.Is(err, sale.ErrUnavailable) {
		t.Fatalf("restock whose announcement's reply was lost: %v, want ErrUnavailable", err)
	}
	if n := hook.takenSteps(); n != 1 {
		t.Fatalf("%d script runs took the lost reply, want 1", n)
	}
	announced, err := e.Gate.Announced(ctx, "p1")
	if err != nil || announced != 1 {
		t.Fatalf("announced generation = %d, %v; want 1 (the Reopen ran)", announced, err)
	}
	gen, err := e.Store.RestockGen(ctx, "p1")
	if err != nil || gen != announced {
		t.Fatalf("stored restock generation = %d, %v; want %d, the one announced", gen, err, announced)
	}
	// The product is still sold out, and a worker's mark flags it.
	if set, err := e.Gate.Mark(ctx, "p1", gen); err != nil || !set {
		t.Fatalf("mark at the stored generation: set %v, %v; want it set", set, err)
	}
}
