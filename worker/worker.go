// Package worker consumes the order queue and decides orders.
//
// For every order the worker takes the product's distributed lock, runs the
// PostgreSQL transaction that decides the order under the lock's context (a
// lost lock aborts it), passes the lock's fencing token to the stock update,
// commits, and only then releases the lock and acknowledges the task.
//
// # Group commit
//
// One lock round trip and one transaction per order cannot be fast on a hot
// product: PostgreSQL commits a few thousand transactions a second on one
// row. So, by default (ModeBatch), the order tasks that one worker process
// holds at a time are coalesced: a single runner takes every pending order,
// locks each product involved once, and decides them all in one transaction
// ([inventory.Store.Apply]), each order with its own outcome. Each asynq task
// still waits for its own order and is acknowledged on its own, and a
// redelivered task finds its order decided and changes nothing. Batches form
// only while a transaction is in flight, so a lone order is not delayed.
// ModeSingle (one lock hold and one transaction per order) is kept as the
// baseline that `make bench` compares against: on a hot product ModeBatch
// settled 14.5× as many orders a second (9,547 against 657 in the run of
// BENCHMARKS.md).
//
// # Order of service
//
// asynq's queue is a FIFO list, and within a batch a product's orders are
// served by acceptance time. Worker processes dequeue concurrently and batch
// independently, so an order can be served before an earlier one held by
// another process: the inversion is bounded by what the workers hold at
// once, workers × Concurrency orders.
package worker

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/notify"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/soldout"
)

// Mode selects how orders are decided.
type Mode string

const (
	// ModeBatch coalesces the orders a process holds into one lock hold per
	// product and one transaction per round. The default.
	ModeBatch Mode = "batch"
	// ModeSingle takes the lock and runs one transaction per order.
	ModeSingle Mode = "single"
)

// Config configures a Worker. Zero fields take the documented defaults.
type Config struct {
	// Concurrency is how many order tasks one process holds at once (asynq
	// concurrency). Default 64: enough to fill a batch on a hot product
	// while another process holds its lock, small enough to keep the
	// order-inversion window and memory modest.
	Concurrency int
	// Mode is ModeBatch (default) or ModeSingle.
	Mode Mode
	// MaxBatch caps the orders of one transaction; default 512.
	MaxBatch int
	// Queue holds the task options; the worker serves Queue.Queue.
	Queue queue.Options
	// ShutdownTimeout is how long a SIGTERM waits for in-flight orders
	// before asynq puts them back in the queue; default 20s.
	ShutdownTimeout time.Duration
	// RescueInterval is how often one worker of the fleet, the holder of
	// the rescuer lock, looks for orders held by a crashed worker, and how
	// often each other worker tries for that lock (see rescue.go); default
	// 2s.
	RescueInterval time.Duration
	// UnheldGrace is how long a task must stay active with no live asynq
	// server holding it before it is rescued; default 7s. Keep it above
	// asynq's 5s heartbeat ([queue.HeartbeatInterval]), or tasks a live
	// worker has just dequeued are rescued too (harmless replays, wasted
	// work). A leader whose rescue scans keep failing for about as long
	// gives the rescuer lock to another worker.
	UnheldGrace time.Duration
	// RescueTimeout bounds one rescue scan; default 10s. A call that does
	// not return (a row held by a runaway transaction, a silently dropped
	// connection) would otherwise hold up the scans of the worker that
	// leads them, which keeps the rescuer lock (its watchdog renews it),
	// and no worker would rescue anything.
	RescueTimeout time.Duration
	// KeyPrefix prefixes the worker's own Redis keys; default "flashsale:".
	KeyPrefix string
	// Logger receives the worker's logs; default slog.Default().
	Logger *slog.Logger
	// Registerer receives the worker's Prometheus metrics; nil = none.
	Registerer prometheus.Registerer
}

func (c Config) withDefaults() Config {
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Mode == "" {
		c.Mode = ModeBatch
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 512
	}
	c.Queue = c.Queue.WithDefaults()
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "flashsale:"
	}
	if c.RescueInterval <= 0 {
		c.RescueInterval = 2 * time.Second
	}
	if c.RescueTimeout <= 0 {
		c.RescueTimeout = 10 * time.Second
	}
	if c.UnheldGrace <= 0 {
		c.UnheldGrace = queue.HeartbeatInterval + 2*time.Second
	}
	return c
}

// Worker decides orders taken from the queue.
type Worker struct {
	cfg       Config
	store     *inventory.Store
	locks     *lock.Client
	gate      *soldout.Gate
	publisher *notify.Publisher
	rdb       redis.UniversalClient
	queue     *queue.Inspector
	prefix    string
	id        string // this process, in hand-off announcements
	metrics   *metrics
	batcher   *batcher
	srv       *asynq.Server
	connOpt   asynq.RedisConnOpt
	stopAux   func() // set by a successful Start
	runner    bool   // Start launched the batch runner
	shutdown  sync.Once

	markMu sync.Mutex
	marked map[string]markedAt // sold-out flags this process set recently

	handlersMu sync.Mutex
	handlers   int           // ProcessTask calls running
	noHandlers chan struct{} // closed when handlers drops to 0; nil if nobody waits

	// onArchivePage, set by tests only (before Start), is called before an
	// archive sweep reads each page; an error it returns cuts the sweep
	// short as a failed read would.
	onArchivePage func(page int) error
	// onRescueScan, set by tests only (before Start), is called as each
	// rescue scan starts; an error it returns fails the scan at once, as a
	// failed first call would.
	onRescueScan func() error
}

// Deps are the worker's collaborators; the caller owns and closes them.
type Deps struct {
	Store     *inventory.Store
	Locks     *lock.Client
	Gate      *soldout.Gate
	Publisher *notify.Publisher
	// Queue is the queue's Redis, for asynq.
	Queue asynq.RedisConnOpt
	// Redis is a client of the queue's Redis, for the worker's own keys.
	Redis redis.UniversalClient
}

// New builds a worker. Call [Worker.Start], then [Worker.Shutdown].
func New(cfg Config, d Deps) (*Worker, error) {
	cfg = cfg.withDefaults()
	if cfg.Mode != ModeBatch && cfg.Mode != ModeSingle {
		return nil, fmt.Errorf("worker: unknown mode %q", cfg.Mode)
	}
	w := &Worker{cfg: cfg, store: d.Store, locks: d.Locks, gate: d.Gate, publisher: d.Publisher,
		rdb: d.Redis, queue: queue.NewInspector(d.Redis, cfg.Queue), prefix: cfg.KeyPrefix, id: newProcessID(),
		connOpt: d.Queue, stopAux: func() {},
		marked: map[string]markedAt{}}
	m, err := newMetrics(cfg.Registerer, d.Store)
	if err != nil {
		return nil, err
	}
	w.metrics = m
	if cfg.Mode == ModeBatch {
		w.batcher = newBatcher(w)
	}
	w.srv = asynq.NewServer(d.Queue, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   map[string]int{cfg.Queue.Queue: 1},
		TaskCheckInterval:        TaskCheckInterval,
		DelayedTaskCheckInterval: DelayedTaskCheckInterval,
		RetryDelayFunc:           RetryDelay,
		IsFailure:                isFailure,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		Logger:                   asynqLogger{cfg.Logger},
		LogLevel:                 asynq.WarnLevel,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			id, _ := asynq.GetTaskID(ctx)
			n, _ := asynq.GetRetryCount(ctx)
			if errors.Is(err, errNotTried) {
				// Not a failure of its own (isFailure): no try counted.
				cfg.Logger.Info("order task given back untried with its product's orders", "order_id", id, "retried", n, "err", err)
				return
			}
			cfg.Logger.Warn("order task failed", "order_id", id, "retried", n, "err", err)
		}),
	})
	return w, nil
}

// RetryDelay is the backoff between tries of a task that failed with a
// retryable error: 200ms doubling to a 10s ceiling, with ±25% jitter.
func RetryDelay(n int, _ error, _ *asynq.Task) time.Duration {
	d := 200 * time.Millisecond << min(n, 6)
	d = min(d, 10*time.Second)
	return time.Duration(float64(d) * (0.75 + 0.5*rand.Float64()))
}

// Start starts consuming. ctx bounds the batch runner; cancel it only after
// Shutdown returned.
func (w *Worker) Start(ctx context.Context) error {
	if w.batcher != nil {
		w.runner = true
		go w.batcher.run(ctx)
	}
	mux := asynq.NewServeMux()
	mux.HandleFunc(queue.TypeOrder, w.ProcessTask)
	if err := w.srv.Start(mux); err != nil {
		return fmt.Errorf("worker: start: %w", err)
	}
	client := asynq.NewClient(w.connOpt)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.runRescuer(rctx, w.queue, queue.NewProducer(client, w.cfg.Queue))
	}()
	w.stopAux = func() {
		cancel()
		<-done
		_ = client.Close()
	}
	return nil
}

// The worker's asynq server polls with these intervals. They are exported
// for the benchmark's queue ceiling, whose no-op consumer must poll as the
// worker does.
const (
	// TaskCheckInterval is how long asynq sleeps when the queue is empty;
	// asynq's default of 1s would add up to a second to a lone order's
	// latency.
	TaskCheckInterval = 20 * time.Millisecond
	// DelayedTaskCheckInterval is how often retried tasks are moved back
	// to pending; asynq's default of 5s is longer than the first steps of
	// RetryDelay.
	DelayedTaskCheckInterval = 200 * time.Millisecond
)

// Shutdown ends this worker's rescue scans, giving the rescuer lock up if it
// leads them (another worker takes over within about RescueInterval), then
// stops taking tasks, waits up to ShutdownTimeout for the orders in flight
// (their locks are released after their commit), and returns the rest to
// the queue. It then waits, up to handlerGrace, for handlers that
// asynq stopped waiting for (past their task's deadline, or past
// ShutdownTimeout) to record or bury their orders, so that the caller may
// close PostgreSQL and Redis. Calling it again, or without Start, is a no-op
// (Start must not run after it).
func (w *Worker) Shutdown() {
	w.shutdown.Do(func() {
		if w.stopAux != nil {
			w.stopAux()
			w.srv.Shutdown()
		}
		if w.runner {
			w.batcher.stop()
		}
		if !w.waitHandlers(handlerGrace) {
			w.cfg.Logger.Warn("worker stopped with order handlers still running", "waited", handlerGrace.String())
		}
	})
}

// handlerGrace bounds how long Shutdown waits, once asynq has stopped, for
// handlers asynq no longer waits for: one whose task's deadline passed, or
// that outlived ShutdownTimeout, goes on to record or bury its order (up
// to recordTimeout each), and the caller closes PostgreSQL and Redis after
// Shutdown.
const handlerGrace = 2*recordTimeout + 5*time.Second

// ShutdownBound is the longest [Worker.Shutdown] of a worker with c may
// take: its ShutdownTimeout for the orders in flight, then the wait for
// handlers asynq stopped waiting for (35s with the defaults). A supervisor
// that kills what has not stopped must wait at least this long.
func (c Config) ShutdownBound() time.Duration {
	return c.withDefaults().ShutdownTimeout + handlerGrace
}

// waitHandlers waits, at most d, until no ProcessTask call runs; it
// reports whether none does. A counter rather than a sync.WaitGroup: the
// wait is bounded, and tests call ProcessTask directly, so a handler may
// start while Shutdown waits (a WaitGroup forbids an Add from zero then).
func (w *Worker) waitHandlers(d time.Duration) bool {
	w.handlersMu.Lock()
	if w.handlers == 0 {
		w.handlersMu.Unlock()
		return true
	}
	if w.noHandlers == nil {
		w.noHandlers = make(chan struct{})
	}
	ch := w.noHandlers
	w.handlersMu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

func (w *Worker) handlerStarted() {
	w.handlersMu.Lock()
	w.handlers++
	w.handlersMu.Unlock()
}

func (w *Worker) handlerDone() {
	w.handlersMu.Lock()
	w.handlers--
	if w.handlers == 0 && w.noHandlers != nil {
		close(w.noHandlers)
		w.noHandlers = nil
	}
	w.handlersMu.Unlock()
}

// errPermanent marks errors that retrying cannot fix.
var errPermanent = errors.New("permanent")

// errNotTried marks an order given back to asynq before this process tried
// it: its product's orders went back together after another one's tries ran
// out (batcher.requeue). That costs the order none of its own tries: asynq
// retries the task without counting (isFailure). (On its last try asynq
// would archive it whatever IsFailure says: such an order is not given
// back, see batcher.requeue.)
var errNotTried = errors.New("given back untried")

// isFailure is asynq's IsFailure: a task given back untried is not a
// failure, so asynq retries it without counting a try.
func isFailure(err error) bool { return !errors.Is(err, errNotTried) }

// ProcessTask is the asynq handler for one order task.
func (w *Worker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	w.handlerStarted()
	defer w.handlerDone()
	w.metrics.inFlight.Inc()
	defer w.metrics.inFlight.Dec()
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	o, err := queue.Decode(t.Payload())
	if err != nil {
		// One with an id and a product is recorded (and counted) failed,
		// or, recorded before (a redelivery), counted a replay; one that is
		// not, counted as a bad payload: once each.
		var d inventory.Decision
		rerr := errors.New("no order to record")
		if o.ID != "" && o.ProductID != "" {
			d, rerr = w.recordFailed(ctx, o, "malformed order", err)
			if rerr != nil && !refusedValue(rerr) && retried < maxRetry && ctx.Err() == nil {
				// PostgreSQL did not answer (rather than refuse a value
				// of the order): try the record again later. Archived
				// now, the order would have no outcome, and neither
				// burying it nor the archive sweep can keep an order
				// that does not decode.
				return fmt.Errorf("record malformed order %s: %w", o.ID, rerr)
			}
		}
		switch {
		case rerr == nil && d.Replay:
			w.metrics.orders.WithLabelValues("replay").Inc()
		case rerr != nil || d.Err != nil:
			w.metrics.orders.WithLabelValues("bad_payload").Inc()
		}
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	req := inventory.OrderRequest{
		ID: o.ID, ProductID: o.ProductID, UserID: o.UserID, Quantity: o.Quantity,
		IdempotencyKey: o.IdempotencyKey, AcceptedAt: o.AcceptedAt,
	}
	var d inventory.Decision
	if w.batcher != nil {
		d, err = w.batcher.submit(ctx, req, retried >= maxRetry)
	} else {
		d, err = w.decideOne(ctx, req)
	}
	if err == nil && d.Err != nil {
		err = fmt.Errorf("%w: %w", errPermanent, d.Err)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errPermanent):
		w.giveUp(ctx, o, permanentReason(err), err)
		return fmt.Errorf("order %s: %w: %w", o.ID, err, asynq.SkipRetry)
	}
	// Retryable. On the last try, record the failure so the buyer gets a
	// final answer rather than a task that vanished into the archive.
	if retried >= maxRetry {
		w.giveUp(ctx, o, reasonGaveUp, err)
		return fmt.Errorf("order %s: %w: %w", o.ID, err, asynq.SkipRetry)
	}
	return fmt.Errorf("order %s: %w", o.ID, err)
}

// giveUp records o failed for reason before asynq archives its task. When
// that record fails too (PostgreSQL down), it buries the order
// ([queue.Inspector.Bury]) for the rescue scan to record once PostgreSQL
// answers: asynq's archive, which it trims, must not be the order's only
// trace. A cancelled ctx may be a shutdown (asynq puts the task back
// whatever is returned) or a lapsed lease (asynq archives it): the order is
// buried, not recorded, and the scan records it only once no task of it is
// left to run.
func (w *Worker) giveUp(ctx context.Context, o queue.Order, reason string, cause error) {
	// The task's own time may have run out (asynq archives it): each step
	// needs a moment of its own, or it fails like the task did.
	if !errors.Is(ctx.Err(), context.Canceled) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
		if _, err := w.recordFailed(rctx, o, reason, cause); err == nil {
			return
		}
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := w.queue.Bury(bctx, o); err != nil {
		w.cfg.Logger.Error("could not keep an order whose failure is not recorded; it is left to asynq's archive",
			"order_id", o.ID, "product_id", o.ProductID, "err", err)
		return
	}
	w.metrics.buried.Inc()
}

// reasonGaveUp is the public reason of an order whose tries ran out.
const reasonGaveUp = "gave up after retries: the order could not be decided"

// recordTimeout bounds recording (or burying) a failure.
const recordTimeout = 5 * time.Second

// permanentReason is the reason buyers read for an order that cannot be
// decided.
func permanentReason(err error) string {
	if errors.Is(err, inventory.ErrNotFound) {
		return "unknown product"
	}
	return "the order cannot be decided"
}

// recordFailed records order o failed. reason is what the buyer reads
// (GET /v1/orders/{id} is public), so it names the kind of failure only;
// cause, which may carry hosts, users and driver messages, is logged. It
// returns PostgreSQL's decision (a replay when the order was decided
// before; Err for an unknown product's), or the error when PostgreSQL did
// not answer.
func (w *Worker) recordFailed(ctx context.Context, o queue.Order, reason string, cause error) (inventory.Decision, error) {
	ds, err := w.store.RecordFailed(ctx, []inventory.OrderRequest{{
		ID: o.ID, ProductID: o.ProductID, UserID: o.UserID, Quantity: o.Quantity,
		IdempotencyKey: o.IdempotencyKey, AcceptedAt: o.AcceptedAt,
	}}, reason)
	if err != nil {
		w.cfg.Logger.Error("could not record failed order", "order_id", o.ID, "product_id", o.ProductID, "err", err, "cause", cause)
		return inventory.Decision{}, err
	}
	if d := ds[0]; d.Err == nil && !d.Replay {
		w.metrics.orders.WithLabelValues(string(inventory.StatusFailed)).Inc()
		w.cfg.Logger.Warn("order failed", "order_id", o.ID, "product_id", o.ProductID, "reason", reason, "cause", cause)
		w.announce(ctx, []notify.Outcome{outcome(d.Order)})
	}
	return ds[0], nil
}

// decideOne is ModeSingle: one lock hold and one transaction for one order.
func (w *Worker) decideOne(ctx context.Context, req inventory.OrderRequest) (inventory.Decision, error) {
	l, err := w.locks.Acquire(ctx, lockKey(req.ProductID))
	if err != nil {
		return inventory.Decision{}, fmt.Errorf("lock product %q: %w", req.ProductID, err)
	}
	defer w.release(l)
	txCtx, stop := withLocks(ctx, l)
	defer stop()
	res, err := w.store.Apply(txCtx, inventory.Batch{
		Orders: []inventory.OrderRequest{req},
		Tokens: map[string]int64{req.ProductID: l.Token()},
	})
	if err != nil {
		w.handleStale(ctx, err)
		return inventory.Decision{}, lockErr(txCtx, err)
	}
	w.afterCommit(ctx, res, []inventory.OrderRequest{req})
	return res.Decisions[0], nil
}

// afterCommit counts outcomes, announces them and flags sold-out products.
func (w *Worker) afterCommit(ctx context.Context, res *inventory.Result, reqs []inventory.OrderRequest) {
	outcomes := make([]notify.Outcome, 0, len(reqs))
	for _, d := range res.Decisions {
		if d.Err != nil {
			continue
		}
		outcomes = append(outcomes, outcome(d.Order))
		if d.Replay {
			w.metrics.orders.WithLabelValues("replay").Inc()
		} else {
			w.metrics.orders.WithLabelValues(string(d.Order.Status)).Inc()
		}
	}
	w.announce(ctx, outcomes)
	var sold []soldout.Sold
	for id, st := range res.Products {
		if st.Stock == 0 && w.shouldMark(id, st.RestockGen) {
			sold = append(sold, soldout.Sold{Product: id, Gen: st.RestockGen})
		}
	}
	_, errs := w.gate.MarkMany(ctx, sold)
	for i, err := range errs {
		if err != nil {
			// Not flagged: a round that reads the product sold out
			// markRetry later tries again, not markEvery later (the API's
			// fast path stays off until a flag is set).
			w.markFailed(sold[i])
			w.cfg.Logger.Warn("could not flag sold-out product", "product_id", sold[i].Product, "err", err)
		}
	}
}

// markEvery bounds how often one process re-flags the same sold-out product
// (every batch after the sell-out would otherwise do it).
const markEvery = 5 * time.Second

// shouldMark reports whether product, sold out at restock generation gen,
// needs flagging now, and notes that it is being flagged.
func (w *Worker) shouldMark(product string, gen int64) bool {
	w.markMu.Lock()
	defer w.markMu.Unlock()
	m, ok := w.marked[product]
	if ok && m.gen == gen && time.Since(m.at) < markEvery {
		return false
	}
	if len(w.marked) > 100_000 {
		clear(w.marked) // bound the memory; the cost is a few repeated marks
	}
	w.marked[product] = markedAt{gen: gen, at: time.Now()}
	return true
}

// markRetry is how soon a product whose flagging failed is flagged again
// (by a round that reads it sold out): soon, since its orders go through
// the queue meanwhile, but not by every round while Redis keeps failing.
const markRetry = 250 * time.Millisecond

// markFailed notes that flagging s failed, so that [Worker.shouldMark]
// lets it be tried again markRetry from now.
func (w *Worker) markFailed(s soldout.Sold) {
	w.markMu.Lock()
	defer w.markMu.Unlock()
	if m, ok := w.marked[s.Product]; ok && m.gen == s.Gen {
		w.marked[s.Product] = markedAt{gen: s.Gen, at: time.Now().Add(markRetry - markEvery)}
	}
}

type markedAt struct {
	gen int64
	at  time.Time
}

func (w *Worker) announce(ctx context.Context, outcomes []notify.Outcome) {
	if err := w.publisher.Publish(ctx, outcomes...); err != nil {
		// Waiters fall back to re-reading; the outcome is committed.
		w.cfg.Logger.Warn("could not announce decided orders", "orders", len(outcomes), "err", err)
	}
}

// outcome is the announcement of a decided order.
func outcome(o inventory.Order) notify.Outcome {
	return notify.Outcome{
		OrderID: o.ID, ProductID: o.ProductID, UserID: o.UserID, Quantity: o.Quantity,
		Status: string(o.Status), Reason: o.Reason, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
	}
}

// handleStale reacts to a refused fencing token. Either this holder's lock
// was taken over (the next acquire gets a newer token), or the lock nodes
// lost their counters (a restart without persistence) and every new token
// is below what PostgreSQL stored: raising the counters past the stored
// fence repairs that, and is harmless in the first case.
func (w *Worker) handleStale(ctx context.Context, err error) {
	for _, stale := range inventory.StaleFences(err) {
		w.metrics.staleFences.Inc()
		if aerr := w.locks.AdvanceFence(ctx, lockKey(stale.ProductID), stale.Fence); aerr != nil {
			w.cfg.Logger.Warn("could not advance fence", "product_id", stale.ProductID, "err", aerr)
		}
	}
}

// release gives a lock back after its transaction (the lock retries
// rounds that reached too few nodes).
func (w *Worker) release(l *lock.Lock) {
	// A fresh context: the lock must be released even when the task's
	// context has ended.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Release(ctx); err != nil && !errors.Is(err, lock.ErrNotHeld) {
		w.cfg.Logger.Warn("could not release lock", "key", l.Key(), "err", err)
	}
}

// releaseAll gives back the locks of a round in one go (see release).
func (w *Worker) releaseAll(holds []hold) {
	if len(holds) == 0 {
		return
	}
	locks := make([]*lock.Lock, len(holds))
	for i, h := range holds {
		locks[i] = h.l
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, err := range w.locks.ReleaseMany(ctx, locks) {
		if err != nil && !errors.Is(err, lock.ErrNotHeld) {
			w.cfg.Logger.Warn("could not release lock", "key", locks[i].Key(), "err", err)
		}
	}
}

func lockKey(productID string) string { return "product:" + productID }

// newProcessID names this worker process in Redis: host, pid and a random suffix.
func newProcessID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = crand.Read(b)
	return fmt.Sprintf("%s:%d:%x", host, os.Getpid(), b)
}

// withLocks returns a context cancelled when ctx ends or any of the locks
// may be lost, with the lock's cause.
func withLocks(ctx context.Context, locks ...*lock.Lock) (context.Context, func()) {
	c, cancel := context.WithCancelCause(ctx)
	stops := make([]func() bool, 0, len(locks))
	for _, l := range locks {
		lc := l.Context()
		stops = append(stops, context.AfterFunc(lc, func() { cancel(context.Cause(lc)) }))
	}
	return c, func() {
		for _, s := range stops {
			s()
		}
		cancel(nil)
	}
}

// lockErr explains a failed transaction by a lost lock when that is why.
func lockErr(txCtx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(txCtx); cause != nil && errors.Is(cause, lock.ErrLost) {
		return fmt.Errorf("%w (transaction aborted): %w", cause, err)
	}
	return err
}

// asynqLogger adapts slog to asynq's logger.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
