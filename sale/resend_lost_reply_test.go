package sale_test

import (
	"context"
	"errors"
	"testing"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A keyed re-send racing its order's decision (see
// TestResendRacingItsOrdersDecisionLeavesNoTask) whose enqueue goes through
// but whose reply is lost: PlaceOrder tries again, the task it made refuses
// the second try, and the re-send is answered from that task. It is the
// re-send's own, a duplicate of the decided order all the same: it must be
// checked as one just queued (withdrawn, the re-send answered with the
// decided order), not left to read queued during a PostgreSQL outage.
func TestResendRacingItsOrdersDecisionWithALostEnqueueReplyLeavesNoTask(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	hook := &scriptHook{}
	e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg), Hook: hook})
	e.CreateProduct(t, "p1", 5, 0)
	ctx := context.Background()
	req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
	first := e.PlaceOrder(t, req)
	finish := placeHeld(t, e, hook, req, holdRun|loseReply)
	e.Decide(t, first.OrderID) // committed, its task removed
	placed, err := finish()
	if err != nil || !placed.Replay || placed.Status != inventory.StatusSucceeded {
		t.Errorf("re-send = %+v, %v; want a replay, succeeded", placed, err)
	}
	if ti, err := e.Inspector.Lookup(ctx, first.OrderID); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("the queue holds %+v, %v for the decided order; want no task", ti, err)
	}
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	if v, err := e.Service.Order(ctx, first.OrderID); !errors.Is(err, sale.ErrUnavailable) {
		t.Errorf("read during an outage: %s, %v; want ErrUnavailable (it read succeeded before)", v.Status, err)
	}
}
