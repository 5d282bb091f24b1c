package sale_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A keyed order re-sent while its first send is being decided: the re-send
// reads PostgreSQL (not decided yet), a worker commits the order and
// removes its task, then the re-send's enqueue goes through, since no task
// has the id any more. That new task duplicates a decided order: a worker
// reaching it changes nothing, but until one does, a read during a
// PostgreSQL outage found a task that never ran and answered queued, a
// final status undone. The re-send must answer for the decided order (a
// replay, or 422 for another body) and leave no task behind; or, when
// PostgreSQL went down before it could look again, leave its task marked
// as accepted during an outage (unchecked), which reads unavailable.
func TestResendRacingItsOrdersDecisionLeavesNoTask(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	hold := &enqueueHold{}
	e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg), Hook: hold})
	e.CreateProduct(t, "p1", 5, 0)
	ctx := context.Background()
	tests := []struct {
		key      string
		quantity int  // re-sent; the first send's is 1
		kill     bool // PostgreSQL killed after the decision, before the enqueue (the last case)
		wantErr  error
	}{
		{"same-body", 1, false, nil},
		{"other-body", 3, false, sale.ErrIdempotencyMismatch},
		{"then-outage", 1, true, nil},
	}
	for _, tt := range tests {
		req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: tt.key}
		first := e.PlaceOrder(t, req)
		held, release := hold.arm("asynq:{" + e.Queue + "}:t:" + first.OrderID)
		type result struct {
			placed sale.Placed
			err    error
		}
		done := make(chan result, 1)
		go func() {
			req := req
			req.Quantity = tt.quantity
			p, err := e.Service.PlaceOrder(ctx, req)
			done <- result{p, err}
		}()
		select {
		case <-held:
		case r := <-done:
			t.Fatalf("%s: re-send answered before its enqueue: %+v, %v", tt.key, r.placed, r.err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the re-send's enqueue never came", tt.key)
		}
		e.Decide(t, first.OrderID) // committed, its task removed
		if tt.kill {
			if err := pg.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		release()
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the re-send never answered", tt.key)
		}
		if tt.kill {
			// Nothing can tell it from a first send: queued, as one
			// accepted during an outage, its task unchecked.
			if r.err != nil || r.placed.Status != inventory.StatusQueued {
				t.Errorf("%s: re-send = %+v, %v; want queued", tt.key, r.placed, r.err)
			}
			if ti, err := e.Inspector.Lookup(ctx, first.OrderID); err != nil || !ti.Order.Unchecked {
				t.Errorf("%s: the queue holds %+v, %v; want a task accepted unchecked", tt.key, ti, err)
			}
			continue
		}
		switch {
		case tt.wantErr != nil && !errors.Is(r.err, tt.wantErr):
			t.Errorf("%s: re-send = %+v, %v; want %v", tt.key, r.placed, r.err, tt.wantErr)
		case tt.wantErr == nil && (r.err != nil || !r.placed.Replay || r.placed.Status != inventory.StatusSucceeded):
			t.Errorf("%s: re-send = %+v, %v; want a replay, succeeded", tt.key, r.placed, r.err)
		}
		if ti, err := e.Inspector.Lookup(ctx, first.OrderID); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("%s: the queue holds %+v, %v for the decided order; want no task", tt.key, ti, err)
		}
	}
	for _, tt := range tests {
		id := sale.KeyedOrderID("alice", tt.key)
		if v, err := e.Service.Order(ctx, id); !errors.Is(err, sale.ErrUnavailable) {
			t.Errorf("%s: read during an outage: %s, quantity %d, %v; want ErrUnavailable (it read succeeded before)", tt.key, v.Status, v.Quantity, err)
		}
	}
}

// enqueueHold is a go-redis hook that, once armed with a task key, holds
// back the first script run naming that key (asynq's enqueue is one) until
// released.
type enqueueHold struct {
	mu      sync.Mutex
	key     string
	held    chan struct{}
	release chan struct{}
}

// arm makes the next script run naming key wait: held is closed when it
// does, and release lets it go on.
func (h *enqueueHold) arm(key string) (held <-chan struct{}, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.key, h.held, h.release = key, make(chan struct{}), make(chan struct{})
	r := h.release
	return h.held, sync.OnceFunc(func() { close(r) })
}

// take disarms the hook and returns the channels of its armed hold if cmd
// runs a script naming its key.
func (h *enqueueHold) take(cmd redis.Cmder) (held, release chan struct{}) {
	if n := cmd.Name(); n != "evalsha" && n != "eval" {
		return nil, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.key == "" || !slices.ContainsFunc(cmd.Args(), func(a any) bool { return fmt.Sprint(a) == h.key }) {
		return nil, nil
	}
	h.key = ""
	return h.held, h.release
}

func (h *enqueueHold) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *enqueueHold) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *enqueueHold) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if held, release := h.take(cmd); held != nil {
			close(held)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return next(ctx, cmd)
	}
}
