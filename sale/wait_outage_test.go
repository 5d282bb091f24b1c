package sale_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/queue/queuetest"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A long poll whose end falls inside a PostgreSQL outage that began during
// it answers the state it last read of the order (which the order had
// then), not 503: the outage did not last the whole wait. Before, the wait
// reported the error of its last read; the chaos case "restart PostgreSQL
// (fast shutdown)" failed on it once under load (92 polls answered 503).
// The order's task has run, so a read during the outage cannot answer from
// it (an order whose task has run may be decided): only what the wait read
// before the outage can.
func TestWaitOrderAnswersItsLastReadWhenAnOutageCoversItsEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// running strands the order's task before the wait: its first
		// read is a full one (the queue does not hold it waiting).
		// Otherwise the task waits: the first read is of its state only,
		// and what the wait knows comes from its re-check (the order not
		// decided in PostgreSQL, its task held); a worker then takes it.
		running bool
		want    []inventory.Status
	}{
		{name: "full read of a running order", running: true, want: []inventory.Status{inventory.StatusProcessing}},
		{name: "re-check of a waiting order", want: []inventory.Status{inventory.StatusQueued, inventory.StatusProcessing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg := testenv.PrivatePostgres(t)
			e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg)})
			e.CreateProduct(t, "p1", 5, 0)
			ctx := context.Background()
			placed := e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1})
			if tc.running {
				queuetest.Strand(t, e.Redis, e.Queue, time.Now().Add(time.Minute))
			}
			since := ordersReadMark(t, pg)

			done := make(chan waitAnswer, 1)
			start := time.Now()
			go func() {
				v, err := e.Service.WaitOrder(ctx, placed.OrderID, 5*time.Second)
				done <- waitAnswer{v, err}
			}()
			// Once the wait has read the order in PostgreSQL, stop it.
			waitForOrdersRead(t, pg, since)
			if !tc.running {
				queuetest.Strand(t, e.Redis, e.Queue, time.Now().Add(time.Minute))
			}
			if err := pg.Kill(); err != nil {
				t.Fatal(err)
			}
			var got waitAnswer
			select {
			case got = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("WaitOrder did not return within 30s")
			}
			if got.err != nil {
				t.Fatalf("wait ending in an outage that began during it: %v; want the state it read before", got.err)
			}
			if got.v.ID != placed.OrderID || got.v.ProductID != "p1" || got.v.UserID != "alice" || got.v.Quantity != 1 {
				t.Errorf("answer %+v; want order %s of alice for 1 of p1", got.v, placed.OrderID)
			}
			ok := false
			for _, s := range tc.want {
				ok = ok || got.v.Status == s
			}
			if !ok {
				t.Errorf("status %s; want one of %v", got.v.Status, tc.want)
			}
			if d := time.Since(start); d < 5*time.Second {
				t.Errorf("answered after %v; want after the 5s wait (the order was not decided)", d)
			}
		})
	}
}

// ordersReadMark returns pg's clock now, for [waitForOrdersRead].
func ordersReadMark(t *testing.T, pg *localsvc.Postgres) time.Time {
	t.Helper()
	var now time.Time
	withPostgres(t, pg, func(ctx context.Context, c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now)
	})
	return now
}

// waitForOrdersRead waits until a read of the orders table that began
// after since has ended in pg: pg_stat_activity holds each connection's
// last query, and its state is idle once that query's answer was sent.
func waitForOrdersRead(t *testing.T, pg *localsvc.Postgres, since time.Time) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() error {
		var n int
		withPostgres(t, pg, func(ctx context.Context, c *pgx.Conn) error {
			return c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE state = 'idle' AND query_start > $1 AND query LIKE '%FROM orders WHERE id = ANY%'`, since).Scan(&n)
		})
		if n == 0 {
			return errors.New("the wait has not read the order in PostgreSQL yet")
		}
		return nil
	})
}

func withPostgres(t *testing.T, pg *localsvc.Postgres, f func(context.Context, *pgx.Conn) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := f(ctx, c); err != nil {
		t.Fatal(err)
	}
}
