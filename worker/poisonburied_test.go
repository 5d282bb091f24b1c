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

// Dead orders that cannot be recorded failed must not keep the others from
// being recorded. The rescue scan records buried orders, and the sweep
// archived ones, a page at a time in one transaction: one order PostgreSQL
// refused failed the whole page at every scan, the cursor never moved on,
// and every scan failed before its archive sweep (the leader also gave the
// lock up every grace period); the good dead order here was never recorded.
// Such orders come from tasks the API did not make: a NUL byte, which text
// columns refuse (queue.Decode now refuses it), or an Idempotency-Key that
// another order id of the buyer holds (the API derives the id from the
// key), which the orders' unique index refuses (recorded one at a time).
func TestPoisonDeadOrderDoesNotBlockTheOthers(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tc := range []struct {
		name string
		bad  queue.Order
	}{
		{"NUL in the user id", queue.Order{ID: "bad", ProductID: "p", UserID: "u\x00", Quantity: 1, AcceptedAt: now}},
		{"NUL in the order id", queue.Order{ID: "bad\x00", ProductID: "p", UserID: "u0", Quantity: 1, AcceptedAt: now}},
		{"a key another order holds", queue.Order{ID: "bad", ProductID: "p", UserID: "u9", Quantity: 1, IdempotencyKey: "k", AcceptedAt: now}},
	} {
		for _, where := range []string{"buried", "archived"} {
			t.Run(where+": "+tc.name, func(t *testing.T) {
				t.Parallel()
				e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond}, 5*time.Second)
				inventorytest.CreateProduct(t, e.store, "p", 5, 0)
				ctx := context.Background()
				holdKey(t, e, "p", "u9", "k")
				good := queue.Order{ID: "zz-good", ProductID: "p", UserID: "u1", Quantity: 1, AcceptedAt: now}
				if where == "archived" {
					e.archive(t, tc.bad, good)
				} else {
					in := queue.NewInspector(e.rdb, e.queue)
					for _, o := range []queue.Order{tc.bad, good} {
						if err := in.Bury(ctx, o); err != nil {
							t.Fatal(err)
						}
					}
				}
				e.start(t)
				testenv.Eventually(t, 10*time.Second, func() error {
					o, err := e.store.Order(ctx, good.ID)
					if err != nil {
						return fmt.Errorf("%s order %s: %w", where, good.ID, err)
					}
					if o.Status != inventory.StatusFailed {
						return fmt.Errorf("%s order %s is %s", where, good.ID, o.Status)
					}
					return nil
				})
				if where == "buried" {
					// The refused order is settled too, as it can have no
					// outcome: unburied, not recorded again one order at
					// a time at every scan (mutation audit: recordDead
					// settling only the orders recorded passed every test).
					in := queue.NewInspector(e.rdb, e.queue)
					testenv.Eventually(t, 10*time.Second, func() error {
						if buried, err := in.AnyBuried(ctx); err != nil || buried {
							return fmt.Errorf("orders still buried: %v, %v; want none", buried, err)
						}
						return nil
					})
				}
			})
		}
	}
}

// heldKeyTask is the task of order "bad" of product p by u9 with
// Idempotency-Key k, accepted at 1_800_000_000 plus seq milliseconds:
// refused by the orders' unique index once holdKey(t, e, "p", "u9", "k")
// has recorded another order id with that key.
func heldKeyTask(t *testing.T, seq int) *asynq.Task {
	t.Helper()
	bad, err := queue.Encode(queue.Order{ID: "bad", ProductID: "p", UserID: "u9", Quantity: 1, IdempotencyKey: "k",
		AcceptedAt: time.Unix(1_800_000_000, 0).Add(time.Duration(seq) * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

// holdKey records an order of user's with Idempotency-Key key (failed, as
// the rescue scan would): another order id with the same user and key is
// then refused by the orders' unique index.
func holdKey(t *testing.T, e *env, product, user, key string) {
	t.Helper()
	_, err := e.store.RecordFailed(context.Background(), []inventory.OrderRequest{{
		ID: "key-owner", ProductID: product, UserID: user, Quantity: 1, IdempotencyKey: key, AcceptedAt: time.Now(),
	}}, "test")
	if err != nil {
		t.Fatal(err)
	}
}

// A stranded task whose order id PostgreSQL refuses (a NUL byte: a task the
// API did not make) must not stop the rescue of the others: the scan looks
// up all stranded orders in one query, and its error, neither unavailable
// nor a deadline, failed every scan before any rescue, until asynq's own
// recovery moved the task on (minutes later); o1 here was never rescued.
func TestPoisonStrandedTaskDoesNotStopRescues(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond, UnheldGrace: 100 * time.Millisecond}, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	ctx := context.Background()
	prod := e.producer(t)
	for _, o := range []queue.Order{
		{ID: "bad\x00", ProductID: "p", UserID: "u0", Quantity: 1, AcceptedAt: time.Now()},
		{ID: "o1", ProductID: "p", UserID: "u1", Quantity: 1, AcceptedAt: time.Now()},
	} {
		if err := prod.Enqueue(ctx, o); err != nil {
			t.Fatal(err)
		}
		// Its worker took it and was killed; the lease has lapsed.
		queuetest.Strand(t, e.rdb, e.queue.Queue, time.Now().Add(-time.Second))
	}
	e.start(t)
	// Rescued, and decided by its rescue task (waitRescued could miss a
	// rescue task that has come and gone).
	e.waitSucceeded(t, "o1")
}
