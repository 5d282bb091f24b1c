package sale_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/ratelimit"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// hungSlack is how much later than sale.OrderBudget an order may answer on
// a loaded machine.
const hungSlack = 2 * time.Second

// With the queue's Redis hung (SIGSTOP: connections stay open, nothing
// answers), an order answers ErrUnavailable within sale.OrderBudget, on
// every path that reads Redis: the rate limiter, the sold-out flag (not
// cached), the enqueue, a keyed order's lookups (mayBeBuried, the task's
// state) and, on a product flagged sold out, soldOutKeyed's look for its
// task.
// The service talks to Redis as the API does (go-redis's 3s read timeout,
// three retries): each of those calls alone could take 12s, and an order
// answered after 14-26s. A 503 is not a final answer: once Redis answers
// again, a keyed order sent again is accepted under its own id (or found,
// had the cut enqueue gone through), and one on the sold-out product is
// refused only then.
func TestPlaceOrderOnAHungRedisAnswersWithinItsBudget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, product, key string
		limiter            bool
		// cacheTTL: a minute keeps the flags read before the pause the
		// gate's answer after it; 0 (saletest's 100ms) has them read again.
		cacheTTL time.Duration
	}{
		{name: "rate limiter", product: "open", limiter: true, cacheTTL: time.Minute},
		{name: "sold-out flag", product: "open"},
		{name: "enqueue", product: "open", cacheTTL: time.Minute},
		{name: "keyed", product: "open", key: "k", cacheTTL: time.Minute},
		{name: "keyed on a product flagged sold out", product: "sold", key: "k", cacheTTL: time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			node := testenv.PrivateRedis(t, localsvc.RedisOptions{})
			opts := &saletest.Options{RedisURL: node.URL(0), APIClient: true, CacheTTL: tc.cacheTTL}
			if tc.limiter {
				opts.RateLimit = &ratelimit.Options{Rate: 1000, Per: time.Second}
			}
			e := saletest.New(t, opts)
			// Registered after saletest's clean-up, so it runs first: that
			// clean-up needs the node.
			t.Cleanup(func() { _ = node.Resume() })
			e.CreateProduct(t, "open", 100, 0)
			e.CreateProduct(t, "sold", 100, 0)
			e.MarkSoldOut(t, "sold")
			ctx := context.Background()
			// Every piece warmed up: the products known, the flags cached.
			e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "open", UserID: "warm", Quantity: 1, IdempotencyKey: "w"})
			if _, err := e.Service.PlaceOrder(ctx, sale.PlaceOrderRequest{ProductID: "sold", UserID: "warm", Quantity: 1}); !errors.Is(err, sale.ErrSoldOut) {
				t.Fatalf("order on the sold-out product before the pause: %v; want ErrSoldOut", err)
			}

			if err := node.Pause(); err != nil {
				t.Fatal(err)
			}
			req := sale.PlaceOrderRequest{ProductID: tc.product, UserID: "alice", Quantity: 1, IdempotencyKey: tc.key}
			start := time.Now()
			placed, err := e.Service.PlaceOrder(ctx, req)
			took := time.Since(start)
			t.Logf("with Redis hung: %+v, %v after %v", placed, err, took.Round(time.Millisecond))
			if !errors.Is(err, sale.ErrUnavailable) {
				t.Errorf("with Redis hung: %+v, %v; want ErrUnavailable", placed, err)
			}
			if took > sale.OrderBudget+hungSlack {
				t.Errorf("with Redis hung, the order answered after %v; want within %v (sale.OrderBudget) + %v", took, sale.OrderBudget, hungSlack)
			}

			if err := node.Resume(); err != nil {
				t.Fatal(err)
			}
			if tc.key == "" {
				return
			}
			id := sale.KeyedOrderID(req.UserID, req.IdempotencyKey)
			testenv.Eventually(t, 20*time.Second, func() error {
				got, err := e.Service.PlaceOrder(ctx, req)
				switch {
				case errors.Is(err, sale.ErrUnavailable):
					return err
				case tc.product == "sold" && errors.Is(err, sale.ErrSoldOut):
				case err != nil:
					t.Fatalf("sent again once Redis answers: %v", err)
				case got.OrderID != id:
					t.Fatalf("sent again once Redis answers: order %s; want its own, %s", got.OrderID, id)
				}
				return nil
			})
		})
	}
}

// With PostgreSQL hung (the orders table locked), a keyed order's lookup of
// its decided self is cut when the order's checks run out, and the order
// is accepted unchecked within sale.OrderBudget, as when PostgreSQL is
// down: the checks leave the enqueue its share of the budget, rather than
// a lookup cut only by the budget leaving nothing but a 503.
func TestKeyedOrderWithPostgresHungIsAcceptedWithinItsBudget(t *testing.T) {
	t.Parallel()
	e := saletest.New(t, &saletest.Options{CacheTTL: time.Minute})
	e.CreateProduct(t, "p1", 100, 0)
	ctx := context.Background()
	e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p1", UserID: "warm", Quantity: 1}) // p1 known, its flag cached
	_, release := testenv.HoldLock(t, e.DatabaseURL, "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
	req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
	start := time.Now()
	placed, err := e.Service.PlaceOrder(ctx, req)
	took := time.Since(start)
	t.Logf("with PostgreSQL hung: %+v, %v after %v", placed, err, took.Round(time.Millisecond))
	if err != nil || placed.OrderID != sale.KeyedOrderID(req.UserID, req.IdempotencyKey) || placed.Status != inventory.StatusQueued {
		t.Errorf("with PostgreSQL hung: %+v, %v; want its own order id, queued (unchecked)", placed, err)
	}
	if took > sale.OrderBudget+hungSlack {
		t.Errorf("with PostgreSQL hung, the order answered after %v; want within %v (sale.OrderBudget) + %v", took, sale.OrderBudget, hungSlack)
	}
	release()
	if v, err := e.Service.Order(ctx, placed.OrderID); err != nil || v.Status != inventory.StatusQueued {
		t.Errorf("once PostgreSQL answers: %+v, %v; want queued", v, err)
	}
}

// With the queue's Redis hung, the queue's counts (GET /v1/queue, the
// dashboard) answer ErrUnavailable within sale.ReadBudget, as an order's
// reads do: asynq's Inspector takes no context, and its two calls (the
// queue list, then the queue's counts) waited go-redis's 3s read timeout
// four times each, 12-24s, however soon the caller gave up. Once Redis
// answers again, so do the counts.
func TestQueueStatsOnAHungRedisAnswersWithinReadBudget(t *testing.T) {
	t.Parallel()
	node := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	e := saletest.New(t, &saletest.Options{RedisURL: node.URL(0), APIClient: true})
	t.Cleanup(func() { _ = node.Resume() }) // runs before saletest's clean-up, which needs the node
	e.CreateProduct(t, "p1", 100, 0)
	e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p1", UserID: "warm", Quantity: 1})
	ctx := context.Background()
	if st, err := e.Service.QueueStats(ctx); err != nil || st.Pending != 1 {
		t.Fatalf("queue stats before the pause: %+v, %v; want 1 pending", st, err)
	}

	if err := node.Pause(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st, err := e.Service.QueueStats(ctx)
	took := time.Since(start)
	t.Logf("with Redis hung: %+v, %v after %v", st, err, took.Round(time.Millisecond))
	if !errors.Is(err, sale.ErrUnavailable) {
		t.Errorf("with Redis hung: %+v, %v; want ErrUnavailable", st, err)
	}
	if took > sale.ReadBudget+hungSlack {
		t.Errorf("with Redis hung, the queue stats answered after %v; want within %v (sale.ReadBudget) + %v", took, sale.ReadBudget, hungSlack)
	}

	if err := node.Resume(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		st, err := e.Service.QueueStats(ctx)
		if err == nil && st.Pending != 1 {
			t.Fatalf("queue stats once Redis answers: %+v; want 1 pending", st)
		}
		return err
	})
}

// With PostgreSQL hung after a keyed order's first look (the orders table
// locked while its enqueue is held back), the second look after the
// enqueue is cut half of the enqueue's reserve before the order's budget,
// which leaves the rest to queue the task again unchecked: the order is
// queued within sale.OrderBudget, its task unchecked, not cut by the
// budget into a 503.
func TestKeyedOrderWithPostgresHungAtItsSecondLookIsQueuedWithinItsBudget(t *testing.T) {
	t.Parallel()
	hook := &scriptHook{}
	e := saletest.New(t, &saletest.Options{CacheTTL: time.Minute, Hook: hook})
	e.CreateProduct(t, "p1", 100, 0)
	ctx := context.Background()
	e.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p1", UserID: "warm", Quantity: 1}) // p1 known, its flag cached
	req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
	id := sale.KeyedOrderID(req.UserID, req.IdempotencyKey)
	start := time.Now()
	finish := placeHeld(t, e, hook, req, holdRun)
	_, unlock := testenv.HoldLock(t, e.DatabaseURL, "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
	placed, err := finish()
	took := time.Since(start)
	t.Logf("with PostgreSQL hung at the second look: %+v, %v after %v", placed, err, took.Round(time.Millisecond))
	if err != nil || placed.Status != inventory.StatusQueued {
		t.Errorf("with PostgreSQL hung at the second look: %+v, %v; want queued (unchecked)", placed, err)
	}
	if took > sale.OrderBudget+hungSlack {
		t.Errorf("answered after %v; want within %v (sale.OrderBudget) + %v", took, sale.OrderBudget, hungSlack)
	}
	if ti, err := e.Inspector.Lookup(ctx, id); err != nil || !ti.Order.Unchecked {
		t.Errorf("the queue holds %+v, %v; want the order's task, unchecked", ti, err)
	}
	unlock()
}
