package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/worker"
)

// An order that PostgreSQL refuses to store must fail alone. Here an
// Idempotency-Key that another order id of the buyer holds (a task the API,
// which derives the id from the key, did not make), which the orders'
// unique index refuses (23505); a NUL byte, which a text column refuses,
// no longer gets this far (queue.Decode refuses it). Before, the round's
// whole transaction failed with its error, non-retryable and not a lost
// lock or a stale fence, so every order that shared the round got it: each
// used up a try, and one on its last try (every direct ProcessTask here)
// was recorded failed, although it was good and stock was left.
func TestPoisonOrderFailsAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 10, 0)
	holdKey(t, e, "p", "u9", "k")
	bg := context.Background()
	// A first round waits on the product's row: the good and the poisoned
	// order queue up behind it and share the next round.
	tx := e.holdRow(t, "p")
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.w.ProcessTask(bg, task(t, "first", "p", "u0", 1, 1)); err != nil {
			t.Errorf("first: %v", err)
		}
	})
	e.waitBlockedBy(t, tx)
	var goodErr error
	wg.Go(func() { goodErr = e.w.ProcessTask(bg, task(t, "good", "p", "u1", 1, 2)) })
	bad := heldKeyTask(t, 3)
	wg.Go(func() {
		if err := e.w.ProcessTask(bg, bad); err == nil {
			t.Error("the order whose key another order holds was decided")
		}
	})
	e.waitPending(t, "p", 2)
	if err := tx.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	o, err := e.store.Order(bg, "good")
	if goodErr != nil || err != nil || o.Status != inventory.StatusSucceeded {
		t.Errorf("good order: ProcessTask %v; order %+v, %v; want succeeded", goodErr, o, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		p, err := e.store.Product(bg, "p")
		if err != nil {
			return err
		}
		if p.Sold != 2 {
			return fmt.Errorf("sold %d, want 2 (first and good)", p.Sold)
		}
		return nil
	})
}
