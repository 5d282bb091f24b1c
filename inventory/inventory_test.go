package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// maxStock is the bound on stock the tests restock under (sale.MaxStock).
const maxStock = 1_000_000_000

func req(id, product, user string, qty int, seq int) inventory.OrderRequest {
	return inventory.OrderRequest{ID: id, ProductID: product, UserID: user, Quantity: qty,
		IdempotencyKey: "k-" + id, AcceptedAt: t0.Add(time.Duration(seq) * time.Millisecond)}
}

func statuses(res *inventory.Result) []inventory.Status {
	out := make([]inventory.Status, len(res.Decisions))
	for i, d := range res.Decisions {
		out[i] = d.Order.Status
	}
	return out
}

func TestApplyDecides(t *testing.T) {
	t.Parallel()
	const (
		ok   = inventory.StatusSucceeded
		sold = inventory.StatusSoldOut
		lim  = inventory.StatusLimitExceeded
	)
	tests := []struct {
		name      string
		stock     int64
		limit     int
		orders    []inventory.OrderRequest
		want      []inventory.Status
		wantStock int64
	}{
		{
			name:  "first come first served by acceptance time, not input order",
			stock: 2,
			orders: []inventory.OrderRequest{
				req("c", "p", "u3", 1, 3), req("a", "p", "u1", 1, 1), req("d", "p", "u4", 1, 4), req("b", "p", "u2", 1, 2),
			},
			want:      []inventory.Status{sold, ok, sold, ok},
			wantStock: 0,
		},
		{
			// ids in the reverse of acceptance order: the id only breaks ties
			name:      "first come first served by acceptance time, not order id",
			stock:     1,
			orders:    []inventory.OrderRequest{req("z", "p", "u1", 1, 1), req("a", "p", "u2", 1, 2)},
			want:      []inventory.Status{ok, sold},
			wantStock: 0,
		},
		{
			name:      "multi-unit order larger than what is left is sold out, a smaller later one still fits",
			stock:     5,
			orders:    []inventory.OrderRequest{req("a", "p", "u1", 3, 1), req("b", "p", "u2", 3, 2), req("c", "p", "u3", 2, 3)},
			want:      []inventory.Status{ok, sold, ok},
			wantStock: 0,
		},
		{
			name:      "per-user limit counts units within the batch",
			stock:     10,
			limit:     2,
			orders:    []inventory.OrderRequest{req("a", "p", "u1", 1, 1), req("b", "p", "u1", 1, 2), req("c", "p", "u1", 1, 3), req("d", "p", "u2", 2, 4)},
			want:      []inventory.Status{ok, ok, lim, ok},
			wantStock: 6,
		},
		{
			name:      "same order id twice in a batch is decided once",
			stock:     5,
			orders:    []inventory.OrderRequest{req("a", "p", "u1", 2, 1), req("a", "p", "u1", 2, 1)},
			want:      []inventory.Status{ok, ok},
			wantStock: 3,
		},
		{
			// accepted in the same microsecond, given in the reverse of id
			// order: the smaller id is served first, whatever the input order
			name:      "same acceptance time: the smaller order id first",
			stock:     1,
			orders:    []inventory.OrderRequest{req("b", "p", "u1", 1, 1), req("a", "p", "u2", 1, 1)},
			want:      []inventory.Status{sold, ok},
			wantStock: 0,
		},
		{
			// 2^31-1 is the largest quantity the orders table holds: a
			// valid order, decided (here sold out), not refused as invalid
			name:      "the largest storable quantity is decided",
			stock:     1,
			orders:    []inventory.OrderRequest{req("a", "p", "u1", math.MaxInt32, 1)},
			want:      []inventory.Status{sold},
			wantStock: 1,
		},
		{
			name:      "nothing left",
			stock:     0,
			orders:    []inventory.OrderRequest{req("a", "p", "u1", 1, 1)},
			want:      []inventory.Status{sold},
			wantStock: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := inventorytest.NewStore(t)
			inventorytest.CreateProduct(t, s, "p", tc.stock, tc.limit)
			res, err := s.Apply(ctx, inventory.Batch{Orders: tc.orders, Tokens: map[string]int64{"p": 1}})
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			got := statuses(res)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("statuses: got %v, want %v", got, tc.want)
			}
			if st := res.Products["p"].Stock; st != tc.wantStock {
				t.Errorf("result stock: got %d, want %d", st, tc.wantStock)
			}
			p, err := s.Product(ctx, "p")
			if err != nil {
				t.Fatal(err)
			}
			if p.Stock != tc.wantStock || p.Stock+p.Sold != tc.stock {
				t.Errorf("product: got stock %d sold %d, want stock %d and stock+sold %d", p.Stock, p.Sold, tc.wantStock, tc.stock)
			}
			if p.Fence != 1 && len(tc.orders) > 0 {
				t.Errorf("fence: got %d, want 1", p.Fence)
			}
			// The product's counts by outcome, one per order decided.
			var want inventory.OrderCounts
			counted := map[string]bool{}
			for i, st := range tc.want {
				if counted[tc.orders[i].ID] {
					continue // a second copy of an id is the first's outcome
				}
				counted[tc.orders[i].ID] = true
				switch st {
				case ok:
					want.Succeeded++
				case sold:
					want.SoldOut++
				case lim:
					want.LimitExceeded++
				}
			}
			if p.Orders != want {
				t.Errorf("order counts: got %+v, want %+v", p.Orders, want)
			}
			for i, d := range res.Decisions {
				o, err := s.Order(ctx, d.Order.ID)
				if err != nil {
					t.Fatalf("order %s: %v", d.Order.ID, err)
				}
				if o.Status != tc.want[i] || o.Fence != 1 {
					t.Errorf("stored order %s: got %s fence %d, want %s fence 1 (the batch's token)", o.ID, o.Status, o.Fence, tc.want[i])
				}
				// The row holds the request as accepted, and the answer is
				// the row: a worker reports the answer as the outcome.
				r := tc.orders[i]
				if o.ProductID != r.ProductID || o.UserID != r.UserID || o.Quantity != r.Quantity ||
					o.IdempotencyKey != r.IdempotencyKey || !o.CreatedAt.Equal(r.AcceptedAt) {
					t.Errorf("stored order %s: got %+v, want the request %+v", o.ID, o, r)
				}
				if !sameOrder(d.Order, o) {
					t.Errorf("decision of %s: got %+v, want the stored order %+v", o.ID, d.Order, o)
				}
			}
		})
	}
}

// sameOrder reports whether a and b are the same order, times compared as
// instants.
func sameOrder(a, b inventory.Order) bool {
	ta, tb := a, b
	ta.CreatedAt, ta.UpdatedAt, tb.CreatedAt, tb.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return ta == tb && a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt)
}

// The per-user limit counts what the buyer bought in earlier batches, not
// only in this one: each batch adds its units to the stored purchase.
func TestApplyLimitCountsEarlierBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 10, 3)
	for i, tc := range []struct {
		qty  int
		want inventory.Status
	}{
		{2, inventory.StatusSucceeded},     // 2 of 3
		{1, inventory.StatusSucceeded},     // 3 of 3
		{1, inventory.StatusLimitExceeded}, // would be 4
	} {
		id := fmt.Sprintf("o%d", i)
		res, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req(id, "p", "u1", tc.qty, i)}, Tokens: map[string]int64{"p": 1}})
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if got := res.Decisions[0].Order.Status; got != tc.want {
			t.Fatalf("batch %d (%d units): got %s, want %s", i, tc.qty, got, tc.want)
		}
	}
	if p, err := s.Product(ctx, "p"); err != nil || p.Stock != 7 {
		t.Errorf("product: %+v, %v; want stock 7", p, err)
	}
}

// A buyer's several orders in one batch are all stored in the purchase: a
// later batch counts every unit bought, not only the batch's last order.
func TestApplyStoresEveryPurchaseOfABatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 10, 3)
	tokens := map[string]int64{"p": 1}
	for i, tc := range []struct {
		orders []inventory.OrderRequest
		want   []inventory.Status
	}{
		{[]inventory.OrderRequest{req("a", "p", "u1", 1, 1), req("b", "p", "u1", 1, 2)},
			[]inventory.Status{inventory.StatusSucceeded, inventory.StatusSucceeded}}, // 2 of 3
		{[]inventory.OrderRequest{req("c", "p", "u1", 1, 3), req("d", "p", "u1", 1, 4)},
			[]inventory.Status{inventory.StatusSucceeded, inventory.StatusLimitExceeded}}, // 3 of 3, then 4
	} {
		res, err := s.Apply(ctx, inventory.Batch{Orders: tc.orders, Tokens: tokens})
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if got := statuses(res); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Fatalf("batch %d: got %v, want %v", i, got, tc.want)
		}
	}
	if p, err := s.Product(ctx, "p"); err != nil || p.Stock != 7 {
		t.Errorf("product: %+v, %v; want stock 7", p, err)
	}
}

func TestApplyReplayChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 1, 0)
	b := inventory.Batch{Orders: []inventory.OrderRequest{req("a", "p", "u1", 1, 1), req("b", "p", "u2", 1, 2)}, Tokens: map[string]int64{"p": 7}}
	first, err := s.Apply(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	// Redelivery, even under a newer token, and even after a restock that
	// would now let "b" succeed: the outcomes stand.
	if _, err := s.Restock(ctx, inventory.RestockRequest{ProductID: "p", Quantity: 5, Gen: 1, Max: maxStock}); err != nil {
		t.Fatal(err)
	}
	b.Tokens["p"] = 8
	second, err := s.Apply(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first.Decisions {
		if !second.Decisions[i].Replay {
			t.Errorf("decision %d: got Replay=false, want true", i)
		}
		if got, want := second.Decisions[i].Order.Status, first.Decisions[i].Order.Status; got != want {
			t.Errorf("decision %d: got %s, want %s", i, got, want)
		}
	}
	p, _ := s.Product(ctx, "p")
	if p.Stock != 5 || p.Sold != 1 || p.Orders.Succeeded != 1 || p.Orders.SoldOut != 1 {
		t.Errorf("got stock %d sold %d counts %+v, want stock 5 sold 1 one succeeded one sold out", p.Stock, p.Sold, p.Orders)
	}
}

// A batch of replays only writes nothing, but must still end its
// transaction: it locked the product rows FOR UPDATE, and a connection
// given back to the pool inside a transaction is closed (asynchronously,
// its row locks held until then), not reused: every redelivered batch
// would cost a new connection.
func TestApplyReplayOnlyEndsItsTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.Open(t, inventorytest.NewDatabase(t), &inventory.Options{MaxConns: 1})
	inventorytest.CreateProduct(t, s, "p", 5, 0)
	b := inventory.Batch{Orders: []inventory.OrderRequest{req("a", "p", "u1", 1, 1)}, Tokens: map[string]int64{"p": 1}}
	if _, err := s.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	res, err := s.Apply(ctx, b)
	if err != nil || !res.Decisions[0].Replay {
		t.Fatalf("Apply again: %+v, %v; want a replay", res, err)
	}
	// The pool's one connection is idle for the next call: it was not
	// closed for being given back inside the transaction.
	empty := s.PoolStats().EmptyAcquireCount
	if _, err := s.Product(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if got := s.PoolStats().EmptyAcquireCount; got != empty {
		t.Errorf("the call after a replay-only batch found no idle connection (empty acquires %d, then %d)", empty, got)
	}
}

// A batch mixing a decided order with new ones (a redelivered task joined
// by fresh ones): the decided order is a replay and is not counted again,
// the new ones are decided. Apply first tries without reading the orders
// table; the insert meets the decided order and the transaction must roll
// back before its COMMIT, which is queued in the same round trip.
func TestApplyPartialReplayCountsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 10, 0)
	tokens := map[string]int64{"p": 1}
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("a", "p", "u1", 2, 1)}, Tokens: tokens}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{
		req("b", "p", "u2", 3, 2), req("a", "p", "u1", 2, 1), req("c", "p", "u3", 1, 3),
	}, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true, false} {
		d := res.Decisions[i]
		if d.Replay != want || d.Order.Status != inventory.StatusSucceeded {
			t.Errorf("decision %d (%s): replay %v status %s, want replay %v succeeded", i, d.Order.ID, d.Replay, d.Order.Status, want)
		}
	}
	p, err := s.Product(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if p.Stock != 4 || p.Sold != 6 || p.Orders.Succeeded != 3 {
		t.Errorf("got stock %d sold %d succeeded %d, want 4, 6 and 3", p.Stock, p.Sold, p.Orders.Succeeded)
	}
}

// The optimistic run of a batch that met a decided order is rolled back on
// its connection before the batch runs again: a connection given back to
// the pool inside its (aborted) transaction is closed, not reused, and
// holds the product row locks until the close, so the second run would
// wait for the first's locks on a new connection.
func TestApplyPartialReplayKeepsItsConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.Open(t, inventorytest.NewDatabase(t), &inventory.Options{MaxConns: 1})
	inventorytest.CreateProduct(t, s, "p", 10, 0)
	tokens := map[string]int64{"p": 1}
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("a", "p", "u1", 1, 1)}, Tokens: tokens}); err != nil {
		t.Fatal(err)
	}
	empty := s.PoolStats().EmptyAcquireCount
	res, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("b", "p", "u2", 1, 2), req("a", "p", "u1", 1, 1)}, Tokens: tokens})
	if err != nil || res.Decisions[0].Replay || !res.Decisions[1].Replay {
		t.Fatalf("Apply of b and a again: %+v, %v; want b decided, a a replay", res, err)
	}
	if got := s.PoolStats().EmptyAcquireCount; got != empty {
		t.Errorf("the second run of the batch found no idle connection (empty acquires %d, then %d)", empty, got)
	}
}

func TestApplyStaleFenceWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 10, 0)
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("new", "p", "u1", 1, 1)}, Tokens: map[string]int64{"p": 5}}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("old", "p", "u2", 1, 2)}, Tokens: map[string]int64{"p": 4}})
	var stale *inventory.StaleFenceError
	if !errors.Is(err, inventory.ErrStaleFence) || !errors.As(err, &stale) {
		t.Fatalf("got %v, want ErrStaleFence", err)
	}
	// Not a database fault: the worker retries ErrUnavailable as one (with
	// its backoff and retry budget), and a stale fence is not.
	if errors.Is(err, inventory.ErrUnavailable) {
		t.Errorf("stale fence: got %v, which matches ErrUnavailable", err)
	}
	if stale.Fence != 5 || stale.Token != 4 || stale.ProductID != "p" {
		t.Errorf("got %+v, want product p token 4 fence 5", stale)
	}
	if _, err := s.Order(ctx, "old"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("stale order recorded: got %v, want ErrNotFound", err)
	}
	p, _ := s.Product(ctx, "p")
	if p.Stock != 9 || p.Fence != 5 {
		t.Errorf("got stock %d fence %d, want 9 and 5", p.Stock, p.Fence)
	}

	// Every stale product of a batch is named, not only the first.
	inventorytest.CreateProduct(t, s, "q", 10, 0)
	inventorytest.CreateProduct(t, s, "r", 10, 0)
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("q1", "q", "u1", 1, 3)}, Tokens: map[string]int64{"q": 7}}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Apply(ctx, inventory.Batch{
		Orders: []inventory.OrderRequest{req("a", "p", "u3", 1, 4), req("b", "q", "u3", 1, 5), req("c", "r", "u3", 1, 6)},
		Tokens: map[string]int64{"p": 4, "q": 6, "r": 1}})
	var named []string
	for _, st := range inventory.StaleFences(err) {
		named = append(named, fmt.Sprintf("%s:%d<%d", st.ProductID, st.Token, st.Fence))
	}
	if !errors.Is(err, inventory.ErrStaleFence) || strings.Join(named, ",") != "p:4<5,q:6<7" {
		t.Errorf("stale products: got %v (%v), want p:4<5,q:6<7", named, err)
	}
	// Anywhere in the error's tree: a caller may wrap it.
	if got := inventory.StaleFences(fmt.Errorf("round: %w", err)); len(got) != 2 {
		t.Errorf("stale products of the wrapped error: got %v, want p and q", got)
	}
	// The same token again is fine: one lock hold may write several batches.
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("again", "p", "u3", 1, 3)}, Tokens: map[string]int64{"p": 5}}); err != nil {
		t.Errorf("same token: %v", err)
	}
}

// A batch over several products carries one token per product (each its
// own lock's): each product's fence, and each order's, is its product's
// token, and every product's orders are decided.
func TestApplyFencesEachProductWithItsToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	tokens := map[string]int64{"p": 3, "q": 8, "r": 5}
	for id := range tokens {
		inventorytest.CreateProduct(t, s, id, 5, 0)
	}
	res, err := s.Apply(ctx, inventory.Batch{
		Orders: []inventory.OrderRequest{req("a", "p", "u1", 1, 1), req("b", "q", "u1", 2, 2), req("c", "r", "u1", 3, 3)},
		Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range res.Decisions {
		want := tokens[d.Order.ProductID]
		if d.Err != nil || d.Order.Status != inventory.StatusSucceeded || d.Order.Fence != want {
			t.Errorf("decision %d: got %+v, want succeeded at fence %d", i, d, want)
		}
		if o, err := s.Order(ctx, d.Order.ID); err != nil || o.Fence != want {
			t.Errorf("stored order %d: got %+v, %v; want fence %d", i, o, err, want)
		}
	}
	for id, want := range map[string]int64{"p": 4, "q": 3, "r": 2} {
		if p, err := s.Product(ctx, id); err != nil || p.Fence != tokens[id] || p.Stock != want {
			t.Errorf("product %s: got %+v, %v; want fence %d and stock %d", id, p, err, tokens[id], want)
		}
	}
}

// The result gives each product's stock with the restock generation read
// in the same transaction: a worker flags a product sold out at that
// generation (soldout.Gate.Mark), so a wrong one either lets a flag stand
// over a newer restock's stock or refuses every flag.
func TestApplyResultCarriesRestockGen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 1, 0)
	inventorytest.CreateProduct(t, s, "q", 5, 0)
	if _, err := s.Restock(ctx, inventory.RestockRequest{ProductID: "p", Quantity: 1, Gen: 4, Max: maxStock}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Apply(ctx, inventory.Batch{
		Orders: []inventory.OrderRequest{req("a", "p", "u1", 2, 1), req("b", "q", "u1", 1, 2)},
		Tokens: map[string]int64{"p": 1, "q": 1}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]inventory.ProductState{"p": {Stock: 0, RestockGen: 4}, "q": {Stock: 4, RestockGen: 0}}
	if fmt.Sprint(res.Products) != fmt.Sprint(want) {
		t.Errorf("Products = %+v, want %+v", res.Products, want)
	}
}

func TestApplyUnknownProduct(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 1, 0)
	res, err := s.Apply(ctx, inventory.Batch{
		Orders: []inventory.OrderRequest{req("a", "nope", "u1", 1, 1), req("b", "p", "u1", 1, 2)},
		Tokens: map[string]int64{"p": 1, "nope": 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res.Decisions[0].Err, inventory.ErrNotFound) {
		t.Errorf("unknown product: got %v, want ErrNotFound", res.Decisions[0].Err)
	}
	if res.Decisions[1].Order.Status != inventory.StatusSucceeded {
		t.Errorf("known product: got %s, want succeeded", res.Decisions[1].Order.Status)
	}
}

// A batch with an order the orders table cannot hold (no id, a quantity
// outside 1 to 2^31-1) is refused as invalid, a permanent error, not
// retried as a database outage (from a review: a quantity past int4 failed
// pgx's encoding and read as ErrUnavailable, for ever).
func TestApplyRefusesOrdersItCannotStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 1, 0)
	for _, o := range []inventory.OrderRequest{
		req("", "p", "u1", 1, 1), req("a", "p", "u1", 0, 1), req("a", "p", "u1", math.MaxInt32+1, 1),
	} {
		if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{o}, Tokens: map[string]int64{"p": 1}}); !errors.Is(err, inventory.ErrInvalid) {
			t.Errorf("order %q of quantity %d: %v, want ErrInvalid", o.ID, o.Quantity, err)
		}
	}
	// An order of a product the batch holds no fencing token for: with none,
	// it would be written unfenced (token 0) over a product no lock wrote yet.
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("b", "p", "u1", 1, 1)}, Tokens: map[string]int64{"q": 1}}); !errors.Is(err, inventory.ErrInvalid) {
		t.Errorf("order of a product without a token: %v, want ErrInvalid", err)
	}
	if p, err := s.Product(ctx, "p"); err != nil || p.Stock != 1 {
		t.Errorf("product after the refused batches: %+v, %v; want stock 1", p, err)
	}
}

// A database that refuses connections (ALTER DATABASE ... ALLOW_CONNECTIONS
// false) is unavailable, as a stopped server is: its open connections end
// (57P01) and new ones fail at connection start with SQLSTATE 55000, which
// read as a permanent error before (from a review: the worker's outage
// tests simulated an outage so, and its rescuer gave up every scan on it).
func TestRefusedConnectionsAreUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := inventorytest.NewDatabase(t)
	s := inventorytest.Open(t, url, nil)
	if _, err := s.Orders(ctx, []string{"o1"}); err != nil {
		t.Fatal(err)
	}
	allow := testenv.RefuseConnections(t, url)
	// The pool's ended connections fail first; then every call connects.
	refused := false
	for i := 0; i < 10 && !refused; i++ {
		_, err := s.Orders(ctx, []string{"o1"})
		if !errors.Is(err, inventory.ErrUnavailable) {
			t.Fatalf("Orders while refused: %v, want ErrUnavailable", err)
		}
		var pgErr *pgconn.PgError
		refused = errors.As(err, new(*pgconn.ConnectError)) && errors.As(err, &pgErr) && pgErr.Code == "55000"
	}
	if !refused {
		t.Fatal("Orders never tried a new connection (refused with SQLSTATE 55000) in 10 calls")
	}
	if _, err := inventory.Open(ctx, url, nil); !errors.Is(err, inventory.ErrUnavailable) {
		t.Errorf("Open while refused: %v, want ErrUnavailable", err)
	}
	allow()
	if _, err := s.Orders(ctx, []string{"o1"}); err != nil {
		t.Errorf("Orders once allowed again: %v", err)
	}
}

// A buyer's idempotency key belongs to one order: the unique index on
// (user_id, idempotency_key) refuses another order id under it, a
// permanent refusal (the worker decides the rest of its round without it),
// and nothing of that batch is written.
func TestApplyRefusesAHeldIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 5, 0)
	tokens := map[string]int64{"p": 1}
	first := req("a", "p", "u1", 1, 1)
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{first}, Tokens: tokens}); err != nil {
		t.Fatal(err)
	}
	other := req("b", "p", "u1", 1, 2)
	other.IdempotencyKey = first.IdempotencyKey
	_, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{other}, Tokens: tokens})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" || errors.Is(err, inventory.ErrUnavailable) {
		t.Errorf("another order under a held key: got %v, want a unique violation (23505), not ErrUnavailable", err)
	}
	if _, err := s.Order(ctx, "b"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("order b: got %v, want ErrNotFound", err)
	}
	if p, err := s.Product(ctx, "p"); err != nil || p.Stock != 4 || p.Orders.Succeeded != 1 {
		t.Errorf("product: %+v, %v; want stock 4 and one order", p, err)
	}
}

// A call whose context ended is unavailable (retryable), as Apply documents:
// the error is not the server's, and the orders were not refused.
func TestEndedContextIsUnavailable(t *testing.T) {
	t.Parallel()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 1, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("a", "p", "u1", 1, 1)}, Tokens: map[string]int64{"p": 1}})
	if !errors.Is(err, inventory.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with a cancelled context: got %v, want ErrUnavailable wrapping context.Canceled", err)
	}
	if _, err := s.Product(ctx, "p"); !errors.Is(err, inventory.ErrUnavailable) {
		t.Errorf("Product with a cancelled context: got %v, want ErrUnavailable", err)
	}
}

// Many concurrent batches over the same orders, with racing tokens, as when
// asynq redelivers tasks while a paused worker resumes: the stock is never
// oversold, and every order decided has one outcome, the one its batches
// answered.
func TestApplyConcurrentBatchesNeverOversell(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	const stock, orders, writers = 50, 200, 8
	inventorytest.CreateProduct(t, s, "p", stock, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcome := map[string]inventory.Status{}
	for w := range writers {
		wg.Go(func() {
			for start := 0; start < orders; start += 25 {
				var b inventory.Batch
				for i := start; i < start+25; i++ {
					// each writer covers every order, in its own rotation
					j := (i + w*37) % orders
					b.Orders = append(b.Orders, req(fmt.Sprintf("o%03d", j), "p", fmt.Sprintf("u%d", j), 1, j))
				}
				b.Tokens = map[string]int64{"p": int64(start + w)}
				res, err := s.Apply(ctx, b)
				if errors.Is(err, inventory.ErrStaleFence) {
					continue
				}
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				mu.Lock()
				for _, d := range res.Decisions {
					if prev, ok := outcome[d.Order.ID]; ok && prev != d.Order.Status {
						t.Errorf("order %s: decided %s then %s", d.Order.ID, prev, d.Order.Status)
					}
					outcome[d.Order.ID] = d.Order.Status
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(outcome) == 0 {
		t.Fatal("no batch committed: the test checked nothing")
	}
	// What the batches answered is what the database holds, once per order.
	ids := make([]string, orders)
	for j := range ids {
		ids[j] = fmt.Sprintf("o%03d", j)
	}
	stored, err := s.Orders(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(outcome) {
		t.Errorf("%d orders decided in the database, %d in the batches' answers", len(stored), len(outcome))
	}
	for id, o := range stored {
		if outcome[id] != o.Status {
			t.Errorf("order %s: %s in the database, %q in the answers", id, o.Status, outcome[id])
		}
	}
	p, _ := s.Product(ctx, "p")
	var succeeded int64
	for _, st := range outcome {
		if st == inventory.StatusSucceeded {
			succeeded++
		}
	}
	if p.Stock < 0 || p.Sold != succeeded || p.Stock+p.Sold != stock || p.Orders.Succeeded != succeeded {
		t.Errorf("got stock %d sold %d succeeded orders %d (counter %d), want stock+sold=%d and sold=succeeded", p.Stock, p.Sold, succeeded, p.Orders.Succeeded, stock)
	}
}

// The guarantees hold in the schema itself, whatever a buggy writer does.
func TestSchemaRefusesOversellAndOverLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := inventorytest.NewDatabase(t)
	s := inventorytest.Open(t, url, nil)
	inventorytest.CreateProduct(t, s, "p", 1, 1)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, stmt := range []string{
		`UPDATE products SET stock = stock - 2 WHERE id = 'p'`,
		`UPDATE products SET sold = sold - 1 WHERE id = 'p'`,
		`UPDATE products SET per_user_limit = -1 WHERE id = 'p'`,
		`INSERT INTO purchases (product_id, user_id, units, max_units) VALUES ('p', 'u', 2, 1)`,
		// a negative purchase would make room for units past the limit
		`INSERT INTO purchases (product_id, user_id, units, max_units) VALUES ('p', 'u', -1, 1)`,
		`INSERT INTO orders (id, product_id, user_id, quantity, status, created_at) VALUES ('x', 'p', 'u', 0, 'succeeded', now())`,
		`INSERT INTO orders (id, product_id, user_id, quantity, status, created_at) VALUES ('x', 'p', 'u', 1, 'queued', now())`,
		// a keyed restock stores the units it added, at least 1
		`INSERT INTO restocks (product_id, key, quantity) VALUES ('p', 'k', 0)`,
	} {
		// 23514 check_violation: the schema's CHECKs refused it, not some
		// other error (a typo in the statement, a missing column).
		var pgErr *pgconn.PgError
		if _, err := conn.Exec(ctx, stmt); !errors.As(err, &pgErr) || pgErr.Code != "23514" {
			t.Errorf("%s: got %v, want a check violation (23514)", stmt, err)
		}
	}
}

func TestRecordFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 5, 0)
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("done", "p", "u1", 1, 1)}, Tokens: map[string]int64{"p": 1}}); err != nil {
		t.Fatal(err)
	}
	bad := req("bad", "p", "u2", 1, 2)
	ds, err := s.RecordFailed(ctx, []inventory.OrderRequest{bad, req("done", "p", "u1", 1, 1), req("orphan", "gone", "u3", 1, 3)}, "payload rejected")
	if err != nil {
		t.Fatal(err)
	}
	if ds[0].Order.Status != inventory.StatusFailed || ds[0].Order.Reason != "payload rejected" || ds[0].Replay {
		t.Errorf("new failure: got %+v", ds[0])
	}
	// Stored as accepted: created_at is when the API accepted the order.
	if o, err := s.Order(ctx, "bad"); err != nil || !sameOrder(o, ds[0].Order) || !o.CreatedAt.Equal(bad.AcceptedAt) ||
		o.UserID != bad.UserID || o.IdempotencyKey != bad.IdempotencyKey {
		t.Errorf("stored failure: got %+v, %v; want %+v, created at %v", o, err, ds[0].Order, bad.AcceptedAt)
	}
	if ds[1].Order.Status != inventory.StatusSucceeded || !ds[1].Replay {
		t.Errorf("decided order: got %+v, want the stored success as a replay", ds[1])
	}
	if !errors.Is(ds[2].Err, inventory.ErrNotFound) {
		t.Errorf("unknown product: got %v, want ErrNotFound", ds[2].Err)
	}
	p, _ := s.Product(ctx, "p")
	if p.Stock != 4 || p.Orders.Failed != 1 {
		t.Errorf("got stock %d failed %d, want 4 and 1", p.Stock, p.Orders.Failed)
	}
}

// A malformed order's quantity (below 1, above 2^31-1) cannot be stored
// as it is; RecordFailed records it clamped rather than fail the whole call
// and leave the order undecided.
func TestRecordFailedClampsQuantity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 5, 0)
	ds, err := s.RecordFailed(ctx, []inventory.OrderRequest{
		req("zero", "p", "u1", 0, 1), req("negative", "p", "u2", -3, 2), req("huge", "p", "u3", math.MaxInt32+1, 3),
	}, "malformed")
	if err != nil {
		t.Fatalf("RecordFailed: %v", err)
	}
	for i, want := range []int{1, 1, math.MaxInt32} {
		if d := ds[i]; d.Err != nil || d.Order.Status != inventory.StatusFailed || d.Order.Quantity != want {
			t.Errorf("order %d: got %+v, want failed with quantity %d", i, d, want)
		}
	}
	if p, err := s.Product(ctx, "p"); err != nil || p.Stock != 5 || p.Orders.Failed != 3 {
		t.Errorf("product: %+v, %v; want stock 5 and 3 failed", p, err)
	}
}

func TestOrdersReadsManyInOneCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 1, 0)
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("a", "p", "u1", 1, 1), req("b", "p", "u2", 1, 2)}, Tokens: map[string]int64{"p": 1}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Orders(ctx, []string{"a", "b", "queued", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"].Status != inventory.StatusSucceeded || got["b"].Status != inventory.StatusSoldOut || got["b"].UserID != "u2" {
		t.Fatalf("Orders = %+v, want a succeeded and b sold out, nothing else", got)
	}
	if got, err := s.Orders(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("Orders(nil) = %v, %v; want empty", got, err)
	}
}

func TestProductsCRUD(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	p := inventorytest.CreateProduct(t, s, "sku-1", 100, 2)
	if p.Stock != 100 || p.PerUserLimit != 2 || p.Sold != 0 {
		t.Errorf("created: got %+v", p)
	}
	if _, err := s.CreateProduct(ctx, inventory.NewProduct{ID: "sku-1", Stock: 1}); !errors.Is(err, inventory.ErrProductExists) {
		t.Errorf("duplicate: got %v, want ErrProductExists", err)
	}
	// Refused as invalid (a permanent error of the caller's), not left to
	// the schema's CHECKs, whose violation is no sentinel.
	// A limit past the column's int4 failed pgx's encoding, which read as
	// ErrUnavailable: a caller would retry it for ever.
	for _, np := range []inventory.NewProduct{{ID: "", Stock: 1}, {ID: "neg-stock", Stock: -1}, {ID: "neg-limit", Stock: 1, PerUserLimit: -1},
		{ID: "huge-limit", Stock: 1, PerUserLimit: math.MaxInt32 + 1}} {
		if _, err := s.CreateProduct(ctx, np); !errors.Is(err, inventory.ErrInvalid) || errors.Is(err, inventory.ErrUnavailable) {
			t.Errorf("CreateProduct(%+v): got %v, want ErrInvalid (not ErrUnavailable)", np, err)
		}
	}
	if _, err := s.Product(ctx, "nope"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("unknown: got %v, want ErrNotFound", err)
	}
	if _, err := s.Restock(ctx, inventory.RestockRequest{ProductID: "nope", Quantity: 1, Gen: 0, Max: maxStock}); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("restock unknown: got %v, want ErrNotFound", err)
	}
	if _, err := s.Restock(ctx, inventory.RestockRequest{ProductID: "sku-1", Quantity: 0, Gen: 0, Max: maxStock}); !errors.Is(err, inventory.ErrInvalid) {
		t.Errorf("restock 0: got %v, want ErrInvalid", err)
	}
	p, err := s.Restock(ctx, inventory.RestockRequest{ProductID: "sku-1", Quantity: 10, Gen: 3, Max: maxStock})
	if err != nil || p.Stock != 110 || p.RestockGen != 3 {
		t.Errorf("restock: got %+v %v, want stock 110 gen 3", p, err)
	}
	// A restock announced before the one that committed adds nothing.
	for _, gen := range []int64{2, 3} {
		if _, err := s.Restock(ctx, inventory.RestockRequest{ProductID: "sku-1", Quantity: 1, Gen: gen, Max: maxStock}); !errors.Is(err, inventory.ErrRestockSuperseded) {
			t.Errorf("restock at generation %d after 3: got %v, want ErrRestockSuperseded", gen, err)
		}
	}
	if p, _ = s.Product(ctx, "sku-1"); p.Stock != 110 || p.RestockGen != 3 {
		t.Errorf("after superseded restocks: got stock %d gen %d, want 110 and 3", p.Stock, p.RestockGen)
	}
	// The bound on stock is checked by the UPDATE itself: two restocks that
	// each fit alone cannot pass it together.
	if _, err := s.Restock(ctx, inventory.RestockRequest{ProductID: "sku-1", Quantity: 11, Gen: 4, Max: 120}); !errors.Is(err, inventory.ErrInvalid) {
		t.Errorf("restock past the bound: got %v, want ErrInvalid", err)
	}
	if p, err = s.Restock(ctx, inventory.RestockRequest{ProductID: "sku-1", Quantity: 10, Gen: 4, Max: 120}); err != nil || p.Stock != 120 {
		t.Errorf("restock up to the bound: got %+v %v, want stock 120", p, err)
	}
	// Superseded wins over the bound: a restock whose generation is no
	// longer newest adds nothing whatever its quantity.
	if _, err := s.Restock(ctx, inventory.RestockRequest{ProductID: "sku-1", Quantity: 1, Gen: 4, Max: 120}); !errors.Is(err, inventory.ErrRestockSuperseded) {
		t.Errorf("restock at the stored generation, past the bound: got %v, want ErrRestockSuperseded", err)
	}
	if p, _ = s.Product(ctx, "sku-1"); p.Stock != 120 || p.RestockGen != 4 {
		t.Errorf("after the bounded restocks: got stock %d gen %d, want 120 and 4", p.Stock, p.RestockGen)
	}
	// With an idempotency key, a restock sent again adds nothing, whatever
	// its generation.
	keyed := inventory.RestockRequest{ProductID: "sku-1", Quantity: 5, Gen: 10, Max: maxStock, Key: "r-1"}
	if p, err = s.Restock(ctx, keyed); err != nil || p.Stock != 125 {
		t.Errorf("keyed restock: got %+v %v, want stock 125", p, err)
	}
	keyed.Gen = 11
	// A final answer, not a database fault to retry.
	if _, err := s.Restock(ctx, keyed); !errors.Is(err, inventory.ErrRestockReplayed) || errors.Is(err, inventory.ErrUnavailable) {
		t.Errorf("keyed restock sent again: got %v, want ErrRestockReplayed and not ErrUnavailable", err)
	}
	if q, err := s.RestockQuantity(ctx, "sku-1", "r-1"); err != nil || q != 5 {
		t.Errorf("RestockQuantity(r-1) = %d, %v; want 5", q, err)
	}
	if _, err := s.RestockQuantity(ctx, "sku-1", "r-2"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("RestockQuantity(r-2) = %v, want ErrNotFound", err)
	}
	if p, _ = s.Product(ctx, "sku-1"); p.Stock != 125 || p.RestockGen != 10 {
		t.Errorf("after the keyed restocks: got stock %d gen %d, want 125 and 10 (the replay rolled back)", p.Stock, p.RestockGen)
	}
	// A failed restock's generation is stored without stock, never backwards.
	for _, tc := range []struct{ gen, want int64 }{{15, 15}, {14, 15}, {15, 15}} {
		if err := s.AdvanceRestockGen(ctx, "sku-1", tc.gen); err != nil {
			t.Errorf("AdvanceRestockGen(%d): %v", tc.gen, err)
		}
		if p, _ = s.Product(ctx, "sku-1"); p.Stock != 125 || p.RestockGen != tc.want {
			t.Errorf("AdvanceRestockGen(%d): got stock %d gen %d, want 125 and %d", tc.gen, p.Stock, p.RestockGen, tc.want)
		}
	}
	if err := s.AdvanceRestockGen(ctx, "nope", 1); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("AdvanceRestockGen of an unknown product: got %v, want ErrNotFound", err)
	}
	list, err := s.Products(ctx, "", 10)
	if err != nil || len(list) != 1 || list[0].ID != "sku-1" {
		t.Errorf("list: got %v %v", list, err)
	}
}

// Products pages through the products by id: a page holds at most limit
// products and starts after the last id of the one before, so no product
// is listed twice or skipped.
func TestProductsPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	for _, id := range []string{"c", "a", "b"} {
		inventorytest.CreateProduct(t, s, id, 1, 0)
	}
	var got []string
	after := ""
	for range 3 {
		page, err := s.Products(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, p := range page {
			got = append(got, p.ID)
		}
		got = append(got, "|")
		after = page[len(page)-1].ID
	}
	if fmt.Sprint(got) != "[a b | c |]" {
		t.Errorf("pages of 2: got %v, want [a b | c |]", got)
	}
}

// Two migrations at once against a database that does not exist yet: both
// succeed, and a third run has nothing to do.
func TestMigrateCreatesDatabaseAndIsSafeConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := testenv.NewDatabase(t) // only to get a unique name dropped at cleanup
	u, _ := url.Parse(base)
	dropURL := *u
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE "+pgx.Identifier{u.Path[1:]}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = inventory.Migrate(ctx, dropURL.String()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrate %d: %v", i, err)
		}
	}
	res, err := inventory.Migrate(ctx, dropURL.String())
	if err != nil || len(res) != 0 {
		t.Errorf("third migrate: got %v %v, want nothing applied", res, err)
	}
}

// A URL may carry pool settings for Open (pool_max_conns); Migrate accepts
// the same URL rather than sending them to the server.
func TestMigrateAcceptsPoolSettings(t *testing.T) {
	t.Parallel()
	base := testenv.NewDatabase(t)
	u, _ := url.Parse(base)
	q := u.Query()
	q.Set("pool_max_conns", "3")
	u.RawQuery = q.Encode()
	if _, err := inventory.Migrate(context.Background(), u.String()); err != nil {
		t.Fatalf("Migrate with pool_max_conns: %v", err)
	}
	s := inventorytest.Open(t, u.String(), nil)
	if got := s.PoolStats().MaxConns; got != 3 {
		t.Errorf("pool size: got %d, want 3 from the URL", got)
	}
}

// Options.MaxConns sizes the pool (default 10) when the URL does not.
func TestOpenSizesThePool(t *testing.T) {
	t.Parallel()
	url := inventorytest.NewDatabase(t)
	for _, tc := range []struct {
		opts *inventory.Options
		want int32
	}{
		{nil, 10},
		{&inventory.Options{}, 10},
		{&inventory.Options{MaxConns: 3}, 3},
	} {
		if got := inventorytest.Open(t, url, tc.opts).PoolStats().MaxConns; got != tc.want {
			t.Errorf("Open with %+v: pool size %d, want %d", tc.opts, got, tc.want)
		}
	}
}

// RecordFailed and Apply on the same orders at the same time (a task given
// up on while its batch commits): one outcome each, and never a deadlock,
// since both take the product row before the order row.
func TestRecordFailedRacingApply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 1000, 0)
	const rounds = 100
	for i := range rounds {
		id := fmt.Sprintf("o%03d", i)
		var wg sync.WaitGroup
		var applyErr, failErr error
		wg.Go(func() {
			_, applyErr = s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req(id, "p", "u"+id, 1, i)}, Tokens: map[string]int64{"p": int64(i + 1)}})
		})
		wg.Go(func() {
			_, failErr = s.RecordFailed(ctx, []inventory.OrderRequest{req(id, "p", "u"+id, 1, i)}, "gave up")
		})
		wg.Wait()
		if applyErr != nil || failErr != nil {
			t.Fatalf("round %d: Apply: %v; RecordFailed: %v; want both to succeed", i, applyErr, failErr)
		}
	}
	p, err := s.Product(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Orders.Succeeded + p.Orders.Failed; got != rounds || p.Sold != p.Orders.Succeeded || p.Stock+p.Sold != 1000 {
		t.Errorf("after %d rounds: %+v; want one outcome per order and stock+sold = 1000", rounds, p)
	}
}

// A server refuses to start on a database that lacks this build's
// migrations, instead of reporting ready and failing every request.
func TestCheckSchema(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prepare func(t *testing.T, url string)
		want    error
	}{
		{"never migrated", func(*testing.T, string) {}, inventory.ErrSchemaOutdated},
		{"migrated", func(t *testing.T, url string) { inventorytest.Migrate(t, url) }, nil},
		{"a migration behind", func(t *testing.T, url string) {
			inventorytest.Migrate(t, url)
			conn, err := pgx.Connect(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			if _, err := conn.Exec(context.Background(),
				`DELETE FROM goose_db_version WHERE version_id = (SELECT max(version_id) FROM goose_db_version)`); err != nil {
				t.Fatal(err)
			}
		}, inventory.ErrSchemaOutdated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := testenv.NewDatabase(t)
			tt.prepare(t, url)
			s := inventorytest.Open(t, url, nil)
			err := s.CheckSchema(context.Background())
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("CheckSchema = %v, want %v", err, tt.want)
			}
			if err := s.Ping(context.Background()); err != nil {
				t.Fatalf("the store after CheckSchema: %v", err)
			}
		})
	}
}

// Orders sent without an idempotency key store none (NULL): the unique
// index on (user_id, idempotency_key) must not make a buyer's second
// keyless order collide with the first, in Apply or in RecordFailed.
func TestOrdersWithoutIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := inventorytest.NewStore(t)
	inventorytest.CreateProduct(t, s, "p", 10, 0)
	keyless := func(id string, seq int) inventory.OrderRequest {
		o := req(id, "p", "u1", 1, seq)
		o.IdempotencyKey = ""
		return o
	}
	for i, id := range []string{"a", "b"} {
		res, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{keyless(id, i)}, Tokens: map[string]int64{"p": 1}})
		if err != nil {
			t.Fatalf("Apply of keyless order %s: %v", id, err)
		}
		if d := res.Decisions[0]; d.Order.Status != inventory.StatusSucceeded || d.Order.IdempotencyKey != "" {
			t.Errorf("order %s: got %+v, want succeeded without a key", id, d.Order)
		}
	}
	ds, err := s.RecordFailed(ctx, []inventory.OrderRequest{keyless("c", 3), keyless("d", 4)}, "gave up")
	if err != nil {
		t.Fatalf("RecordFailed of keyless orders: %v", err)
	}
	for _, d := range ds {
		if d.Err != nil || d.Replay || d.Order.Status != inventory.StatusFailed || d.Order.IdempotencyKey != "" {
			t.Errorf("failed order %s: got %+v, want recorded failed without a key", d.Order.ID, d)
		}
	}
	got, err := s.Orders(ctx, []string{"a", "b", "c", "d"})
	if err != nil || len(got) != 4 {
		t.Fatalf("Orders = %v, %v; want all four", got, err)
	}
}
