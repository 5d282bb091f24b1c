package worker_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/worker"
)

// acquiredHold is a lock.Observer that holds back, inside the lock client,
// the first acquisition of key made while armed: once the nodes granted it,
// before Acquire or TryAcquire returns it (the observer's Acquired runs
// there). got is closed when it holds one, which goes on once proceed is
// closed. Every event also goes to the observer it wraps. (Observers must
// not block; this one does, on purpose, to open the window between a lock
// being granted and its caller taking it.)
type acquiredHold struct {
	lock.Observer
	key     string
	armed   atomic.Bool
	once    sync.Once
	got     chan struct{}
	proceed chan struct{}
}

func newAcquiredHold(key string) *acquiredHold {
	return &acquiredHold{key: key, got: make(chan struct{}), proceed: make(chan struct{})}
}

// observe is an env's lock option: it puts h in front of the client's
// observer.
func (h *acquiredHold) observe(o *lock.Options) {
	h.Observer = o.Observer
	o.Observer = h
}

func (h *acquiredHold) Acquired(key string, latency, wait time.Duration) {
	if key == h.key && h.armed.Load() {
		h.once.Do(func() {
			close(h.got)
			<-h.proceed
		})
	}
	h.Observer.Acquired(key, latency, wait)
}

// wait waits, at most within, until h holds an acquisition.
func (h *acquiredHold) wait(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-h.got:
	case <-time.After(within):
		t.Fatalf("no acquisition of %s within %v", h.key, within)
	}
}

// A lock a round gets for a product whose only order ends while the
// acquisition is in flight is given back by that round: no held lock told
// withdraw to wake the runner, and no later round comes while no order
// arrives, so the lock would be kept, and renewed, for as long (sweepIdle
// does not offer a lock taken into a round to the processes that want it).
// Before this test, removing the hand-back (6d9c1db) passed every worker
// test: here the lock stayed held for the whole wait below, five times its
// TTL.
func TestLockGotForOrdersThatEndedMeanwhileIsGivenBack(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	hold := newAcquiredHold("product:p")
	e := newEnvWith(t, worker.Config{Mode: worker.ModeBatch}, ttl, hold.observe)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	hold.armed.Store(true)
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	perr := make(chan error, 1)
	go func() { perr <- e.w.ProcessTask(pctx, task(t, "o1", "p", "u1", 1, 1)) }()
	// The round has p's lock granted, not yet in hand: the order ends, and
	// is withdrawn, before the round goes on.
	hold.wait(t, 10*time.Second)
	pcancel()
	if err := <-perr; !errors.Is(err, context.Canceled) {
		t.Fatalf("order cancelled while its round acquired the lock: %v, want context.Canceled", err)
	}
	if n := worker.PendingOrders(e.w, "p"); n != 0 {
		t.Fatalf("%d orders of p pending once its only order ended, want 0", n)
	}
	close(hold.proceed)
	rivalTakes(t, e.rival(t), "p", 5*ttl, "p's lock still held though no order here needs it")
}

// A lock a waiter gets as the batcher's runner stops (after the runner gave
// its locks back) is released before Shutdown returns, not kept, renewed
// until the lock client closes, and then left to its TTL: in a rolling
// restart, every other worker would wait that long for the product. Before
// this test, dropping the waiter's check of b.closed (6414eee) passed every
// worker test: here the lock was still held once Shutdown returned; as did
// starting the waiter outside b.bg (eef59ec), for which Shutdown returned
// without waiting for it.
func TestLockGotAsTheRunnerStopsIsReleased(t *testing.T) {
	t.Parallel()
	hold := newAcquiredHold("product:p")
	e := newEnvWith(t, worker.Config{Mode: worker.ModeBatch}, 10*time.Second, hold.observe)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	ctx := context.Background()
	rival := e.rival(t)
	held, err := rival.TryAcquire(ctx, "product:p")
	if err != nil {
		t.Fatal(err)
	}
	hold.armed.Store(true)
	perr := make(chan error, 1)
	go func() { perr <- e.w.ProcessTask(ctx, task(t, "o1", "p", "u1", 1, 1)) }()
	// The order's round finds p's lock busy; a waiter waits for it.
	e.waitWanting(t, "p", 1, 10*time.Second)
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// The waiter has the lock granted, not yet in hand, when Shutdown
	// stops the runner: the order, still pending, is answered once the
	// runner has given its locks back.
	hold.wait(t, 10*time.Second)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.w.Shutdown()
	}()
	select {
	case err := <-perr:
		if err == nil {
			t.Fatal("order decided though its lock was never in the runner's hands")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the pending order was not answered within 30s of Shutdown")
	}
	// Shutdown waits for the waiter, which holds the lock: it must not
	// return meanwhile (a second is ample for one that does not wait, and
	// the check cannot fail one that does).
	select {
	case <-stopped:
		t.Fatal("Shutdown returned while a lock waiter was still getting its lock")
	case <-time.After(time.Second):
	}
	close(hold.proceed)
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return within 30s")
	}
	// Released by now, so that closing the lock client next (as
	// cmd/flashsale does) leaves nothing to its TTL.
	l, err := rival.TryAcquire(ctx, "product:p")
	if err != nil {
		t.Fatalf("p's lock once Shutdown returned: %v, want it free", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
