package inventory

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashsale/flashsale/internal/redact"
)

// Store reads and writes products and orders. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// Options tunes the connection pool. The zero value (or nil) uses the
// defaults; settings in the database URL (pool_max_conns=...) win over them.
type Options struct {
	// MaxConns bounds the pool; default 10.
	MaxConns int32
	// IdleInTransactionTimeout makes PostgreSQL end a session that sits in
	// an open transaction longer than this, releasing its row locks. Workers
	// set it to the lock TTL, so a paused worker cannot hold a product row
	// hostage past its lock. 0 = server default (off).
	IdleInTransactionTimeout time.Duration
}

// Open connects a pool to databaseURL and checks the connection.
func Open(ctx context.Context, databaseURL string, opts *Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("%w: database URL: %v", ErrInvalid, err)
	}
	if opts == nil {
		opts = &Options{}
	}
	if !strings.Contains(databaseURL, "pool_max_conns") {
		cfg.MaxConns = 10
		if opts.MaxConns > 0 {
			cfg.MaxConns = opts.MaxConns
		}
	}
	// Plan every statement for its actual arguments. With the default
	// (generic plans after five runs of a prepared statement), the plan of
	// "orders.id = ANY($1)" chosen while the table was small stays a
	// sequential scan as it grows: a batch of 64 orders took 12-18ms instead
	// of 2ms at 20k rows (BenchmarkApply). Planning costs tens of
	// microseconds per statement.
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	if opts.IdleInTransactionTimeout > 0 {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = fmt.Sprint(opts.IdleInTransactionTimeout.Milliseconds())
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("inventory: open %s: %w", redact.URL(databaseURL), translate(err))
	}
	s := &Store{pool: pool}
	if err := s.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", translate(err))
	}
	return nil
}

// PoolStats is a snapshot of the connection pool, for metrics.
type PoolStats struct {
	TotalConns, IdleConns, AcquiredConns, MaxConns int32
	AcquireCount, EmptyAcquireCount                int64
	AcquireDuration                                time.Duration
}

// PoolStats returns the pool's figures.
func (s *Store) PoolStats() PoolStats {
	st := s.pool.Stat()
	return PoolStats{
		TotalConns: st.TotalConns(), IdleConns: st.IdleConns(), AcquiredConns: st.AcquiredConns(),
		MaxConns: st.MaxConns(), AcquireCount: st.AcquireCount(), EmptyAcquireCount: st.EmptyAcquireCount(),
		AcquireDuration: st.AcquireDuration(),
	}
}

const productColumns = `id, name, stock, sold, per_user_limit, fence, restock_gen,
	orders_succeeded, orders_sold_out, orders_limit_exceeded, orders_failed, created_at, updated_at`

func scanProduct(row pgx.Row) (Product, error) {
	var p Product
	err := row.Scan(&p.ID, &p.Name, &p.Stock, &p.Sold, &p.PerUserLimit, &p.Fence, &p.RestockGen,
		&p.Orders.Succeeded, &p.Orders.SoldOut, &p.Orders.LimitExceeded, &p.Orders.Failed, &p.CreatedAt, &p.UpdatedAt)
	return p, err
}

// CreateProduct inserts a product. It returns [ErrProductExists] when the id
// is taken and [ErrInvalid] for an empty id, a negative stock, or a limit
// below 0 or above 2^31-1 (what the per_user_limit column holds).
func (s *Store) CreateProduct(ctx context.Context, np NewProduct) (Product, error) {
	if np.ID == "" || np.Stock < 0 || np.PerUserLimit < 0 || np.PerUserLimit > math.MaxInt32 {
		return Product{}, fmt.Errorf("%w: product %q stock %d limit %d", ErrInvalid, np.ID, np.Stock, np.PerUserLimit)
	}
	p, err := scanProduct(s.pool.QueryRow(ctx, `
		INSERT INTO products (id, name, stock, per_user_limit) VALUES ($1, $2, $3, $4)
		RETURNING `+productColumns, np.ID, np.Name, np.Stock, np.PerUserLimit))
	if isUniqueViolation(err) {
		return Product{}, fmt.Errorf("create product %q: %w", np.ID, ErrProductExists)
	}
	if err != nil {
		return Product{}, fmt.Errorf("create product %q: %w", np.ID, translate(err))
	}
	return p, nil
}

// Product returns one product, or [ErrNotFound].
func (s *Store) Product(ctx context.Context, id string) (Product, error) {
	p, err := scanProduct(s.pool.QueryRow(ctx, `SELECT `+productColumns+` FROM products WHERE id = $1`, id))
	if err != nil {
		return Product{}, fmt.Errorf("product %q: %w", id, translate(err))
	}
	return p, nil
}

// RestockGen returns the generation of product id's last restock (0 if it
// was never restocked); ErrNotFound if there is no such product.
func (s *Store) RestockGen(ctx context.Context, id string) (int64, error) {
	var gen int64
	if err := s.pool.QueryRow(ctx, `SELECT restock_gen FROM products WHERE id = $1`, id).Scan(&gen); err != nil {
		return 0, fmt.Errorf("restock generation of %q: %w", id, translate(err))
	}
	return gen, nil
}

// Products lists up to limit products ordered by id, starting after the id
// `after` ("" = from the start).
func (s *Store) Products(ctx context.Context, after string, limit int) ([]Product, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+productColumns+` FROM products WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", translate(err))
	}
	defer rows.Close()
	var out []Product
	for rows.Next() {
		p, err := scanProduct(rows)
		if err != nil {
			return nil, fmt.Errorf("list products: %w", translate(err))
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list products: %w", translate(err))
	}
	return out, nil
}

// RestockRequest is one restock for [Store.Restock].
type RestockRequest struct {
	ProductID string
	// Quantity is the units to add, 1 to Max.
	Quantity int64
	// Gen is the restock generation to store; the stored one must be older.
	Gen int64
	// Max bounds the stock after the restock.
	Max int64
	// Key, if not empty, is the restock's idempotency key: it is stored
	// with the stock, in the same transaction, and a restock whose key is
	// already stored for the product adds nothing ([ErrRestockReplayed]).
	Key string
}

// Restock adds r.Quantity units to a product's stock and stores r.Gen as
// its restock generation, provided the stored one is older and the stock
// stays at most r.Max. It returns [ErrNotFound] for an unknown product,
// [ErrInvalid] for a quantity below 1 or a stock that would pass the bound
// (both checked in the UPDATE, so concurrent restocks cannot pass it
// together), [ErrRestockSuperseded] (nothing added) when the stored
// generation is already r.Gen or newer, and [ErrRestockReplayed] (nothing
// added) when r.Key was stored by an earlier restock of the product.
//
// The generation is what keeps the sold-out flag honest (package soldout):
// a worker flags a product at the generation it read with stock 0, and a
// flag is refused once a newer restock was announced. If a restock announced
// earlier could still add stock after a later one committed, a flag set in
// between, at the later generation, would stay set over that stock.
//
// Restocking needs no lock or fencing token: adding stock is safe whatever
// else runs, and the row lock orders it with concurrent sales (and two
// restocks with one key: the second finds the first's key).
func (s *Store) Restock(ctx context.Context, r RestockRequest) (Product, error) {
	if r.Quantity < 1 || r.Quantity > r.Max {
		return Product{}, fmt.Errorf("%w: restock quantity %d", ErrInvalid, r.Quantity)
	}
	const update = `
		UPDATE products SET stock = stock + $2, restock_gen = $3, updated_at = now()
		WHERE id = $1 AND restock_gen < $3 AND stock <= $4::bigint - $2::bigint RETURNING ` + productColumns
	var p Product
	var err error
	if r.Key == "" {
		p, err = scanProduct(s.pool.QueryRow(ctx, update, r.ProductID, r.Quantity, r.Gen, r.Max))
	} else {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var err error
			if p, err = scanProduct(tx.QueryRow(ctx, update, r.ProductID, r.Quantity, r.Gen, r.Max)); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `INSERT INTO restocks (product_id, key, quantity) VALUES ($1, $2, $3)
				ON CONFLICT (product_id, key) DO NOTHING`, r.ProductID, r.Key, r.Quantity)
			switch {
			case err != nil:
				return err
			case tag.RowsAffected() == 0:
				return ErrRestockReplayed // rolls the stock back
			}
			return nil
		})
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Product{}, s.whyNotRestocked(ctx, r.ProductID, r.Quantity, r.Gen, r.Max)
	case errors.Is(err, ErrRestockReplayed):
		return Product{}, fmt.Errorf("restock %q with key %q: %w", r.ProductID, r.Key, ErrRestockReplayed)
	case err != nil:
		return Product{}, fmt.Errorf("restock %q: %w", r.ProductID, translate(err))
	}
	return p, nil
}

// RestockQuantity returns the quantity of the restock of product id stored
// under idempotency key, or [ErrNotFound] when none is.
func (s *Store) RestockQuantity(ctx context.Context, id, key string) (int64, error) {
	var q int64
	err := s.pool.QueryRow(ctx, `SELECT quantity FROM restocks WHERE product_id = $1 AND key = $2`, id, key).Scan(&q)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("restock %q with key %q: %w", id, key, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("restock %q with key %q: %w", id, key, translate(err))
	}
	return q, nil
}

// AdvanceRestockGen stores gen as the product's restock generation if the
// stored one is older, adding no stock: what a restock that announced gen
// and then failed leaves behind, so that workers' sold-out flags (at the
// stored generation) are not refused as older than the announcement. It
// returns [ErrNotFound] for an unknown product; an equal or newer stored
// generation is not an error.
func (s *Store) AdvanceRestockGen(ctx context.Context, id string, gen int64) error {
	tag, err := s.pool.Exec(ctx, `UPDATE products SET restock_gen = $2 WHERE id = $1 AND restock_gen < $2`, id, gen)
	if err != nil {
		return fmt.Errorf("advance restock generation of %q: %w", id, translate(err))
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.Product(ctx, id); err != nil {
			return fmt.Errorf("advance restock generation: %w", err)
		}
	}
	return nil
}

func (s *Store) whyNotRestocked(ctx context.Context, id string, quantity, gen, max int64) error {
	p, err := s.Product(ctx, id)
	switch {
	case err != nil:
		return fmt.Errorf("restock: %w", err)
	case p.RestockGen >= gen:
		return fmt.Errorf("restock %q at generation %d (stored %d): %w", id, gen, p.RestockGen, ErrRestockSuperseded)
	case p.Stock > max-quantity:
		return fmt.Errorf("%w: restock %q: stock %d + %d would exceed %d", ErrInvalid, id, p.Stock, quantity, max)
	}
	// Changed again since the UPDATE: whatever it was, nothing was added.
	return fmt.Errorf("restock %q at generation %d: %w", id, gen, ErrRestockSuperseded)
}

const orderColumns = `id, product_id, user_id, quantity, coalesce(idempotency_key, ''), status, reason, fence, created_at, updated_at`

func scanOrder(row pgx.Row) (Order, error) {
	var o Order
	var status string
	err := row.Scan(&o.ID, &o.ProductID, &o.UserID, &o.Quantity, &o.IdempotencyKey, &status, &o.Reason, &o.Fence, &o.CreatedAt, &o.UpdatedAt)
	o.Status = Status(status)
	return o, err
}

// Order returns a decided order, or [ErrNotFound] when no outcome has been
// recorded for id (it may still be queued).
func (s *Store) Order(ctx context.Context, id string) (Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1`, id))
	if err != nil {
		return Order{}, fmt.Errorf("order %q: %w", id, translate(err))
	}
	return o, nil
}

// Orders returns the decided orders among ids, by id, in one query; ids
// with no recorded outcome are absent from the map.
func (s *Store) Orders(ctx context.Context, ids []string) (map[string]Order, error) {
	out := make(map[string]Order, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("orders: %w", translate(err))
	}
	defer rows.Close()
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("orders: %w", translate(err))
		}
		out[o.ID] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("orders: %w", translate(err))
	}
	return out, nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// translate maps driver errors to this package's sentinels: no rows becomes
// ErrNotFound; anything that says the database or the connection is gone,
// restarting, refusing connections, overloaded or cancelled becomes
// ErrUnavailable (retryable).
// Other server errors (constraint violations, bad SQL) are returned as they
// are: retrying them would not help.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"), // insufficient resources
			strings.HasPrefix(pgErr.Code, "57"), // operator intervention: shutdown, cancel
			pgErr.Code == "40001",               // serialization failure
			pgErr.Code == "40P01",               // deadlock
			pgErr.Code == "55P03",               // lock not available
			pgErr.Code == "25P03":               // idle in transaction timeout
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		case pgErr.Code == "3D000": // invalid_catalog_name: no such database
			return fmt.Errorf("%w: the database does not exist: %w", ErrSchemaOutdated, err)
		case pgErr.Code == "55000" && errors.As(err, new(*pgconn.ConnectError)):
			// Refused at connection start: the database does not accept
			// connections (ALTER DATABASE ... ALLOW_CONNECTIONS false, as
			// in a maintenance window). Only at connection start: a query's
			// 55000 (object not in prerequisite state) is a bug to report,
			// not to retry.
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	}
	// Not a server error: a network failure, a closed pool or connection,
	// a cancelled context. All worth retrying.
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
