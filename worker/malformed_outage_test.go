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

// A malformed order that names an id and a known product is recorded
// failed (TestMalformedOrderIsCountedOnce). When that record fails
// (PostgreSQL out), README's promise for a permanent error holds as for any
// order: the order is not left to asynq's archive with no outcome. Here the
// database refuses connections for the task's first try only; the order
// must end recorded failed once it answers, and be counted once, as
// failed. Before, the first try returned SkipRetry, asynq archived the task
// with nothing buried, and no scan or sweep could read it back (their
// Decode drops it): the order never got an outcome, counted a bad payload.
func TestMalformedOrderOutlivesADatabaseOutage(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{}, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	ctx := context.Background()
	up := testenv.RefuseConnections(t, e.dbURL)
	e.waitConnectFails(t)
	e.start(t)
	e.enqueue(t, asynq.NewTask(queue.TypeOrder, []byte(`{"id":"x","product_id":"p","user_id":"u"}`)), "x", 5, 10*time.Second)
	ai := asynq.NewInspectorFromRedisClient(e.rdb)
	testenv.Eventually(t, 10*time.Second, func() error {
		info, err := ai.GetTaskInfo(e.queue.Queue, "x")
		if err != nil {
			return err
		}
		if info.Retried == 0 && info.State != asynq.TaskStateArchived {
			return fmt.Errorf("task x is %v, not yet tried", info.State)
		}
		return nil
	})
	up()
	testenv.Eventually(t, 20*time.Second, func() error {
		o, err := e.store.Order(ctx, "x")
		if errors.Is(err, inventory.ErrNotFound) {
			info, ierr := ai.GetTaskInfo(e.queue.Queue, "x")
			if ierr == nil {
				return fmt.Errorf("order x has no outcome; its task is %v (last error %q)", info.State, info.LastErr)
			}
			return fmt.Errorf("order x has no outcome; its task: %v", ierr)
		}
		if err != nil {
			return err
		}
		if o.Status != inventory.StatusFailed {
			return fmt.Errorf("order x is %s, want failed", o.Status)
		}
		return nil
	})
	for outcome, want := range map[string]float64{"failed": 1, "bad_payload": 0} {
		if got := counter(t, e.reg, "flashsale_worker_orders_total", map[string]string{"outcome": outcome}); got != want {
			t.Errorf("%s counted: %v, want %v", outcome, got, want)
		}
	}
}

// A malformed order whose quantity the orders table's integer column cannot
// hold (queue.Decode refuses it, but returns its id and product) is
// recorded failed at its first try, as one without a quantity is
// (TestMalformedOrderIsCountedOnce). Before, RecordFailed sent the quantity
// as it was: pgx refused to encode it, which RecordFailed reported as
// inventory.ErrUnavailable, so the worker took PostgreSQL for down and
// tried the task again at each of its tries, each failing alike, and on the
// last one asynq archived it with no outcome (here, a last try: no
// outcome at all).
func TestMalformedOrderWithAHugeQuantityIsRecordedFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	err := e.w.ProcessTask(context.Background(), asynq.NewTask(queue.TypeOrder,
		[]byte(`{"id":"x","product_id":"p","user_id":"u","quantity":1099511627776}`)))
	if !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("ProcessTask: %v, want SkipRetry", err)
	}
	o, err := e.store.Order(context.Background(), "x")
	if err != nil || o.Status != inventory.StatusFailed {
		t.Fatalf("order x: %+v, %v; want failed", o, err)
	}
	for outcome, want := range map[string]float64{"failed": 1, "bad_payload": 0} {
		if got := counter(t, e.reg, "flashsale_worker_orders_total", map[string]string{"outcome": outcome}); got != want {
			t.Errorf("%s counted: %v, want %v", outcome, got, want)
		}
	}
}
