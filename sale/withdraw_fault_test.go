package sale_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A keyed order whose second look at PostgreSQL (after its enqueue) finds
// it gone withdraws its task to queue it again unchecked. When the
// withdrawal's call fails, Redis may have run it all the same (its reply
// lost: a read timeout, a dropped connection) and deleted the task. An
// order answered queued must be in the queue: the answer is queued only
// with a task there, or else 503 (not a final answer).
func TestOrderWhoseWithdrawalFailsIsQueuedOrUnavailable(t *testing.T) {
	t.Parallel()
	for _, ran := range []bool{true, false} { // whether Redis ran the failed withdrawal
		t.Run(fmt.Sprintf("ran=%v", ran), func(t *testing.T) {
			t.Parallel()
			pg := testenv.PrivatePostgres(t)
			hook := &scriptHook{}
			e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg), Hook: hook})
			e.CreateProduct(t, "p1", 5, 0)
			ctx := context.Background()
			req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
			id := sale.KeyedOrderID(req.UserID, req.IdempotencyKey)
			fault := failUnrun
			if ran {
				fault = loseReply
			}
			finish := placeHeld(t, e, hook, req, holdRun, fault)
			// PostgreSQL goes down after the first look.
			if err := pg.Kill(); err != nil {
				t.Fatal(err)
			}
			placed, err := finish()
			if hook.takenSteps() < 2 {
				t.Fatal("no withdrawal was made to fail")
			}
			switch {
			case errors.Is(err, sale.ErrUnavailable):
			case err != nil || placed.Status != inventory.StatusQueued:
				t.Errorf("%+v, %v; want queued or ErrUnavailable", placed, err)
			default:
				if ti, err := e.Inspector.Lookup(ctx, id); err != nil {
					t.Errorf("answered queued, but the queue holds %+v, %v: the order is lost", ti, err)
				}
			}
		})
	}
}
