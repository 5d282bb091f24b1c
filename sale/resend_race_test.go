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

// A keyed order re-sent while its first send is being decided: the re-send
// reads PostgreSQL (not decided yet), a worker commits the order and
// removes its task, then the re-send's enqueue goes through, since no task
// has the id any more. That new task duplicates a decided order: a worker
// reaching it changes nothing, but until one does, a read during a
// PostgreSQL outage found a task that never ran and answered queued, a
// final status undone. The re-send must answer for the decided order (a
// replay, or 422 for another body) and leave no task behind; or, when
// PostgreSQL went down before it could look again, leave its task marked
// as accepted during an outage (unchecked), which reads unavailable.
func TestResendRacingItsOrdersDecisionLeavesNoTask(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	hook := &scriptHook{}
	e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg), Hook: hook})
	e.CreateProduct(t, "p1", 5, 0)
	ctx := context.Background()
	tests := []struct {
		key      string
		quantity int  // re-sent; the first send's is 1
		kill     bool // PostgreSQL killed after the decision, before the enqueue (the last case)
		wantErr  error
	}{
		{"same-body", 1, false, nil},
		{"other-body", 3, false, sale.ErrIdempotencyMismatch},
		{"then-outage", 1, true, nil},
	}
	for _, tt := range tests {
		req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: tt.key}
		first := e.PlaceOrder(t, req)
		resend := req
		resend.Quantity = tt.quantity
		finish := placeHeld(t, e, hook, resend, holdRun)
		e.Decide(t, first.OrderID) // committed, its task removed
		if tt.kill {
			if err := pg.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		placed, err := finish()
		if tt.kill {
			// Nothing can tell it from a first send: queued, as one
			// accepted during an outage, its task unchecked.
			if err != nil || placed.Status != inventory.StatusQueued {
				t.Errorf("%s: re-send = %+v, %v; want queued", tt.key, placed, err)
			}
			if ti, err := e.Inspector.Lookup(ctx, first.OrderID); err != nil || !ti.Order.Unchecked {
				t.Errorf("%s: the queue holds %+v, %v; want a task accepted unchecked", tt.key, ti, err)
			}
			continue
		}
		switch {
		case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
			t.Errorf("%s: re-send = %+v, %v; want %v", tt.key, placed, err, tt.wantErr)
		case tt.wantErr == nil && (err != nil || !placed.Replay || placed.Status != inventory.StatusSucceeded):
			t.Errorf("%s: re-send = %+v, %v; want a replay, succeeded", tt.key, placed, err)
		}
		if ti, err := e.Inspector.Lookup(ctx, first.OrderID); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("%s: the queue holds %+v, %v for the decided order; want no task", tt.key, ti, err)
		}
	}
	for _, tt := range tests {
		id := sale.KeyedOrderID("alice", tt.key)
		if v, err := e.Service.Order(ctx, id); !errors.Is(err, sale.ErrUnavailable) {
			t.Errorf("%s: read during an outage: %s, quantity %d, %v; want ErrUnavailable (it read succeeded before)", tt.key, v.Status, v.Quantity, err)
		}
	}
}

// A keyed order's first send that a worker decides between its enqueue
// and its second look is this call's own order, not a duplicate: it
// answers the decided status as a new order (no replay), and nothing is
// withdrawn.
func TestFirstSendDecidedBeforeItsSecondLookIsNoReplay(t *testing.T) {
	t.Parallel()
	hook := &scriptHook{}
	e := saletest.New(t, &saletest.Options{Hook: hook})
	e.CreateProduct(t, "p1", 5, 0)
	req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
	finish := placeHeld(t, e, hook, req, holdReply) // enqueued, its answer held
	e.Decide(t, sale.KeyedOrderID(req.UserID, req.IdempotencyKey))
	placed, err := finish()
	if err != nil || placed.Replay || placed.Status != inventory.StatusSucceeded {
		t.Errorf("first send decided before its second look = %+v, %v; want succeeded, no replay", placed, err)
	}
}
