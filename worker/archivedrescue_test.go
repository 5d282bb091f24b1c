package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/queue/queuetest"
	"github.com/flashsale/flashsale/worker"
)

// An order whose last try a crash cut short (archived by asynq's
// recoverer) and whose rescue task is archived too (dead: it ran out of
// tries) cannot be rescued again (queue.ErrDuplicate): the archive sweep
// records it failed. Were that refusal taken for a failure of the sweep,
// the sweep would stop at its page at every sweep: this order, and those
// of every page after it, would never be recorded.
func TestArchivedOrderWhoseRescueIsDeadTooIsRecordedFailed(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond}, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	ctx := context.Background()
	o := queue.Order{ID: "o1", ProductID: "p", UserID: "u1", Quantity: 1, AcceptedAt: time.Now().UTC()}
	tk, err := queue.Encode(o)
	if err != nil {
		t.Fatal(err)
	}
	e.enqueue(t, tk, o.ID, 0, 30*time.Second)
	queuetest.Strand(t, e.rdb, e.queue.Queue, time.Now().Add(-time.Minute)) // its worker died a minute ago
	rescueID := o.ID + queue.RescueSuffix
	e.enqueue(t, tk, rescueID, 0, 30*time.Second)
	ai := asynq.NewInspectorFromRedisClient(e.rdb)
	if err := ai.ArchiveTask(e.queue.Queue, rescueID); err != nil {
		t.Fatal(err)
	}
	// A bare asynq server's recoverer archives the stranded task.
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{e.queue.Queue: 1}, LogLevel: asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	in := queue.NewInspector(e.rdb, e.queue)
	testenv.Eventually(t, 10*time.Second, func() error {
		st, err := in.States(ctx, []string{o.ID})
		if err == nil && st[0] != queue.Dead {
			err = fmt.Errorf("task state %v, want archived by the recoverer", st[0])
		}
		return err
	})
	srv.Shutdown()
	e.start(t)
	testenv.Eventually(t, 20*time.Second, func() error {
		got, err := e.store.Order(ctx, o.ID)
		if err == nil && (got.Status != inventory.StatusFailed || got.Reason != "gave up after retries: the order could not be decided") {
			t.Fatalf("o1 is %s (%q), want failed: no task of it can run", got.Status, got.Reason)
		}
		return err
	})
}
