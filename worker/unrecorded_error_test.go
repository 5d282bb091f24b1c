package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/worker"
)

// An order alone in a round that fails with an error neither transient nor
// a lost lock nor a stale fence (PostgreSQL refuses it: its Idempotency-Key
// is held by another order id of the buyer) committed nothing: its task
// must not be acknowledged as done (ProcessTask returning nil), or the
// order vanishes with no outcome and no retry.
func TestRoundErrorIsNotAcknowledged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 10, 0)
	holdKey(t, e, "p", "u9", "k")
	if err := e.w.ProcessTask(context.Background(), heldKeyTask(t, 0)); err == nil {
		t.Error("ProcessTask = nil for an order whose round committed nothing")
	}
}
