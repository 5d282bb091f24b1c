package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/notify"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/worker"
)

// runHub subscribes a hub to e's announcements; the subscription ends at
// cleanup.
func (e *env) runHub(t *testing.T) *notify.Hub {
	t.Helper()
	hub := notify.NewHub(e.rdb, e.prefix)
	ctx, stop := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = hub.Run(ctx, func() { close(ready) })
	}()
	t.Cleanup(func() { // before e.rdb is closed (registered after it)
		stop()
		<-done
	})
	select {
	case <-ready:
	case <-done:
		t.Fatalf("hub did not subscribe: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("hub not subscribed within 10s")
	}
	return hub
}

// watchOrder watches order id on a hub of e's announcements; the watch and
// the subscription end at cleanup.
func (e *env) watchOrder(t *testing.T, id string) *notify.Watch {
	t.Helper()
	w := e.runHub(t).Watch(id)
	t.Cleanup(w.Stop)
	return w
}

// An order recorded failed without a round (its last try given up, or a
// dead order recorded by the rescue scan: buried, or found in the archive)
// is announced, as a round's outcomes are: a buyer's long poll on it
// answers at once, not at its next re-check (up to a second later, each
// re-check a read of PostgreSQL, which may be just back from an outage).
func TestRecordedFailureIsAnnounced(t *testing.T) {
	t.Parallel()
	o := queue.Order{ID: "o1", ProductID: "p", UserID: "u1", Quantity: 1, AcceptedAt: time.Unix(1_800_000_000, 0)}
	for _, tc := range []struct {
		name    string
		started bool // make runs once the worker has started
		make    func(t *testing.T, e *env)
	}{
		{"last try given up", true, func(t *testing.T, e *env) {
			ctx := context.Background()
			held, err := e.rival(t).TryAcquire(ctx, "product:p")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Release(ctx)
			tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			tk, err := queue.Encode(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.w.ProcessTask(tctx, tk); !errors.Is(err, asynq.SkipRetry) {
				t.Fatalf("last try timed out: %v, want SkipRetry", err)
			}
		}},
		{"buried", false, func(t *testing.T, e *env) {
			if err := queue.NewInspector(e.rdb, e.queue).Bury(context.Background(), o); err != nil {
				t.Fatal(err)
			}
		}},
		{"archived", false, func(t *testing.T, e *env) { e.archive(t, o) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond}, 2*time.Second)
			inventorytest.CreateProduct(t, e.store, "p", 5, 0)
			w := e.watchOrder(t, o.ID)
			if !tc.started {
				tc.make(t, e)
			}
			e.start(t)
			if tc.started {
				tc.make(t, e)
			}
			select {
			case <-w.C:
				if got, ok := w.Outcome(); !ok || got.Status != "failed" {
					t.Errorf("announced %+v (%v), want o1 failed", got, ok)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("o1's failure never announced")
			}
		})
	}
}
