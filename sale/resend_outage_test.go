package sale_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A keyed order decided (its task done and gone), then re-sent while
// PostgreSQL is down, is accepted without the database's check: a new task
// for the decided order. A read of the order during the outage must not
// answer from that task (queued, with the re-send's body): its status was
// final, and a final status never changes. A keyed order first sent during
// the outage reads unavailable too (nothing tells it from a re-send), and
// queued once PostgreSQL answers; an unkeyed one reads queued throughout.
func TestResendDuringAnOutageDoesNotUndoAFinalStatus(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg)})
	e.CreateProduct(t, "p1", 5, 0)
	ctx := context.Background()
	resends := map[string]int{"same-body": 1, "other-body": 3} // key → quantity re-sent
	for key := range resends {
		placed := e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: key})
		e.Decide(t, placed.OrderID)
		if v, err := e.Service.Order(ctx, placed.OrderID); err != nil || v.Status != inventory.StatusSucceeded {
			t.Fatalf("%s: before the outage: %+v, %v; want succeeded", key, v, err)
		}
	}
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	for key, quantity := range resends {
		p, err := e.Service.PlaceOrder(ctx, sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: quantity, IdempotencyKey: key})
		if err != nil {
			t.Fatalf("%s: re-send during the outage: %v; want it accepted (unchecked)", key, err)
		}
		v, err := e.Service.Order(ctx, p.OrderID)
		switch {
		case err == nil:
			t.Errorf("%s: read during the outage: %s, quantity %d; want ErrUnavailable: it read succeeded, quantity 1, before", key, v.Status, v.Quantity)
		case !errors.Is(err, sale.ErrUnavailable):
			t.Errorf("%s: read during the outage: %v; want ErrUnavailable", key, err)
		}
	}
	// Nothing tells a first send from a re-send then: a keyed order first
	// sent during the outage reads unavailable too, until PostgreSQL says.
	first := e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p1", UserID: "bob", Quantity: 1, IdempotencyKey: "new"})
	if v, err := e.Service.Order(ctx, first.OrderID); !errors.Is(err, sale.ErrUnavailable) {
		t.Errorf("keyed order first sent during the outage: %+v, %v; want ErrUnavailable", v, err)
	}
	unkeyed := e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p1", UserID: "bob", Quantity: 1})
	if v, err := e.Service.Order(ctx, unkeyed.OrderID); err != nil || v.Status != inventory.StatusQueued {
		t.Errorf("unkeyed order sent during the outage: %+v, %v; want queued", v, err)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		v, err := e.Service.Order(ctx, first.OrderID)
		if err != nil {
			return err
		}
		if v.Status != inventory.StatusQueued {
			t.Fatalf("keyed order first sent during the outage, after it: %s; want queued", v.Status)
		}
		return nil
	})
	for key := range resends {
		id := sale.KeyedOrderID("alice", key)
		testenv.Eventually(t, 10*time.Second, func() error {
			v, err := e.Service.Order(ctx, id)
			if err != nil {
				return err
			}
			if v.Status != inventory.StatusSucceeded || v.Quantity != 1 {
				t.Fatalf("%s: after the outage: %s, quantity %d; want succeeded, quantity 1", key, v.Status, v.Quantity)
			}
			return nil
		})
	}
}

// A keyed order decided, then re-sent during an outage, is accepted
// unchecked (see above). A second re-send during the same outage meets
// that task (its id refuses the enqueue) and must not be answered from it
// either: the task's body is the first re-send's, not the decided order's,
// so a replay from it reads queued (a final status undone), or 422 for a
// re-send of the decided order's own body, or a replay for another body.
// Only PostgreSQL can answer: 503 until it does, then its answer. The same
// holds for a product flagged sold out (another path to the replay).
func TestResendOfAnUncheckedOrderDuringAnOutageIsNotAnsweredFromItsTask(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg)})
	e.CreateProduct(t, "open", 5, 0)
	e.CreateProduct(t, "sold", 1, 0)
	ctx := context.Background()
	products := []string{"open", "sold"}
	for _, p := range products {
		placed := e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: p, UserID: "alice", Quantity: 1, IdempotencyKey: "k-" + p})
		e.Decide(t, placed.OrderID)
	}
	e.MarkSoldOut(t, "sold")
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, p := range products {
		// The first re-send, with another quantity, is accepted unchecked.
		if _, err := e.Service.PlaceOrder(ctx, sale.PlaceOrderRequest{ProductID: p, UserID: "alice", Quantity: 3, IdempotencyKey: "k-" + p}); err != nil {
			t.Fatalf("%s: first re-send during the outage: %v; want it accepted (unchecked)", p, err)
		}
		for _, quantity := range []int{3, 1} {
			got, err := e.Service.PlaceOrder(ctx, sale.PlaceOrderRequest{ProductID: p, UserID: "alice", Quantity: quantity, IdempotencyKey: "k-" + p})
			if !errors.Is(err, sale.ErrUnavailable) {
				t.Errorf("%s: another re-send during the outage, quantity %d: %+v, %v; want ErrUnavailable (decided before: succeeded, quantity 1)", p, quantity, got, err)
			}
		}
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	for _, p := range products {
		testenv.Eventually(t, 10*time.Second, func() error {
			got, err := e.Service.PlaceOrder(ctx, sale.PlaceOrderRequest{ProductID: p, UserID: "alice", Quantity: 1, IdempotencyKey: "k-" + p})
			if errors.Is(err, sale.ErrUnavailable) {
				return err
			}
			if err != nil || !got.Replay || got.Status != inventory.StatusSucceeded {
				t.Fatalf("%s: re-send after the outage: %+v, %v; want a replay, succeeded", p, got, err)
			}
			return nil
		})
		if got, err := e.Service.PlaceOrder(ctx, sale.PlaceOrderRequest{ProductID: p, UserID: "alice", Quantity: 3, IdempotencyKey: "k-" + p}); !errors.Is(err, sale.ErrIdempotencyMismatch) {
			t.Errorf("%s: re-send of another quantity after the outage: %+v, %v; want ErrIdempotencyMismatch", p, got, err)
		}
	}
}

// A keyed order accepted while PostgreSQL answers (its second look after
// the enqueue finding it not decided) is no order accepted during an
// outage: its task stays checked, and a read during a later outage answers
// queued from it while it has not run, as for an unkeyed order.
func TestKeyedOrderAcceptedBeforeAnOutageReadsQueuedDuringIt(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg)})
	e.CreateProduct(t, "p1", 5, 0)
	ctx := context.Background()
	placed := e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"})
	if placed.Replay || placed.Status != inventory.StatusQueued {
		t.Fatalf("first send: %+v; want queued, no replay", placed)
	}
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	if v, err := e.Service.Order(ctx, placed.OrderID); err != nil || v.Status != inventory.StatusQueued || v.Quantity != 1 {
		t.Errorf("read during an outage after it was accepted: %+v, %v; want queued, quantity 1", v, err)
	}
}
