package inventory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// OrderRequest is an accepted order waiting for its outcome.
type OrderRequest struct {
	ID             string
	ProductID      string
	UserID         string
	Quantity       int
	IdempotencyKey string
	AcceptedAt     time.Time
}

// Batch is a set of orders to decide in one transaction. Tokens holds, for
// every product of the batch, the fencing token of the lock the caller
// holds on it.
type Batch struct {
	Orders []OrderRequest
	Tokens map[string]int64
}

// Decision is the outcome of one order of a batch.
type Decision struct {
	Order Order
	// Replay is true when the order had been decided before this batch (a
	// redelivered task), or earlier in it (a second copy of its id): Order
	// is that outcome, and this copy changed nothing.
	Replay bool
	// Err is ErrNotFound when the order's product does not exist; then the
	// order was not recorded.
	Err error
}

// ProductState is a product's stock right after the batch committed.
type ProductState struct {
	Stock      int64
	RestockGen int64
}

// Result is what [Store.Apply] decided.
type Result struct {
	Decisions []Decision              // one per input order, same order
	Products  map[string]ProductState // every existing product of the batch
}

// Apply decides every order of the batch in one transaction: per product,
// orders are served by acceptance time; an order succeeds when the stock
// left covers its quantity and the buyer stays within the product's per-user
// limit, and is otherwise sold_out or limit_exceeded. Stock, sold units,
// purchases and the order rows commit together, so each order's effect
// happens exactly once; an order decided earlier is returned as a replay.
//
// The product rows are locked (FOR UPDATE, in id order) for the whole
// transaction, and the final UPDATE only applies where the stored fence is
// not newer than the batch's token and the stock covers the decrement.
// Apply returns a [*StaleFenceError] (matching [ErrStaleFence]) for each
// product a newer token has written, joined ([errors.Join]; [StaleFences]
// lists them), and nothing is written then. It returns [ErrUnavailable]
// for retryable database faults, the context's end among them: then the
// batch may still have committed (COMMIT goes out with the writes, and a
// context cancelled after that cannot call it back), which a later Apply
// of the same orders returns as replays. Either way each order's effect
// happens at most once.
func (s *Store) Apply(ctx context.Context, b Batch) (*Result, error) {
	if len(b.Orders) == 0 {
		return &Result{Products: map[string]ProductState{}}, nil
	}
	for _, o := range b.Orders {
		if o.ID == "" || o.Quantity < 1 || o.Quantity > math.MaxInt32 {
			return nil, fmt.Errorf("%w: order %q quantity %d", ErrInvalid, o.ID, o.Quantity)
		}
		if _, ok := b.Tokens[o.ProductID]; !ok {
			return nil, fmt.Errorf("%w: no fencing token for product %q", ErrInvalid, o.ProductID)
		}
	}
	// First assume that no order of the batch was decided before (a
	// redelivery is rare): that spares reading the orders table. If the
	// insert meets an order that exists, the transaction is rolled back and
	// run again, this time reading which orders were decided.
	res, err := s.applyTx(ctx, b, false)
	if errors.Is(err, errReplayed) {
		res, err = s.applyTx(ctx, b, true)
	}
	if err != nil {
		var stale *StaleFenceError
		if errors.As(err, &stale) || errors.Is(err, ErrInvalid) {
			return nil, err
		}
		return nil, fmt.Errorf("apply batch of %d: %w", len(b.Orders), translate(err))
	}
	return res, nil
}

// applyTx runs apply on a connection of its own and rolls back whatever it
// left open. apply opens and ends the transaction itself (see there), so
// the connection is used directly rather than through pgx.BeginFunc.
func (s *Store) applyTx(ctx context.Context, b Batch, readDecided bool) (*Result, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// pgxpool closes, rather than reuses, a connection released while in a
	// transaction: the rollback below is for a clean reuse, not for safety.
	defer conn.Release()
	res, err := apply(ctx, conn.Conn(), b, readDecided)
	if err != nil && !conn.Conn().IsClosed() && conn.Conn().PgConn().TxStatus() != 'I' {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = conn.Exec(rctx, "ROLLBACK")
		cancel()
	}
	return res, err
}

type productRow struct {
	stock, fence, restockGen int64
	limit                    int
}

type userKey struct{ product, user string }

// errReplayed aborts an optimistic apply that met an already decided order.
var errReplayed = errors.New("inventory: batch holds decided orders")

// Codes of flashsale_assert (migration 00003) that apply's statements raise.
const (
	assertCode     = "FS001"
	assertReplayed = "replayed"      // an order of the batch exists already
	assertStock    = "stock_changed" // a stock update matched fewer products
)

// apply decides the batch in one transaction on conn, in two round trips:
// BEGIN with the reads (products locked FOR UPDATE, purchases, and with
// readDecided the orders decided before), then the writes with COMMIT.
// Each pgx batch is one pipeline ending in one Sync; an explicit BEGIN
// keeps the transaction open across the first one. pgx.BeginFunc would add
// a round trip for BEGIN and one for COMMIT, and the product's lock is held
// across all of them: on a loaded machine each round trip waits for two
// processes to be scheduled, and the lock's hold time, not the work, bounds
// a hot product. The checks that must hold before COMMIT run inside the
// write statements (flashsale_assert): a failing one aborts the
// transaction and PostgreSQL skips the COMMIT queued after it. Measured
// with BenchmarkApply, old and new alternated: one order 1.47-1.65 ms in
// four round trips, 1.14-1.28 ms in two (BENCHMARKS.md).
//
// Without readDecided, apply assumes no order was decided before and
// returns errReplayed (having committed nothing) if one was. On error the
// transaction may be left open (or aborted); the caller rolls it back.
func apply(ctx context.Context, tx *pgx.Conn, b Batch, readDecided bool) (*Result, error) {
	productIDs := make([]string, 0, len(b.Tokens))
	orderIDs := make([]string, 0, len(b.Orders))
	pairP := make([]string, 0, len(b.Orders))
	pairU := make([]string, 0, len(b.Orders))
	seenProduct := map[string]bool{}
	for _, o := range b.Orders {
		if !seenProduct[o.ProductID] {
			seenProduct[o.ProductID] = true
			productIDs = append(productIDs, o.ProductID)
		}
		orderIDs = append(orderIDs, o.ID)
		pairP = append(pairP, o.ProductID)
		pairU = append(pairU, o.UserID)
	}
	slices.Sort(productIDs) // lock rows in one global order: no deadlocks between batches

	// Round trip 1: begin, lock the products, read what was decided and
	// bought.
	rb := &pgx.Batch{}
	rb.Queue(`BEGIN`)
	rb.Queue(`SELECT now()`)
	rb.Queue(`SELECT id, stock, per_user_limit, fence, restock_gen FROM products
		WHERE id = ANY($1) ORDER BY id FOR UPDATE`, productIDs)
	if readDecided {
		rb.Queue(`SELECT `+orderColumns+` FROM orders WHERE id = ANY($1)`, orderIDs)
	}
	rb.Queue(`SELECT p.product_id, p.user_id, p.units FROM purchases p
		JOIN unnest($1::text[], $2::text[]) AS q(product_id, user_id)
		ON p.product_id = q.product_id AND p.user_id = q.user_id`, pairP, pairU)
	br := tx.SendBatch(ctx, rb)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return nil, err
	}
	var now time.Time
	if err := br.QueryRow().Scan(&now); err != nil {
		br.Close()
		return nil, err
	}
	products := make(map[string]*productRow, len(productIDs))
	rows, _ := br.Query()
	for rows.Next() {
		var id string
		p := &productRow{}
		if err := rows.Scan(&id, &p.stock, &p.limit, &p.fence, &p.restockGen); err != nil {
			rows.Close()
			br.Close()
			return nil, err
		}
		products[id] = p
	}
	if err := rows.Err(); err != nil {
		br.Close()
		return nil, err
	}
	decided := map[string]Order{}
	if readDecided {
		rows, _ = br.Query()
		for rows.Next() {
			o, err := scanOrder(rows)
			if err != nil {
				rows.Close()
				br.Close()
				return nil, err
			}
			decided[o.ID] = o
		}
		if err := rows.Err(); err != nil {
			br.Close()
			return nil, err
		}
	}
	bought := map[userKey]int{}
	rows, _ = br.Query()
	for rows.Next() {
		var k userKey
		var units int
		if err := rows.Scan(&k.product, &k.user, &units); err != nil {
			rows.Close()
			br.Close()
			return nil, err
		}
		bought[k] = units
	}
	if err := rows.Err(); err != nil {
		br.Close()
		return nil, err
	}
	if err := br.Close(); err != nil {
		return nil, err
	}
	// Every stale product at once: a round with several (lock nodes that
	// lost their counters) is repaired in one go, not one product a round.
	var stale []error
	for _, id := range productIDs {
		if p, ok := products[id]; ok && p.fence > b.Tokens[id] {
			stale = append(stale, &StaleFenceError{ProductID: id, Token: b.Tokens[id], Fence: p.fence})
		}
	}
	if len(stale) > 0 {
		return nil, errors.Join(stale...)
	}

	// Decide, product by product, in acceptance order.
	res := &Result{Decisions: make([]Decision, len(b.Orders)), Products: make(map[string]ProductState, len(products))}
	idx := make([]int, len(b.Orders))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(x, y int) int {
		a, c := b.Orders[x], b.Orders[y]
		return cmp.Or(a.AcceptedAt.Compare(c.AcceptedAt), cmp.Compare(a.ID, c.ID))
	})
	type delta struct{ units, succeeded, soldOut, limited int64 }
	deltas := map[string]*delta{}
	var ins insertOrders
	var buys []purchaseDelta
	buyIdx := map[userKey]int{}
	for _, i := range idx {
		o := b.Orders[i]
		if prev, ok := decided[o.ID]; ok {
			res.Decisions[i] = Decision{Order: prev, Replay: true}
			continue
		}
		p, ok := products[o.ProductID]
		if !ok {
			res.Decisions[i] = Decision{Err: fmt.Errorf("product %q: %w", o.ProductID, ErrNotFound)}
			continue
		}
		d := deltas[o.ProductID]
		if d == nil {
			d = &delta{}
			deltas[o.ProductID] = d
		}
		k := userKey{o.ProductID, o.UserID}
		status := StatusSucceeded
		switch {
		case int64(o.Quantity) > p.stock:
			status = StatusSoldOut
			d.soldOut++
		case p.limit > 0 && bought[k]+o.Quantity > p.limit:
			status = StatusLimitExceeded
			d.limited++
		default:
			p.stock -= int64(o.Quantity)
			d.units += int64(o.Quantity)
			d.succeeded++
			if p.limit > 0 {
				bought[k] += o.Quantity
				if j, ok := buyIdx[k]; ok {
					buys[j].units += o.Quantity
				} else {
					buyIdx[k] = len(buys)
					buys = append(buys, purchaseDelta{k, o.Quantity, p.limit})
				}
			}
		}
		order := Order{
			ID: o.ID, ProductID: o.ProductID, UserID: o.UserID, Quantity: o.Quantity,
			IdempotencyKey: o.IdempotencyKey, Status: status, Fence: b.Tokens[o.ProductID],
			CreatedAt: o.AcceptedAt, UpdatedAt: now,
		}
		decided[o.ID] = order // a second copy of the id in this batch is a replay
		res.Decisions[i] = Decision{Order: order}
		ins.add(order)
	}
	for id, p := range products {
		res.Products[id] = ProductState{Stock: p.stock, RestockGen: p.restockGen}
	}
	if len(ins.id) == 0 {
		// Every order was a replay: nothing to write; end the transaction
		// (and release the row locks).
		if err := commit(ctx, tx); err != nil {
			return nil, err
		}
		return res, nil
	}

	// Round trip 2: write orders, purchases and stock, and commit.
	wb := &pgx.Batch{}
	// ON CONFLICT DO NOTHING: an order decided meanwhile (or before, in an
	// optimistic run) is not inserted, and the assertion on the count
	// aborts the transaction: the stock and purchases below would count it
	// again.
	wb.Queue(`WITH ins AS (
			INSERT INTO orders (id, product_id, user_id, quantity, idempotency_key, status, fence, created_at, updated_at)
			SELECT id, product_id, user_id, quantity, NULLIF(idem, ''), status, fence, created_at, $9
			FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::bigint[], $8::timestamptz[])
			AS t(id, product_id, user_id, quantity, idem, status, fence, created_at)
			ON CONFLICT (id) DO NOTHING
			RETURNING 1
		)
		SELECT flashsale_assert(count(*) = $10, '`+assertReplayed+`') FROM ins`,
		ins.id, ins.product, ins.user, ins.quantity, ins.idem, ins.status, ins.fence, ins.created, now, len(ins.id))
	if len(buys) > 0 {
		var bp, bu []string
		var units, maxUnits []int
		for _, x := range buys {
			bp, bu = append(bp, x.key.product), append(bu, x.key.user)
			units, maxUnits = append(units, x.units), append(maxUnits, x.max)
		}
		// The CHECK (units <= max_units) refuses an over-limit purchase even
		// if the decision above were wrong.
		wb.Queue(`INSERT INTO purchases (product_id, user_id, units, max_units)
			SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[])
			ON CONFLICT (product_id, user_id) DO UPDATE
			SET units = purchases.units + EXCLUDED.units, max_units = EXCLUDED.max_units`, bp, bu, units, maxUnits)
	}
	var uid []string
	var units, tokens, succ, sold, lim []int64
	for id, d := range deltas {
		uid = append(uid, id)
		units, tokens = append(units, d.units), append(tokens, b.Tokens[id])
		succ, sold, lim = append(succ, d.succeeded), append(sold, d.soldOut), append(lim, d.limited)
	}
	// Compare-and-advance: the fence and the stock condition sit in the same
	// statement as the decrement. With the rows locked FOR UPDATE it cannot
	// match fewer products than it names; if it does, the assertion rolls
	// back rather than record outcomes the stock does not match.
	wb.Queue(`WITH upd AS (
			UPDATE products p SET
				stock = p.stock - d.units, sold = p.sold + d.units, fence = d.token,
				orders_succeeded = p.orders_succeeded + d.succ,
				orders_sold_out = p.orders_sold_out + d.sold,
				orders_limit_exceeded = p.orders_limit_exceeded + d.lim,
				updated_at = $7
			FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
				AS d(id, units, token, succ, sold, lim)
			WHERE p.id = d.id AND p.fence <= d.token AND p.stock >= d.units
			RETURNING 1
		)
		SELECT flashsale_assert(count(*) = $8, '`+assertStock+`') FROM upd`,
		uid, units, tokens, succ, sold, lim, now, len(uid))
	wb.Queue(`COMMIT`)
	br = tx.SendBatch(ctx, wb)
	if _, err := br.Exec(); err != nil {
		br.Close()
		if isAssert(err, assertReplayed) {
			if !readDecided {
				return nil, errReplayed
			}
			// Cannot happen with the orders read under the product row locks.
			return nil, fmt.Errorf("inventory: an order of the batch was decided meanwhile: %w", err)
		}
		return nil, err
	}
	if len(buys) > 0 {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return nil, err
		}
	}
	if _, err := br.Exec(); err != nil {
		br.Close()
		return nil, err
	}
	tag, err := br.Exec()
	if err != nil {
		br.Close()
		return nil, err
	}
	if err := br.Close(); err != nil {
		return nil, err
	}
	if tag.String() != "COMMIT" {
		return nil, fmt.Errorf("inventory: the batch's transaction did not commit (%s)", tag)
	}
	return res, nil
}

// commit ends the transaction open on conn.
func commit(ctx context.Context, conn *pgx.Conn) error {
	tag, err := conn.Exec(ctx, `COMMIT`)
	if err != nil {
		return err
	}
	if tag.String() != "COMMIT" {
		return fmt.Errorf("inventory: the transaction did not commit (%s)", tag)
	}
	return nil
}

// isAssert reports whether err is flashsale_assert's failure with code.
func isAssert(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == assertCode && pgErr.Message == code
}

type purchaseDelta struct {
	key   userKey
	units int
	max   int
}

// insertOrders holds the columns of a multi-row INSERT ... SELECT unnest(...).
type insertOrders struct {
	id, product, user, idem, status []string
	quantity                        []int
	fence                           []int64
	created                         []time.Time
}

func (c *insertOrders) add(o Order) {
	c.id = append(c.id, o.ID)
	c.product = append(c.product, o.ProductID)
	c.user = append(c.user, o.UserID)
	c.quantity = append(c.quantity, o.Quantity)
	c.idem = append(c.idem, o.IdempotencyKey)
	c.status = append(c.status, string(o.Status))
	c.fence = append(c.fence, o.Fence)
	c.created = append(c.created, o.CreatedAt)
}

// RecordFailed records the final outcome failed, with reason, for orders
// that cannot be decided (a permanent error). Stock is not touched. An order
// that already has an outcome keeps it and comes back as a replay; an order
// of an unknown product comes back with Err set to ErrNotFound. A quantity
// the orders table cannot hold (a malformed order's: below 1, or above
// 2^31-1) is recorded clamped to 1 to 2^31-1: the order failed whatever
// its quantity, and its outcome must be recordable.
func (s *Store) RecordFailed(ctx context.Context, orders []OrderRequest, reason string) ([]Decision, error) {
	out := make([]Decision, len(orders))
	products := make([]string, 0, len(orders))
	for _, o := range orders {
		products = append(products, o.ProductID)
	}
	slices.Sort(products)
	products = slices.Compact(products)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The product rows first, in id order, as Apply takes them: a
		// batch deciding one of these orders at the same time then waits
		// for this transaction (or this one for it) instead of each
		// holding what the other needs (Apply: product row, then order
		// row; the insert below alone: order row, then product row).
		if _, err := tx.Exec(ctx, `SELECT 1 FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE`, products); err != nil {
			return err
		}
		for i, o := range orders {
			var ord Order
			ord, err := scanOrder(tx.QueryRow(ctx, `
				WITH ins AS (
					INSERT INTO orders (id, product_id, user_id, quantity, idempotency_key, status, reason, created_at)
					SELECT $1, $2, $3, $4, NULLIF($5, ''), 'failed', $6, $7
					WHERE EXISTS (SELECT 1 FROM products WHERE id = $2)
					ON CONFLICT (id) DO NOTHING
					RETURNING `+orderColumns+`
				), bump AS (
					UPDATE products SET orders_failed = orders_failed + 1
					WHERE id = $2 AND EXISTS (SELECT 1 FROM ins)
				)
				SELECT * FROM ins`,
				o.ID, o.ProductID, o.UserID, min(max(o.Quantity, 1), math.MaxInt32), o.IdempotencyKey, reason, o.AcceptedAt))
			if err == nil {
				out[i] = Decision{Order: ord}
				continue
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			ord, err = scanOrder(tx.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1`, o.ID))
			switch {
			case err == nil:
				out[i] = Decision{Order: ord, Replay: true}
			case errors.Is(err, pgx.ErrNoRows):
				out[i] = Decision{Err: fmt.Errorf("product %q: %w", o.ProductID, ErrNotFound)}
			default:
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record %d failed orders: %w", len(orders), translate(err))
	}
	return out, nil
}
