package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/lock"
)

// roundTimeout bounds one round's transaction, which takes milliseconds
// (BenchmarkApply: 2-3 ms for 64 orders).
const roundTimeout = 30 * time.Second

// Tuning of the batcher's lock hand-off.
const (
	// wantTTL is how long a process's "I want this product's lock" mark
	// lives in Redis; a waiter refreshes it every wantTTL/2.
	wantTTL = 200 * time.Millisecond
	// maxHold bounds how long one process keeps a product's lock across
	// rounds while nobody else asked for it.
	maxHold = time.Second
	// yieldDelay is how long a process that handed a lock over waits before
	// competing for it again, so the process it yielded to gets it.
	yieldDelay = 2 * time.Millisecond
	// maxRequeues bounds how often one order goes back to the batcher after
	// a lost lock or a stale fence before its task is retried by asynq.
	maxRequeues = 3
	// maxDBRetries bounds how often one order goes back to the batcher
	// after a transient database error; its product's next round waits
	// dbRetryDelay << (tries-1) first (10ms, 20ms, ... 320ms: about 0.6s
	// in all), so that a short fault (a killed connection, a failover) is
	// ridden out in order instead of being used up by rounds a millisecond
	// apart.
	maxDBRetries = 6
	dbRetryDelay = 10 * time.Millisecond
)

// request is one order task waiting in its handler for a decision.
type request struct {
	ctx      context.Context
	order    inventory.OrderRequest
	res      chan result // buffered: the runner never blocks on a gone handler
	requeues int         // after a lost lock or stale fence (maxRequeues)
	dbTries  int         // after a transient database error (maxDBRetries)
	lastTry  bool        // its task's last asynq try
}

type result struct {
	d   inventory.Decision
	err error
}

// hold is a product lock this process holds between rounds.
type hold struct {
	product string
	l       *lock.Lock
	since   time.Time
	inRound bool      // taken into the round in flight
	idle    time.Time // since when it waits for a round
}

// batcher coalesces the orders this process holds into rounds: one lock
// per product, one transaction per round. One runner goroutine executes the
// rounds; background waiters acquire the locks of products held elsewhere.
type batcher struct {
	w *Worker

	mu        sync.Mutex
	pending   map[string][]*request // by product, in arrival order
	held      map[string]hold       // locks ready for the next round
	acquiring map[string]bool       // background Acquire in progress
	contended map[string]time.Time  // when a product's lock was last found busy or wanted
	notBefore map[string]time.Time  // a product's next round waits until then (dbRetryDelay)
	closed    bool                  // the runner has given its locks back: keep none

	wake     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	stopped  chan struct{}
	bg       sync.WaitGroup // lock waiters and background releases (startWaiter, releaseLater)
}

func newBatcher(w *Worker) *batcher {
	return &batcher{
		w: w, pending: map[string][]*request{}, held: map[string]hold{}, acquiring: map[string]bool{},
		contended: map[string]time.Time{}, notBefore: map[string]time.Time{},
		wake: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{}),
	}
}

func (b *batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// submit queues an order for the next round and waits for its decision;
// lastTry says that its task is on its last asynq try.
func (b *batcher) submit(ctx context.Context, o inventory.OrderRequest, lastTry bool) (inventory.Decision, error) {
	r := &request{ctx: ctx, order: o, res: make(chan result, 1), lastTry: lastTry}
	b.mu.Lock()
	// In order of acceptance, not of arrival here: an order asynq retries
	// comes back after later ones, and with more than MaxBatch pending it
	// would wait a round behind them. Nearly always this appends.
	rs := b.pending[o.ProductID]
	i := len(rs)
	for i > 0 && rs[i-1].order.AcceptedAt.After(o.AcceptedAt) {
		i--
	}
	b.pending[o.ProductID] = slices.Insert(rs, i, r)
	b.mu.Unlock()
	b.signal()
	select {
	case res := <-r.res:
		return res.d, res.err
	case <-ctx.Done():
		b.withdraw(r)
		return inventory.Decision{}, ctx.Err()
	case <-b.stopped:
		return inventory.Decision{}, errors.New("worker stopped")
	}
}

// withdraw takes an ended order out of its product's pending list, unless a
// round took it already, so that a waiter for the product's lock stops
// waiting, and announcing that it wants the lock, once no live order needs
// it (before, that lasted until the next round, which a lock held elsewhere
// could put off indefinitely).
func (b *batcher) withdraw(r *request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := r.order.ProductID
	rs := slices.DeleteFunc(b.pending[p], func(x *request) bool { return x == r })
	if len(rs) == 0 {
		delete(b.pending, p)
		if _, ok := b.held[p]; ok {
			b.signal() // let the runner give the lock back
		}
		return
	}
	b.pending[p] = rs
}

// releaseLater releases l in the background; stop waits for it, so a
// stopping process does not leave the lock to its TTL.
func (b *batcher) releaseLater(l *lock.Lock) {
	b.bg.Go(func() { b.w.release(l) })
}

// stop ends the runner, which gives its locks back, and waits for it and
// for the releases it started. Calling it again is a no-op; it must follow
// run's start.
func (b *batcher) stop() {
	b.stopOnce.Do(func() { close(b.done) })
	<-b.stopped
	b.bg.Wait()
}

// run executes rounds until stop is called or ctx ends.
func (b *batcher) run(ctx context.Context) {
	defer close(b.stopped)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-b.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer b.releaseHeld()
	sweepDone := make(chan struct{})
	defer func() { cancel(); <-sweepDone }()
	go func() { defer close(sweepDone); b.sweepIdle(ctx) }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		}
		for ctx.Err() == nil && b.round(ctx) {
		}
	}
}

func (b *batcher) releaseHeld() {
	b.mu.Lock()
	held := make([]hold, 0, len(b.held))
	for _, h := range b.held {
		held = append(held, h)
	}
	b.held = map[string]hold{}
	b.closed = true
	b.mu.Unlock()
	b.w.releaseAll(held)
}

// round runs one batch. It reports whether it made progress, so the runner
// goes straight on to the next round while there is work it can do.
func (b *batcher) round(ctx context.Context) bool {
	// Which products have work, and whose lock do we hold?
	b.mu.Lock()
	for p, rs := range b.pending {
		rs = slices.DeleteFunc(rs, func(r *request) bool { return r.ctx.Err() != nil })
		if len(rs) == 0 {
			delete(b.pending, p)
		} else {
			b.pending[p] = rs
		}
	}
	for p := range b.notBefore {
		if _, ok := b.pending[p]; !ok {
			delete(b.notBefore, p)
		}
	}
	// A held lock with no live order left (ended, withdrawn, or failed
	// since; a waiter may have handed it over while the runner was busy):
	// no round would look at it again, and it would be kept and renewed.
	for p, h := range b.held {
		if len(b.pending[p]) == 0 {
			delete(b.held, p)
			b.releaseLater(h.l)
		}
	}
	locks := map[string]*lock.Lock{}
	var try []string
	now := time.Now()
	for p := range b.pending {
		if t, ok := b.notBefore[p]; ok {
			if now.Before(t) {
				continue // backing off after a database error; requeue signals at t
			}
			delete(b.notBefore, p)
		}
		if h, ok := b.held[p]; ok {
			if h.l.Context().Err() == nil {
				locks[p] = h.l
				h.inRound = true
				b.held[p] = h
				continue
			}
			delete(b.held, p) // lost while idle
		}
		if !b.acquiring[p] {
			try = append(try, p)
		}
	}
	b.mu.Unlock()

	// Do not barge in front of another process that is already waiting for
	// a product: queue behind it (startWaiter with a negative delay waits
	// for every earlier announcer first), so orders it holds (accepted
	// earlier) are served first. Only products seen contended lately are
	// asked about: with many products (each rarely wanted by two processes
	// at once) the question would cost a Redis call per order.
	if contended := b.recentlyContended(try); len(contended) > 0 {
		if queued, err := b.w.wanted(ctx, contended); err == nil && len(queued) > 0 {
			for _, p := range queued {
				b.startWaiter(ctx, p, -1)
			}
			try = slices.DeleteFunc(try, func(p string) bool { return slices.Contains(queued, p) })
		}
	}
	// Try the free ones at once, in parallel; wait for the others in the
	// background.
	if len(try) > 0 {
		keys := make([]string, len(try))
		for i, p := range try {
			keys[i] = lockKey(p)
		}
		// One round trip per lock node for all of them instead of one per
		// product: with many products in a round this was a third of the
		// worker's CPU on one node, and a third again on three.
		got, errs := b.w.locks.TryAcquireMany(ctx, keys)
		for i, p := range try {
			switch {
			case errs[i] == nil:
				locks[p] = got[i]
				b.mu.Lock()
				b.held[p] = hold{product: p, l: got[i], since: time.Now(), inRound: true}
				b.mu.Unlock()
			case errors.Is(errs[i], lock.ErrNotObtained) && !errors.Is(errs[i], lock.ErrNoQuorum):
				b.noteContended(p)
				b.startWaiter(ctx, p, 0)
			default:
				b.failProduct(p, fmt.Errorf("lock product %q: %w", p, errs[i]))
			}
		}
	}
	if len(locks) == 0 {
		return false
	}

	// Take the pending orders of the locked products, up to MaxBatch: the
	// product whose first order came first goes first, so that a product
	// left out of a full round is first in the next.
	b.mu.Lock()
	var reqs []*request
	products := make([]string, 0, len(locks))
	for p := range locks {
		products = append(products, p)
	}
	oldest := func(p string) time.Time {
		if rs := b.pending[p]; len(rs) > 0 {
			return rs[0].order.AcceptedAt
		}
		return time.Time{}
	}
	slices.SortFunc(products, func(x, y string) int {
		if c := oldest(x).Compare(oldest(y)); c != 0 {
			return c
		}
		return strings.Compare(x, y)
	})
	tokens := make(map[string]int64, len(locks))
	for _, p := range products {
		rs := b.pending[p]
		n := min(len(rs), b.w.cfg.MaxBatch-len(reqs))
		if n == 0 {
			continue
		}
		reqs = append(reqs, rs[:n]...)
		b.pending[p] = rs[n:]
		tokens[p] = locks[p].Token()
	}
	// A lock got during this round whose orders all ended meanwhile (while
	// its acquisition was in flight, when no held lock told withdraw to
	// wake the runner): give it back now, or no round would. One left out
	// of a full round (MaxBatch) waits for the next, idle: sweepIdle may
	// hand it over if this round lasts.
	for p, l := range locks {
		if _, ok := tokens[p]; ok {
			continue
		}
		if len(b.pending[p]) == 0 {
			delete(b.held, p)
			b.releaseLater(l)
			continue
		}
		if h, ok := b.held[p]; ok {
			h.inRound = false
			if h.idle.IsZero() {
				h.idle = time.Now()
			}
			b.held[p] = h
		}
	}
	b.mu.Unlock()
	if len(reqs) == 0 {
		return false
	}

	batch := inventory.Batch{Orders: make([]inventory.OrderRequest, len(reqs)), Tokens: tokens}
	used := make([]*lock.Lock, 0, len(tokens))
	for p := range tokens {
		used = append(used, locks[p])
	}
	for i, r := range reqs {
		batch.Orders[i] = r.order
	}
	res, err := b.apply(ctx, batch, used)

	if isolatable(ctx, err, len(reqs)) {
		// An error that is the round's own orders' (PostgreSQL refused one
		// of them: a value it cannot store), not the lock's or the
		// database's: it would fail every order of the round, each a try,
		// again in every round the refused order shares. Decide them in
		// halves under the same locks, so that only the refused fails.
		b.isolate(ctx, reqs, locks, tokens)
		b.afterRound(ctx, tokens, err)
		return true
	}
	lost := lostLocks(err, locks) // before afterRound releases them
	b.afterRound(ctx, tokens, err)
	if err != nil {
		b.w.handleStale(ctx, err)
		// A transient database error (a killed connection, a failover, the
		// round's timeout) puts the round's orders back at the head of
		// their products' queues too, a try each: handed back to asynq,
		// they would return after its retry delay, behind orders accepted
		// after them that the next round decides at once.
		if again, transient := requeueable(ctx, err); again {
			b.requeue(reqs, err, transient, lost)
		} else {
			for _, r := range reqs {
				r.res <- result{err: err}
			}
		}
		return true
	}
	for i, r := range reqs {
		r.res <- result{d: res.Decisions[i]}
	}
	b.w.afterCommit(ctx, res, batch.Orders)
	return true
}

// apply decides batch in one transaction under used, the locks of its
// products: the transaction ends when one of them is lost, or after
// roundTimeout. A database call that stops answering (a silent network
// failure, a row lock held by a runaway transaction) must not hold the
// runner, and every lock of the round, for ever: its orders fail and retry.
func (b *batcher) apply(ctx context.Context, batch inventory.Batch, used []*lock.Lock) (*inventory.Result, error) {
	start := time.Now()
	txCtx, stopWatch := withLocks(ctx, used...)
	txCtx, cancelTx := context.WithTimeout(txCtx, roundTimeout)
	res, err := b.w.store.Apply(txCtx, batch)
	err = lockErr(txCtx, err)
	cancelTx()
	stopWatch()
	b.w.metrics.observeRound(len(batch.Orders), len(batch.Tokens), time.Since(start), err)
	return res, err
}

// isolatable reports whether a round of n orders that failed with err is
// decided again in parts (isolate): PostgreSQL refused a value of one of
// its orders, the round is no lock's or database's fault (requeueable), and
// the runner still runs.
func isolatable(ctx context.Context, err error, n int) bool {
	if err == nil || n < 2 || ctx.Err() != nil || !refusedValue(err) {
		return false
	}
	again, _ := requeueable(ctx, err)
	return !again
}

// refusedValue reports whether err is PostgreSQL refusing a value of a
// row (classes 22 data exception, 23 integrity constraint, 54 program
// limit; such as an Idempotency-Key that another order id of the buyer
// holds, from a task the API did not make; queue.Decode already refuses
// what text columns and their indexes cannot hold): the fault of one
// order, not of the round. Other errors (bad SQL, a failed assertion)
// would fail every part of the round alike.
func refusedValue(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// lostLocks returns, when err is a lost lock's, the products among locks
// whose lock is lost (its context ended); call it before the round's locks
// are released.
func lostLocks(err error, locks map[string]*lock.Lock) map[string]bool {
	if !errors.Is(err, lock.ErrLost) {
		return nil
	}
	lost := map[string]bool{}
	for p, l := range locks {
		if l.Context().Err() != nil {
			lost[p] = true
		}
	}
	return lost
}

// requeueable reports whether a round that failed with err goes back to
// the batcher (a lost lock, a stale fence, a transient database error while
// the runner runs), and whether err is the transient kind.
func requeueable(ctx context.Context, err error) (again, transient bool) {
	// A lost lock aborts the transaction with a cancelled context, which
	// the store reports as ErrUnavailable too (lockErr joins both): that is
	// the lock's fault, not the database's.
	lost := errors.Is(err, lock.ErrLost)
	transient = errors.Is(err, inventory.ErrUnavailable) && !lost && ctx.Err() == nil
	return transient || lost || errors.Is(err, inventory.ErrStaleFence), transient
}

// isolate decides the orders of a round that failed with an error of its
// own orders, in halves (in order: each product's earlier orders first),
// halving again each part that fails so, until the order that fails it
// fails alone. A part that fails as a whole round would be requeued (a lost
// lock, a stale fence, a transient fault) goes back to the batcher with
// every part not yet decided. It runs only after such a failure: rounds
// that commit do not pay for it.
func (b *batcher) isolate(ctx context.Context, reqs []*request, locks map[string]*lock.Lock, tokens map[string]int64) {
	work := [][]*request{reqs[:len(reqs)/2], reqs[len(reqs)/2:]}
	for len(work) > 0 {
		part := work[0]
		work = work[1:]
		err := b.applyPart(ctx, part, locks, tokens)
		if err == nil {
			continue
		}
		if again, transient := requeueable(ctx, err); again || ctx.Err() != nil {
			b.w.handleStale(ctx, err)
			rest := slices.Concat(append([][]*request{part}, work...)...)
			if again {
				b.requeue(rest, err, transient, lostLocks(err, locks))
			} else {
				for _, r := range rest {
					r.res <- result{err: err}
				}
			}
			return
		}
		if len(part) == 1 {
			part[0].res <- result{err: err}
			continue
		}
		m := len(part) / 2
		work = append([][]*request{part[:m], part[m:]}, work...)
	}
}

// applyPart decides part of a round's orders in a transaction of its own,
// under the round's locks, and answers them if it commits.
func (b *batcher) applyPart(ctx context.Context, part []*request, locks map[string]*lock.Lock, tokens map[string]int64) error {
	batch := inventory.Batch{Orders: make([]inventory.OrderRequest, len(part)), Tokens: map[string]int64{}}
	var used []*lock.Lock
	for i, r := range part {
		batch.Orders[i] = r.order
		p := r.order.ProductID
		if _, ok := batch.Tokens[p]; !ok {
			batch.Tokens[p] = tokens[p]
			used = append(used, locks[p])
		}
	}
	res, err := b.apply(ctx, batch, used)
	if err != nil {
		return err
	}
	for i, r := range part {
		r.res <- result{d: res.Decisions[i]}
	}
	b.w.afterCommit(ctx, res, batch.Orders)
	return nil
}

// afterRound decides, for each lock used in the round, whether to keep it for
// the next round (more orders here, nobody else asked) or release it.
func (b *batcher) afterRound(ctx context.Context, tokens map[string]int64, roundErr error) {
	b.mu.Lock()
	var busy []string
	var release []hold
	for p := range tokens {
		h := b.held[p]
		switch {
		case roundErr != nil, len(b.pending[p]) == 0, time.Since(h.since) > maxHold, h.l.Context().Err() != nil:
			release = append(release, h)
			delete(b.held, p)
		default:
			busy = append(busy, p)
			h.inRound, h.idle = false, time.Now()
			b.held[p] = h
		}
	}
	b.mu.Unlock()
	if len(busy) > 0 {
		wanted, err := b.w.wanted(ctx, busy)
		if err != nil {
			wanted = busy // cannot tell: be fair, hand them over
		}
		b.mu.Lock()
		for _, p := range wanted {
			release = append(release, b.held[p])
			delete(b.held, p)
		}
		b.mu.Unlock()
		for _, p := range wanted {
			b.noteContended(p) // bounded, as everywhere
		}
	}
	b.w.releaseAll(release)
	// Products whose lock was released with orders still pending here.
	b.mu.Lock()
	var again []string
	for _, h := range release {
		if len(b.pending[h.product]) > 0 {
			again = append(again, h.product)
		}
	}
	b.mu.Unlock()
	for _, p := range again {
		b.startWaiter(ctx, p, yieldDelay)
	}
}

// contendedFor is how long a product counts as contended after its lock
// was last found busy or wanted by another process.
const contendedFor = 2 * time.Second

func (b *batcher) noteContended(p string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.contended) > 10_000 {
		clear(b.contended) // bound the memory; forgetting costs a barge
	}
	b.contended[p] = time.Now()
}

// recentlyContended returns the products among ps contended lately.
func (b *batcher) recentlyContended(ps []string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, p := range ps {
		if t, ok := b.contended[p]; ok && time.Since(t) < contendedFor {
			out = append(out, p)
		}
	}
	return out
}

// startWaiter acquires product p's lock in the background, after an
// optional delay, announcing meanwhile that this process wants it; once
// acquired, the lock is handed to the runner. A negative delay waits
// instead until no other process that announced earlier still waits (at
// most 2×wantTTL).
func (b *batcher) startWaiter(ctx context.Context, p string, delay time.Duration) {
	b.mu.Lock()
	if b.acquiring[p] {
		b.mu.Unlock()
		return
	}
	b.acquiring[p] = true
	b.mu.Unlock()
	// In b.bg, as releases are: a lock it gets as the runner stops is
	// released before stop returns, not left to its TTL on a closed client.
	b.bg.Go(func() {
		defer func() {
			b.mu.Lock()
			delete(b.acquiring, p)
			b.mu.Unlock()
			b.signal()
		}()
		// The announcement is withdrawn before the waiter ends: before stop
		// returns, and before another waiter for p announces (an old
		// waiter's withdrawal must not remove the new one's).
		wctx, cancel := context.WithCancel(ctx)
		withdrawn := make(chan struct{})
		go func() {
			defer close(withdrawn)
			b.w.want(wctx, p)
		}()
		defer func() {
			cancel()
			<-withdrawn
		}()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-wctx.Done():
				return
			}
		}
		if delay < 0 {
			// Queue behind processes that announced earlier: let them take
			// the lock first (Acquire takes a free lock at once, and the
			// lock orders no waiters across processes). Bounded, for an
			// announcer that never takes it.
			give := time.Now().Add(2 * wantTTL)
			for time.Now().Before(give) {
				if ahead, err := b.w.ahead(wctx, p); err != nil || !ahead {
					break
				}
				select {
				case <-time.After(yieldDelay):
				case <-wctx.Done():
					return
				}
			}
		}
		for {
			// Stop waiting when nobody here needs the product any more.
			b.mu.Lock()
			needed := len(b.pending[p]) > 0
			b.mu.Unlock()
			if !needed {
				return
			}
			actx, acancel := context.WithTimeout(wctx, time.Second)
			l, err := b.w.locks.Acquire(actx, lockKey(p))
			acancel()
			switch {
			case err == nil:
				// The orders it was for may have ended meanwhile (their
				// task timed out), and a round dropped them: then no round
				// would look at this lock again, and it would stay held,
				// and renewed, until more orders for p came here. Nor
				// would one after the runner stopped.
				b.mu.Lock()
				needed := len(b.pending[p]) > 0 && !b.closed
				if needed {
					b.held[p] = hold{product: p, l: l, since: time.Now(), idle: time.Now()}
				}
				b.mu.Unlock()
				if !needed {
					b.w.release(l)
				}
				// Wake the runner now, not after the withdrawal's round
				// trips (acquiring[p] holds off another waiter until then).
				b.signal()
				return
			case wctx.Err() != nil:
				return
			case errors.Is(err, context.DeadlineExceeded):
				continue // still held elsewhere: check we still need it, wait on
			default:
				b.failProduct(p, fmt.Errorf("lock product %q: %w", p, err))
				return
			}
		}
	})
}

// failProduct answers every pending order of p with err (retryable: asynq
// tries the tasks again after its backoff).
func (b *batcher) failProduct(p string, err error) {
	b.mu.Lock()
	rs := b.pending[p]
	delete(b.pending, p)
	b.mu.Unlock()
	for _, r := range rs {
		r.res <- result{err: err}
	}
}

// requeue puts orders of a round that lost its lock or fence, or met a
// transient database error (transient), back at the head of their
// product's queue, up to maxRequeues (lock) or maxDBRetries (database)
// times each; after a database error the product's next round waits
// (dbRetryDelay). When only some products' fences were stale, or locks lost
// (lost: the products whose lock was lost, as lostLocks found them before
// the round's locks were released), the orders of the others (whose locks
// were good) go back without counting a try: one stale product, or one
// lost lock, must not use up the tries of every order it shared a round
// with.
//
// Once an order of a product has no try left, every order of that product
// this process holds goes back to asynq with it: the oldest order runs out
// first, and the later ones, decided in the next round, would take the
// stock it was owed. Those never tried in a round go back as errNotTried,
// which costs them no asynq try; one whose task is on its last try stays
// (asynq would archive it, the order never tried), to be decided in the
// next round, possibly ahead of the older one. (Back in asynq each returns
// after its own jittered retry delay, so a later one can still come back
// first: a reviewer's run saw it in 2 of 40 products. Orders held by
// different workers have no stricter order either.)
func (b *batcher) requeue(reqs []*request, err error, transient bool, lost map[string]bool) {
	stale := map[string]bool{}
	for _, s := range inventory.StaleFences(err) {
		stale[s.ProductID] = true
	}
	for p := range lost {
		stale[p] = true
	}
	b.mu.Lock()
	byProduct := map[string][]*request{}
	spent := map[string]bool{}
	tries := map[string]int{} // the most database tries of a product's orders
	for _, r := range reqs {
		p := r.order.ProductID
		switch {
		case transient:
			r.dbTries++
		case len(stale) == 0 || stale[p]:
			r.requeues++
		}
		tries[p] = max(tries[p], r.dbTries)
		if r.requeues > maxRequeues || r.dbTries > maxDBRetries {
			spent[p] = true
		}
		byProduct[p] = append(byProduct[p], r)
	}
	var out []*request
	for p, rs := range byProduct {
		if spent[p] {
			out = append(out, rs...)
			var keep []*request
			for _, r := range b.pending[p] {
				if r.lastTry && r.requeues == 0 && r.dbTries == 0 {
					keep = append(keep, r)
				} else {
					out = append(out, r)
				}
			}
			if len(keep) > 0 {
				b.pending[p] = keep
			} else {
				delete(b.pending, p)
			}
			delete(b.notBefore, p)
			continue
		}
		// Back in order of acceptance: an order asynq retried may have
		// come in during the round, accepted before some of the round's.
		rs = append(rs, b.pending[p]...)
		slices.SortStableFunc(rs, func(x, y *request) int { return x.order.AcceptedAt.Compare(y.order.AcceptedAt) })
		b.pending[p] = rs
		if transient {
			d := dbRetryDelay << (tries[p] - 1)
			b.notBefore[p] = time.Now().Add(d)
			time.AfterFunc(d, b.signal)
		}
	}
	b.mu.Unlock()
	for _, r := range out {
		if r.requeues == 0 && r.dbTries == 0 {
			// An order that was never in a round goes back with the
			// product's: it must not pay a try for it.
			r.res <- result{err: fmt.Errorf("%w with its product's orders: %w", errNotTried, err)}
			continue
		}
		r.res <- result{err: err}
	}
	b.signal()
}

// sweepIdle hands over, to a process that asked for it, a held lock that
// has waited longer than maxHold for a round (the runner is stuck in a long
// one, up to roundTimeout): it would otherwise be kept and renewed, unused,
// while the other process could decide its orders at once. The runner
// waits for the lock again after its round.
func (b *batcher) sweepIdle(ctx context.Context) {
	t := time.NewTicker(wantTTL / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		var idle []string
		for p, h := range b.held {
			if !h.inRound && !h.idle.IsZero() && time.Since(h.idle) > maxHold {
				idle = append(idle, p)
			}
		}
		b.mu.Unlock()
		if len(idle) == 0 {
			continue
		}
		wanted, err := b.w.wanted(ctx, idle)
		if err != nil || len(wanted) == 0 {
			continue
		}
		var release []hold
		b.mu.Lock()
		for _, p := range wanted {
			if h, ok := b.held[p]; ok && !h.inRound {
				release = append(release, h)
				delete(b.held, p)
			}
		}
		b.mu.Unlock()
		b.w.releaseAll(release)
		for _, h := range release {
			b.noteContended(h.product)
		}
		b.signal() // the runner waits for them again
	}
}
