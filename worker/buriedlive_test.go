package worker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/worker"
)

// A buried order is not recorded failed while a task of it waits to run
// (here scheduled for a retry an hour away, as asynq keeps a retried task),
// whichever task of its chain that is: its own, or any rescue of it down
// to the deepest (queue.MaxRescueDepth). That task decides the order when
// it runs; recorded failed first, the order would lose it (a buyer told
// "failed" whose order could still succeed). A buried order with no task
// left is recorded failed by the same scans.
func TestBuriedOrderWaitsForAWaitingTaskOfItsChain(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond}, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	ctx := context.Background()
	in := queue.NewInspector(e.rdb, e.queue)
	client := asynq.NewClientFromRedisClient(e.rdb)
	e.producer(t) // deletes the queue at cleanup
	order := func(id string) queue.Order {
		return queue.Order{ID: id, ProductID: "p", UserID: "u-" + id, Quantity: 1, AcceptedAt: time.Now().UTC()}
	}
	var waiting []string
	for depth := range queue.MaxRescueDepth + 1 {
		o := order(fmt.Sprintf("o%d", depth))
		if err := in.Bury(ctx, o); err != nil {
			t.Fatal(err)
		}
		tk, err := queue.Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		taskID := queue.TaskIDs(o.ID)[depth]
		if _, err := client.Enqueue(tk, asynq.TaskID(taskID), asynq.Queue(e.queue.Queue), asynq.ProcessIn(time.Hour)); err != nil {
			t.Fatal(err)
		}
		waiting = append(waiting, o.ID)
	}
	if err := in.Bury(ctx, order("none")); err != nil { // no task left
		t.Fatal(err)
	}
	scans := e.countScans()
	e.start(t)
	testenv.Eventually(t, 10*time.Second, func() error {
		got, err := e.store.Order(ctx, "none")
		if err == nil && got.Status != inventory.StatusFailed {
			err = fmt.Errorf("buried order with no task is %s", got.Status)
		}
		return err
	})
	scans.waitScans(t, 3, 10*time.Second)
	for depth, id := range waiting {
		if got, err := e.store.Order(ctx, id); !errors.Is(err, inventory.ErrNotFound) {
			t.Errorf("buried order whose task at depth %d waits: %s (%q), %v; want it undecided, left to that task", depth, got.Status, got.Reason, err)
		}
	}
	buried, _, err := in.Buried(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(buried) != len(waiting) {
		t.Errorf("%d orders buried, want the %d whose task waits", len(buried), len(waiting))
	}
}
