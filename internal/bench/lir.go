package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/loadtest"
	"github.com/flashsale/flashsale/lock"
)

// The lock-in-request baseline: the design this system grew from. Each
// POST /v1/orders takes the product's lock (one try), decrements the stock
// in PostgreSQL, releases the lock and answers; a busy lock is answered 429
// at once. It speaks enough of the v1 API for loadtest to drive and verify
// it: a sale is answered 202 with an order id whose GET is already final,
// a sold-out product 409 sold_out.

// lirSchema is the baseline's own tables, in a database of its own.
const lirSchema = `
CREATE TABLE lir_products (
    id             text   PRIMARY KEY,
    name           text   NOT NULL,
    stock          bigint NOT NULL CHECK (stock >= 0),
    sold           bigint NOT NULL DEFAULT 0,
    per_user_limit integer NOT NULL DEFAULT 0
);
CREATE TABLE lir_orders (
    id              text    PRIMARY KEY,
    product_id      text    NOT NULL REFERENCES lir_products (id),
    user_id         text    NOT NULL,
    quantity        integer NOT NULL CHECK (quantity > 0),
    idempotency_key text,
    status          text    NOT NULL
);`

// lirPoolSize bounds each server's PostgreSQL connections: one lock holder
// at a time needs one; reads of orders and products use the rest.
const lirPoolSize = 8

// lirServer is one lock-in-request HTTP server.
type lirServer struct {
	pool  *pgxpool.Pool
	locks *lock.Client
	token string
	log   *slog.Logger // 5xx answers, to the process's log
}

// runLIRServer serves the baseline on -addr until SIGTERM.
func runLIRServer(ctx context.Context, fs *flag.FlagSet, args []string, stderr io.Writer) error {
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	redisURL := fs.String("redis-url", "", "Redis URL of the lock")
	dbURL := fs.String("database-url", "", "PostgreSQL URL (lirSchema applied)")
	token := fs.String("admin-token", "", "bearer token of POST /v1/products")
	prefix := fs.String("key-prefix", "lir:", "prefix of the lock keys")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *redisURL == "" || *dbURL == "" || *token == "" {
		return errors.New("need -redis-url, -database-url and -admin-token")
	}
	pcfg, err := pgxpool.ParseConfig(*dbURL)
	if err != nil {
		return err
	}
	pcfg.MaxConns = lirPoolSize
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	// The worker's lock TTL (cmd/flashsale), 10s. Its node timeout
	// (TTL/40 = 250ms) is not copied: a worker whose lock call times out
	// retries the order, this handler would answer 503, and on a loaded CI
	// machine (race detector, every package's tests at once) one Redis
	// call did take longer than 250ms. With one node the timeout only
	// bounds a stalled call; 2s keeps the baseline about throughput.
	locks, err := lock.NewFromURLs([]string{*redisURL}, &lock.Options{
		TTL: 10 * time.Second, NodeTimeout: 2 * time.Second, KeyPrefix: *prefix})
	if err != nil {
		return err
	}
	defer locks.Close()

	s := &lirServer{pool: pool, locks: locks, token: *token, log: slog.New(slog.NewJSONHandler(stderr, nil))}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/orders", s.placeOrder)
	mux.HandleFunc("GET /v1/orders/{id}", s.getOrder)
	mux.HandleFunc("POST /v1/products", s.createProduct)
	mux.HandleFunc("GET /v1/products/{id}", s.getProduct)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := pool.Ping(r.Context()); err != nil {
			writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		writeJSONBody(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return serveUntilDone(ctx, *addr, mux, stderr, "lock-in-request server")
}

type lirOrderBody struct {
	ProductID string `json:"product_id"`
	UserID    string `json:"user_id"`
	Quantity  int    `json:"quantity"`
}

// placeOrder is the handler of the design: lock, decrement, release, answer.
func (s *lirServer) placeOrder(w http.ResponseWriter, r *http.Request) {
	var body lirOrderBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&body); err != nil ||
		body.ProductID == "" || body.UserID == "" || body.Quantity < 1 {
		writeError(w, http.StatusBadRequest, "invalid", "want product_id, user_id and quantity ≥ 1")
		return
	}
	key := r.Header.Get("Idempotency-Key")
	id := lirOrderID(body.UserID, key)

	l, err := s.locks.TryAcquire(r.Context(), body.ProductID)
	if err != nil {
		if lock.CauseOf(err) == lock.CauseBusy {
			writeError(w, http.StatusTooManyRequests, "busy", "the product is busy; try again")
			return
		}
		s.unavailable(w, "lock", err)
		return
	}
	status, err := s.sell(r.Context(), id, key, body)
	// A failed release changes nothing for this order (it is committed or
	// not); the lock then expires after its TTL, which the next buyers see
	// as 429s, as they would in the original design.
	if rerr := l.Release(context.WithoutCancel(r.Context())); rerr != nil {
		w.Header().Set("X-Lock-Release-Error", rerr.Error())
	}
	switch {
	case errors.Is(err, errLIRSoldOut):
		writeError(w, http.StatusConflict, loadtest.ErrorCodeSoldOut, "sold out")
	case errors.Is(err, errLIRNoProduct):
		writeError(w, http.StatusNotFound, "product_not_found", "no such product")
	case err != nil:
		s.unavailable(w, "sell", err)
	default:
		writeJSONBody(w, http.StatusAccepted, map[string]string{"order_id": id, "status": status})
	}
}

var (
	errLIRSoldOut   = errors.New("sold out")
	errLIRNoProduct = errors.New("no such product")
)

// sell records order id in one transaction: a known id answers its status;
// otherwise the stock is decremented if enough is left.
func (s *lirServer) sell(ctx context.Context, id, key string, o lirOrderBody) (string, error) {
	var status string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT status FROM lir_orders WHERE id = $1`, id).Scan(&status)
		if err == nil {
			return nil // a replay
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE lir_products SET stock = stock - $2, sold = sold + $2 WHERE id = $1 AND stock >= $2`,
			o.ProductID, o.Quantity)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			var one int
			if err := tx.QueryRow(ctx, `SELECT 1 FROM lir_products WHERE id = $1`, o.ProductID).Scan(&one); errors.Is(err, pgx.ErrNoRows) {
				return errLIRNoProduct
			}
			return errLIRSoldOut
		}
		status = loadtest.StatusSucceeded
		_, err = tx.Exec(ctx, `INSERT INTO lir_orders (id, product_id, user_id, quantity, idempotency_key, status)
			VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6)`, id, o.ProductID, o.UserID, o.Quantity, key, status)
		return err
	})
	return status, err
}

func (s *lirServer) getOrder(w http.ResponseWriter, r *http.Request) {
	var v struct {
		OrderID   string `json:"order_id"`
		ProductID string `json:"product_id"`
		UserID    string `json:"user_id"`
		Quantity  int    `json:"quantity"`
		Status    string `json:"status"`
		Reason    string `json:"reason"`
	}
	err := s.pool.QueryRow(r.Context(), `SELECT id, product_id, user_id, quantity, status FROM lir_orders WHERE id = $1`,
		r.PathValue("id")).Scan(&v.OrderID, &v.ProductID, &v.UserID, &v.Quantity, &v.Status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		writeError(w, http.StatusNotFound, "not_found", "no such order")
	case err != nil:
		s.unavailable(w, "get order", err)
	default:
		writeJSONBody(w, http.StatusOK, v)
	}
}

type lirProduct struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Stock        int64  `json:"stock"`
	Sold         int64  `json:"sold"`
	PerUserLimit int    `json:"per_user_limit"`
}

func (s *lirServer) createProduct(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+s.token {
		writeError(w, http.StatusUnauthorized, "unauthorized", "admin token required")
		return
	}
	var p lirProduct
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&p); err != nil || p.ID == "" || p.Stock < 0 || p.PerUserLimit < 0 {
		writeError(w, http.StatusBadRequest, "invalid", "want id and stock ≥ 0")
		return
	}
	_, err := s.pool.Exec(r.Context(), `INSERT INTO lir_products (id, name, stock, per_user_limit) VALUES ($1, $2, $3, $4)`,
		p.ID, p.Name, p.Stock, p.PerUserLimit)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "23505":
		writeError(w, http.StatusConflict, loadtest.ErrorCodeProductExists, "product exists")
	case err != nil:
		s.unavailable(w, "create product", err)
	default:
		writeJSONBody(w, http.StatusCreated, p)
	}
}

func (s *lirServer) getProduct(w http.ResponseWriter, r *http.Request) {
	var p lirProduct
	err := s.pool.QueryRow(r.Context(), `SELECT id, name, stock, sold, per_user_limit FROM lir_products WHERE id = $1`,
		r.PathValue("id")).Scan(&p.ID, &p.Name, &p.Stock, &p.Sold, &p.PerUserLimit)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		writeError(w, http.StatusNotFound, "product_not_found", "no such product")
	case err != nil:
		s.unavailable(w, "get product", err)
	default:
		writeJSONBody(w, http.StatusOK, p)
	}
}

// lirOrderID derives an order id from (user, key), or a random one.
func lirOrderID(user, key string) string {
	if key == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
		return hex.EncodeToString(b)
	}
	h := sha256.Sum256([]byte(user + "\x00" + key))
	return hex.EncodeToString(h[:16])
}

// unavailable answers 503 and logs why.
func (s *lirServer) unavailable(w http.ResponseWriter, op string, err error) {
	s.log.Warn("answered 503", "op", op, "err", err)
	writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
}

func writeJSONBody(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to do
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSONBody(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// lockInRequest runs the baseline: APIs servers on a fresh database, driven
// by loadtest with the hot scenario's numbers.
func (b *bencher) lockInRequest(ctx context.Context) ScenarioResult {
	c := b.cfg
	res := ScenarioResult{Orders: c.Orders, Products: 1, Stock: c.HotStock}
	fail := func(err error) ScenarioResult {
		res.Ran, res.Err = false, err.Error()
		return res
	}
	dir, err := b.begin(ctx, PartLockInRequest)
	if err != nil {
		return fail(err)
	}
	dbURL, drop, err := b.database(ctx, PartLockInRequest)
	if err != nil {
		return fail(err)
	}
	defer drop()
	if err := execSQL(ctx, dbURL, lirSchema); err != nil {
		return fail(err)
	}
	var servers []*cluster.Proc
	defer func() { stopAll(servers) }()
	servers, urls, err := b.startServers(ctx, dir, helperLIR,
		"-redis-url", b.redisURL, "-database-url", dbURL, "-admin-token", b.token, "-key-prefix", "lir:")
	if err != nil {
		return fail(err)
	}
	b.logf("lock-in-request: %d servers up; %d orders on 1 product, stock %d", c.APIs, c.Orders, c.HotStock)
	cpu0, genCPU0 := cpuOf(servers), selfCPU()
	// As the product's parts: the CPU up to the end of the settle phase
	// (WallSeconds' window), not the verify phase's reads.
	var cpu1, genCPU1 time.Duration
	settled := false
	lcfg := b.loadtestConfig(PartLockInRequest, urls, 1, true, c.HotStock)
	lcfg.OnSettled = func() { cpu1, genCPU1, settled = cpuOf(servers), selfCPU(), true }
	rep, err := loadtest.Run(ctx, lcfg)
	if rep != nil {
		res = fromReport(res, rep)
	}
	if !settled {
		cpu1, genCPU1 = cpuOf(servers), selfCPU()
	}
	res.LoadGenCPUSeconds = (genCPU1 - genCPU0).Seconds()
	res.APICPUSeconds = (cpu1 - cpu0).Seconds()
	for _, p := range servers {
		res.APIPeakRSS = max(res.APIPeakRSS, p.PeakRSS())
	}
	if err != nil {
		return fail(err)
	}
	if err := exitedEarly(servers); err != nil {
		return fail(err)
	}
	return res
}

// startServers starts APIs processes of the helper program helper, each
// with -addr of a free port and args, logging into dir, and waits until
// each answers GET /readyz. It returns the processes started (also on an
// error: the caller stops them) and their base URLs.
func (b *bencher) startServers(ctx context.Context, dir, helper string, args ...string) ([]*cluster.Proc, []string, error) {
	var servers []*cluster.Proc
	var urls []string
	for i := range b.cfg.APIs {
		addr, err := cluster.FreeAddr()
		if err != nil {
			return servers, nil, err
		}
		p := b.helperProc(fmt.Sprintf("server-%d", i+1), addr, dir, append([]string{helper, "-addr", addr}, args...)...)
		if err := p.Start(b.cfg.Helper[0]); err != nil {
			return servers, nil, err
		}
		servers = append(servers, p)
		urls = append(urls, "http://"+addr)
	}
	for i, p := range servers {
		if err := waitHTTPReady(ctx, p, urls[i]+"/readyz"); err != nil {
			return servers, nil, err
		}
	}
	return servers, urls, nil
}

// waitHTTPReady polls url until it answers 200, p exits, or 30s pass.
func waitHTTPReady(ctx context.Context, p *cluster.Proc, url string) error {
	client := &http.Client{Timeout: time.Second}
	err := waitUntil(ctx, 30*time.Second, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true, nil
			}
		}
		if !p.Running() {
			return false, fmt.Errorf("%s exited during start: %s", p.Name, logTail(p.LogPath()))
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%s not ready at %s: %w", p.Name, url, err)
	}
	return nil
}

// execSQL runs sql on the database at url.
func execSQL(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, strings.TrimSpace(sql))
	return err
}
