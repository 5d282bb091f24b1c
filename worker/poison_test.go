package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/soldout"
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

// The orders of a round that PostgreSQL refused because of one of them are
// decided again in parts, in order of acceptance: a part that holds the
// refused order is split, its earlier half decided first, and both before
// the parts after it. Here a (accepted first), the refused order and c to
// h wait for the last unit; a must get it. Before this test, deciding a
// failed part's halves after the parts still waiting passed every worker
// test: e to h were decided before a, and e took a's unit. So did deciding
// a failed part's later half first (with a, the refused order, c and d,
// the round's first half: c took a's unit).
func TestPoisonOrderKeepsTheOrderOfTheOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 2, 0)
	holdKey(t, e, "p", "u9", "k")
	bg := context.Background()
	// A first round, which takes one unit, waits on the product's row: the
	// others queue up behind it and share the next round.
	tx := e.holdRow(t, "p")
	var wg sync.WaitGroup
	process := func(id string, tk func() error) {
		wg.Go(func() {
			if err := tk(); err != nil && id != "bad" {
				t.Errorf("%s: %v", id, err)
			}
		})
	}
	process("first", func() error { return e.w.ProcessTask(bg, task(t, "first", "p", "u0", 1, 1)) })
	e.waitBlockedBy(t, tx)
	process("a", func() error { return e.w.ProcessTask(bg, task(t, "a", "p", "ua", 1, 2)) })
	process("bad", func() error { return e.w.ProcessTask(bg, heldKeyTask(t, 3)) })
	later := []string{"c", "d", "e", "f", "g", "h"}
	for i, id := range later {
		process(id, func() error { return e.w.ProcessTask(bg, task(t, id, "p", "u"+id, 1, 4+i)) })
	}
	e.waitPending(t, "p", 2+len(later))
	if err := tx.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	want := map[string]inventory.Status{"a": inventory.StatusSucceeded}
	for _, id := range later {
		want[id] = inventory.StatusSoldOut
	}
	for id, want := range want {
		if o, err := e.store.Order(bg, id); err != nil || o.Status != want {
			t.Errorf("order %s: %q, %v; want %q", id, o.Status, err, want)
		}
	}
	// The parts that commit count their outcomes and flag the product sold
	// out, as a round does.
	g := soldout.New(e.rdb, soldout.Options{KeyPrefix: e.prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond})
	testenv.Eventually(t, 5*time.Second, func() error {
		if sold, err := g.SoldOut(bg, "p"); err != nil || !sold {
			return fmt.Errorf("SoldOut with the last unit sold in a part = %v, %v; want true", sold, err)
		}
		for outcome, want := range map[string]float64{"succeeded": 2, "sold_out": float64(len(later))} {
			if got := counter(t, e.reg, "flashsale_worker_orders_total", map[string]string{"outcome": outcome}); got != want {
				return fmt.Errorf("%s orders counted: %v, want %v", outcome, got, want)
			}
		}
		return nil
	})
}

// When a part of a round that PostgreSQL refused because of one of its
// orders fails as a whole round would be requeued (here a transient
// database error: its connection is killed), that part goes back to the
// batcher with every part after it, and is decided in a later round. Here
// a, the refused order, c and d share a round; a commits in a part of its
// own, the refused order fails alone, and the part of c and d waits on an
// advisory lock (a trigger on c's purchase) until the test kills its
// connection. Before this test, dropping the failing part from those put
// back passed every worker test: c and d were never answered, their tasks
// left waiting until they timed out.
func TestIsolatedPartThatFailsTransientlyIsPutBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 10, 5) // a limit: each order writes a purchase
	holdKey(t, e, "p", "u9", "k")
	e.exec(t, `CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(4343);
  RETURN NEW;
END $$;
CREATE TRIGGER gate BEFORE INSERT ON purchases FOR EACH ROW WHEN (NEW.user_id = 'uc') EXECUTE FUNCTION gate();`)
	gate := e.advisoryGate(t, 4343)
	bg := context.Background()
	// A first round waits on the product's row: the others queue up behind
	// it and share the next round.
	tx := e.holdRow(t, "p")
	var wg sync.WaitGroup
	errs := map[string]error{}
	var mu sync.Mutex
	process := func(id string, tk *asynq.Task) {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(bg, 20*time.Second)
			defer cancel()
			err := e.w.ProcessTask(ctx, tk)
			mu.Lock()
			errs[id] = err
			mu.Unlock()
		})
	}
	process("first", task(t, "first", "p", "u0", 1, 1))
	e.waitBlockedBy(t, tx)
	process("a", task(t, "a", "p", "ua", 1, 2))
	process("bad", heldKeyTask(t, 3))
	process("c", task(t, "c", "p", "uc", 1, 4))
	process("d", task(t, "d", "p", "ud", 1, 5))
	e.waitPending(t, "p", 4)
	if err := tx.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	// The part of c and d waits on the gate: kill its connection.
	e.waitWaitsOn(t, gate, 10*time.Second, "the part of c and d does not wait on the advisory lock yet")
	admin, pid := e.roundWaitingOnRow(t)
	if _, err := admin.Exec(bg, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	if _, err := gate.Exec(bg, `SELECT pg_advisory_unlock(4343)`); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if errs["bad"] == nil {
		t.Error("the order whose key another order holds was decided")
	}
	for _, id := range []string{"first", "a", "c", "d"} {
		o, err := e.store.Order(bg, id)
		if errs[id] != nil || err != nil || o.Status != inventory.StatusSucceeded {
			t.Errorf("order %s: ProcessTask %v; order %+v, %v; want succeeded", id, errs[id], o, err)
		}
	}
}
