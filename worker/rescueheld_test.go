package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/worker"
)

// A task that a live server lists as running is not rescued, however long
// its order takes: only a task held by no live server for a grace period,
// or whose lease lapsed, is. Rescuing a held one queued a second task for
// an order still in flight, and so for every order a round kept waiting
// (mutation audit: the rescue condition without its !t.Held, which rescued
// every held task at once, passed every test).
func TestHeldTaskIsNotRescued(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond, UnheldGrace: time.Minute}, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	ctx := context.Background()
	row := e.holdRow(t, "p")
	if err := e.producer(t).Enqueue(ctx, queue.Order{ID: "o1", ProductID: "p", UserID: "u1", Quantity: 1, AcceptedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	scans := e.countScans()
	e.start(t)
	e.waitBlockedBy(t, row)
	in := queue.NewInspector(e.rdb, e.queue)
	// Listed by its server at the server's next heartbeat (5s).
	testenv.Eventually(t, 3*queue.HeartbeatInterval, func() error {
		tasks, err := in.Active(ctx, 10)
		if err != nil {
			return err
		}
		if len(tasks) != 1 || !tasks[0].Held {
			return fmt.Errorf("active tasks %+v, want o1 held", tasks)
		}
		return nil
	})
	scans.waitScans(t, 3, 10*time.Second)
	if st, err := in.States(ctx, []string{"o1" + queue.RescueSuffix}); err != nil || st[0] != 0 {
		t.Errorf("rescue task of the held task: state %v, %v; want none", st, err)
	}
	if got := counter(t, e.reg, "flashsale_worker_rescued_orders_total", nil); got != 0 {
		t.Errorf("rescued: got %v, want 0 (the task was held)", got)
	}
	if err := row.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitSucceeded(t, "o1")
}
