package sale_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A task that ran once, committed its order's round and then failed (its
// acknowledgement or announcement lost), waits for its retry: the queue
// reads it as waiting, but retried. It has run, so its order may be decided:
// with PostgreSQL down, neither GET /v1/orders/{id} nor a keyed re-send may
// answer from it (queued: a final status undone); only a waiting task never
// retried tells that its order is undecided (neverRan). Nor may a long
// poll, which the queue's waiting task lets skip reading the order.
func TestRetriedTaskDuringAnOutageDoesNotUndoAFinalStatus(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg)})
	e.CreateProduct(t, "p1", 5, 0)
	ctx := context.Background()
	req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
	placed := e.PlaceOrder(t, req)

	// A worker runs the task once: its round commits, then the run fails,
	// and asynq schedules the retry an hour later.
	var runs atomic.Int32
	srv := asynq.NewServerFromRedisClient(e.Redis, asynq.Config{
		Concurrency:    1,
		Queues:         map[string]int{e.Queue: 1},
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
		LogLevel:       asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if runs.Add(1) > 1 {
			return errors.New("ran again")
		}
		o, err := queue.Decode(task.Payload())
		if err != nil {
			return err
		}
		_, err = e.Store.Apply(ctx, inventory.Batch{
			Orders: []inventory.OrderRequest{{ID: o.ID, ProductID: o.ProductID, UserID: o.UserID,
				Quantity: o.Quantity, IdempotencyKey: o.IdempotencyKey, AcceptedAt: o.AcceptedAt}},
			Tokens: map[string]int64{o.ProductID: 1},
		})
		if err != nil {
			return err
		}
		return errors.New("acknowledgement lost")
	})); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		ti, err := e.Inspector.Lookup(ctx, placed.OrderID)
		if err != nil {
			return err
		}
		if ti.State != queue.Waiting || ti.Retried != 1 {
			return errors.New("task not waiting for its retry yet")
		}
		return nil
	})
	srv.Shutdown()

	if v, err := e.Service.Order(ctx, placed.OrderID); err != nil || v.Status != inventory.StatusSucceeded {
		t.Fatalf("before the outage: %+v, %v; want succeeded", v, err)
	}
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	if v, err := e.Service.Order(ctx, placed.OrderID); !errors.Is(err, sale.ErrUnavailable) {
		t.Errorf("read during the outage, its task retried: %+v, %v; want ErrUnavailable (it read succeeded)", v, err)
	}
	// Nor may a long poll: the queue holds the task waiting, which tells a
	// wait nothing of its order (this one was decided).
	if v, err := e.Service.WaitOrder(ctx, placed.OrderID, 1500*time.Millisecond); err == nil && !v.Status.Final() {
		t.Errorf("wait during the outage, its task retried: %+v; it read succeeded before: want ErrUnavailable, not %s", v, v.Status)
	}
	if got, err := e.Service.PlaceOrder(ctx, req); err == nil && !got.Status.Final() {
		t.Errorf("re-send during the outage, its task retried: %+v; it read succeeded before: want ErrUnavailable, not %s", got, got.Status)
	}
}
