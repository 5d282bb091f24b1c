package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/worker"
)

// An order whose product's lock cannot be asked for (its lock node is
// down: no quorum) fails at once, for asynq to try again later, rather
// than waiting for its task's deadline; and once the node is back, the
// worker decides orders again. Before this test, taking no quorum for a
// busy lock (a waiter that never gets it), leaving such a round's orders
// pending unanswered, or answering them but keeping them pending (the
// next round's answer blocked the runner for good) passed every worker
// test. With the answer buffered, keeping them pending no longer blocks:
// the next round decides an order its handler was told had failed; the
// test checks that they leave the batcher.
func TestLockNodeDownFailsOrdersAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	bg := context.Background()
	if err := e.lockRDB.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	start := time.Now()
	err := e.w.ProcessTask(ctx, task(t, "o1", "p", "u1", 1, 1))
	if took := time.Since(start); !errors.Is(err, lock.ErrNoQuorum) || took > 5*time.Second {
		t.Errorf("order with its lock node down: %v after %v; want an error wrapping lock.ErrNoQuorum, at once", err, took)
	}
	if n := worker.PendingOrders(e.w, "p"); n != 0 {
		t.Errorf("%d orders of p wait for a round once answered failed, want 0: the next round would decide them too", n)
	}
	if err := e.lockRDB.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	err = e.w.ProcessTask(ctx, task(t, "o2", "p", "u2", 1, 2))
	o, errGet := e.store.Order(bg, "o2")
	if err != nil || errGet != nil || o.Status != inventory.StatusSucceeded {
		t.Errorf("order once the lock node is back: ProcessTask %v; order %s, %v; want succeeded", err, o.Status, errGet)
	}
}
