package sale_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A long poll whose last read of a keyed order was a re-check (not decided
// in PostgreSQL, its task held: a status, no body) and whose end falls in
// an outage answers that status with the order's fields from its task. The
// order may have been decided since (its announcement lost) and re-sent
// with another body during the outage: the task there is then that
// re-send's, accepted unchecked, whose body is not the order's. The wait
// must not answer it (here quantity 3 for an order of 1): 503, or the
// order as it is.
func TestWaitOrderDoesNotAnswerTheBodyOfAnUncheckedReSend(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg)})
	e.CreateProduct(t, "p1", 5, 0)
	ctx := context.Background()
	req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
	placed := e.PlaceOrder(t, req)
	since := ordersReadMark(t, pg)
	got := waitInBackground(ctx, e, placed.OrderID, 20*time.Second)
	// The wait's first read is of the task's state; its re-check reads
	// PostgreSQL (not decided), then the task's state (held).
	waitForOrdersRead(t, pg, since)
	e.Commit(t, placed.OrderID) // decided, its announcement lost
	if err := e.Asynq.DeleteTask(e.Queue, placed.OrderID); err != nil {
		t.Fatal(err)
	}
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	resend := req
	resend.Quantity = 3
	if _, err := e.Service.PlaceOrder(ctx, resend); err != nil {
		t.Fatalf("re-send during the outage: %v; want it accepted (unchecked)", err)
	}
	e.Service.Drain() // the wait ends now, in the outage
	var a waitAnswer
	select {
	case a = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("WaitOrder did not return within 30s")
	}
	switch {
	case errors.Is(a.err, sale.ErrUnavailable):
	case a.err != nil:
		t.Fatalf("WaitOrder = %v; want the order or ErrUnavailable", a.err)
	case a.v.Quantity != 1 || (a.v.Status.Final() && a.v.Status != inventory.StatusSucceeded):
		t.Errorf("WaitOrder = %s, quantity %d; want the order (quantity 1), or ErrUnavailable: the unchecked re-send's body is not the order's", a.v.Status, a.v.Quantity)
	}
}
