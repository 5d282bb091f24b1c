package sale_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/notify"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A long poll answers once its order is final: an announcement that
// carries a status that is not final (here processing) wakes it, but does
// not end it; it goes on waiting and answers the decision.
func TestWaitOrderIsNotEndedByANonFinalAnnouncement(t *testing.T) {
	t.Parallel()
	e := saletest.New(t, nil)
	e.CreateProduct(t, "p", 5, 0)
	placed := e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p", UserID: "u", Quantity: 1})
	ctx := context.Background()
	got := waitInBackground(ctx, e, placed.OrderID, 20*time.Second)
	waitForWaiter(t, e)
	if err := e.Publisher.Publish(ctx, notify.Outcome{OrderID: placed.OrderID, ProductID: "p", UserID: "u",
		Quantity: 1, Status: string(inventory.StatusProcessing)}); err != nil {
		t.Fatal(err)
	}
	e.Decide(t, placed.OrderID)
	select {
	case a := <-got:
		if a.err != nil || a.v.Status != inventory.StatusSucceeded {
			t.Fatalf("WaitOrder = %+v, %v; want succeeded (a processing announcement is not an answer)", a.v, a.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("WaitOrder did not answer within 15s of the decision")
	}
}
