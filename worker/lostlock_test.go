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
	"github.com/flashsale/flashsale/lock/locktest"
	"github.com/flashsale/flashsale/worker"
)

// lostLockTTL is the lock TTL of the tests that take a lock away (delete
// its key): a round notices at the lock's next renewal, TTL/3 later. Not
// shorter: the locks' node timeout is TTL/4 (locktest.Client), and each
// Redis call of a loaded test run must fit in it. With 600ms (150ms), a
// lock call that took longer got no quorum, and the order, on its last
// try in these tests, failed at once (about 1 run in 6 under -race on a
// loaded machine).
const lostLockTTL = 2 * time.Second

// A round that spans two products and loses the lock of one of them must
// count the lost lock against that product's orders only, as requeue does
// for a stale fence ("one stale product must not use up the tries of every
// order it shared a round with"). Before, the lost lock was taken for a
// transient database error (lockErr joins lock.ErrLost with the store's
// ErrUnavailable for the cancelled transaction), so every order of the round
// counted a database try (and its product a dbRetryDelay backoff): after
// maxDBRetries rounds lost on "lost", the order of "good", whose lock was
// never lost, went back to asynq as failed, and on its last try was
// recorded failed with stock left. (Counted as a lost lock, every order of
// the round would still count a requeue, and "good" give up after
// maxRequeues.)
func TestGoodOrdersOutlastALostLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, lostLockTTL)
	e.start(t)
	for _, p := range []string{"slow", "good", "lost"} {
		inventorytest.CreateProduct(t, e.store, p, 10, 0)
	}
	bg := context.Background()
	// A first round, on "slow", waits on its row: the orders for "good" and
	// "lost" queue up behind it and share the rounds after it, which wait
	// on the row of "lost" (held too) with both locks held.
	slow := e.holdRow(t, "slow")
	lostRow := e.holdRow(t, "lost")
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.w.ProcessTask(bg, task(t, "slow-1", "slow", "u", 1, 1)); err != nil {
			t.Errorf("slow-1: %v", err)
		}
	})
	e.waitBlockedBy(t, slow)
	var goodErr error
	lostDone := make(chan struct{})
	wg.Go(func() { goodErr = e.w.ProcessTask(bg, task(t, "g", "good", "u1", 1, 2)) })
	wg.Go(func() {
		defer close(lostDone)
		_ = e.w.ProcessTask(bg, task(t, "l", "lost", "u2", 1, 3))
	})
	e.waitPending(t, "good", 1)
	e.waitPending(t, "lost", 1)
	if err := slow.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	// Take the lock of "lost" away from every round that waits on its row,
	// until its order gives up.
	lr := locktest.Redis(t, e.lockRDB)
	key := e.prefix + "lock:{product:lost}"
	watch := e.conn(t)
	for lost := 0; ; lost++ {
		select {
		case <-lostDone:
		case <-time.After(time.Millisecond):
			if lost > 100 {
				t.Fatalf("the order of lost still runs after its lock was taken away %d times", lost)
			}
			testenv.Eventually(t, 10*time.Second, func() error {
				select {
				case <-lostDone:
					return nil
				default:
				}
				if n, _ := lr.Exists(bg, key).Result(); n == 0 {
					return fmt.Errorf("lock %s not held yet", key)
				}
				if w, err := testenv.WaitsOn(bg, watch, lostRow.Conn().PgConn().PID()); err != nil || !w {
					return fmt.Errorf("no round waits on the row of lost yet (%v)", err)
				}
				return nil
			})
			lr.Del(bg, key)
			continue
		}
		t.Logf("lock of lost taken away %d times", lost)
		break
	}
	if err := lostRow.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	o, err := e.store.Order(bg, "g")
	if goodErr != nil || err != nil || o.Status != inventory.StatusSucceeded {
		t.Errorf("order of good: ProcessTask %v; order %+v, %v; want succeeded", goodErr, o, err)
	}
}

// An order goes back to the batcher after each of its first maxRequeues (3)
// rounds whose lock was lost, and is decided in the next round once the
// lock holds. Here its product's lock is taken away from three rounds that
// wait on its row in turn; the fourth must decide it. Before this test,
// giving up at the third lost round (requeues >= maxRequeues) passed every
// worker test: the order, on its last try here, was recorded failed with
// stock left.
func TestOrderOutlastsAsManyLostLocksAsItHasRequeues(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, lostLockTTL)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 10, 0)
	bg := context.Background()
	row := e.holdRow(t, "p")
	errc := make(chan error, 1)
	go func() { errc <- e.w.ProcessTask(bg, task(t, "o1", "p", "u1", 1, 1)) }()
	lr := locktest.Redis(t, e.lockRDB)
	key := e.prefix + "lock:{product:p}"
	watch := e.conn(t)
	const maxRequeues = 3
	for lost := range maxRequeues {
		// The round after the last lost one holds the lock and waits on
		// the row.
		testenv.Eventually(t, 10*time.Second, func() error {
			if got := counter(t, e.reg, "flashsale_worker_rounds_total", map[string]string{"result": "lock_lost"}); got != float64(lost) {
				return fmt.Errorf("%v rounds lost their lock, want %d", got, lost)
			}
			if n, _ := lr.Exists(bg, key).Result(); n == 0 {
				return fmt.Errorf("lock %s not held yet", key)
			}
			if w, err := testenv.WaitsOn(bg, watch, row.Conn().PgConn().PID()); err != nil || !w {
				return fmt.Errorf("no round waits on the row yet (%v)", err)
			}
			return nil
		})
		if err := lr.Del(bg, key).Err(); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := counter(t, e.reg, "flashsale_worker_rounds_total", map[string]string{"result": "lock_lost"}); got != maxRequeues {
			return fmt.Errorf("%v rounds lost their lock, want %d", got, maxRequeues)
		}
		return nil
	})
	if err := row.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	o, errGet := e.store.Order(bg, "o1")
	if err != nil || errGet != nil || o.Status != inventory.StatusSucceeded {
		t.Errorf("after %d lost locks: ProcessTask %v; order %s %q, %v; want succeeded", maxRequeues, err, o.Status, o.Reason, errGet)
	}
}

// A held lock lost while it waited for a round (its key expired or taken
// away between rounds) is not used for the next round: the round takes the
// lock again. Here, with one order a round (MaxBatch 1), q's lock is taken
// into p2's round, which has no room for q1 and waits on an advisory lock
// the test holds; q's lock, idle, is taken away meanwhile. Before this
// test, using a held lock whose context had ended passed every worker
// test: q1's round failed on the lost lock and q1 went back to the
// batcher, a try of its maxRequeues spent for nothing.
func TestLockLostWhileIdleIsTakenAgain(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{Mode: worker.ModeBatch, MaxBatch: 1}, lostLockTTL)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 50, 0)
	inventorytest.CreateProduct(t, e.store, "q", 50, 0)
	e.exec(t, `CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(4245);
  RETURN NEW;
END $$;
CREATE TRIGGER gate BEFORE INSERT ON orders FOR EACH ROW WHEN (NEW.id = 'p2') EXECUTE FUNCTION gate();`)
	ctx := context.Background()
	gate := e.advisoryGate(t, 4245)
	errs := e.roundOfP2WithQ1LeftOut(t, gate)
	// q's lock is taken away, and lost here.
	if err := locktest.Redis(t, e.lockRDB).Del(ctx, e.prefix+"lock:{product:q}").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := counter(t, e.reg, "flashsale_lock_lost_total", nil); got != 1 {
			return fmt.Errorf("%v locks lost, want 1 (q's)", got)
		}
		return nil
	})
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_unlock(4245)`); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := counter(t, e.reg, "flashsale_worker_rounds_total", map[string]string{"result": "lock_lost"}); got != 0 {
		t.Errorf("%v rounds failed on a lost lock; want none: q's lock, lost while idle, is taken again", got)
	}
}
