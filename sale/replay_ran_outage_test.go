package sale_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/queue/queuetest"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A keyed order whose task has run (a worker holds it) and whose round
// committed reads succeeded; with PostgreSQL down, GET /v1/orders/{id}
// answers 503 for it (its task cannot tell whether it was decided: see
// TestOrderReadWithTheDatabaseDownNeverUndoesAFinalStatus). A re-send of
// the same key must not answer from that task either: its replay read
// processing, a final status undone, on the product on sale (the enqueue
// meets the task) and on one flagged sold out (soldOutKeyed finds it).
func TestKeyedResendDuringAnOutageDoesNotAnswerFromATaskThatRan(t *testing.T) {
	t.Parallel()
	for _, product := range []string{"open", "sold"} {
		t.Run(product, func(t *testing.T) {
			t.Parallel()
			pg := testenv.PrivatePostgres(t)
			e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg)})
			stock := int64(5)
			if product == "sold" {
				stock = 1
			}
			e.CreateProduct(t, product, stock, 0)
			ctx := context.Background()
			req := sale.PlaceOrderRequest{ProductID: product, UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
			placed := e.PlaceOrder(t, req)
			queuetest.Strand(t, e.Redis, e.Queue, time.Now().Add(time.Minute)) // a worker runs it
			e.Commit(t, placed.OrderID)                                        // and its round committed
			if product == "sold" {
				e.MarkSoldOut(t, product)
			}
			if v, err := e.Service.Order(ctx, placed.OrderID); err != nil || v.Status != inventory.StatusSucceeded {
				t.Fatalf("before the outage: %+v, %v; want succeeded", v, err)
			}
			if got := e.PlaceOrder(t, req); !got.Replay || got.Status != inventory.StatusSucceeded {
				t.Fatalf("re-send before the outage: %+v; want a replay, succeeded", got)
			}
			if err := pg.Kill(); err != nil {
				t.Fatal(err)
			}
			if v, err := e.Service.Order(ctx, placed.OrderID); !errors.Is(err, sale.ErrUnavailable) {
				t.Errorf("read during the outage: %+v, %v; want ErrUnavailable", v, err)
			}
			got, err := e.Service.PlaceOrder(ctx, req)
			if err == nil && !got.Status.Final() {
				t.Errorf("re-send during the outage: %+v; it read succeeded before: want ErrUnavailable (or succeeded), not %s", got, got.Status)
			}
		})
	}
}
