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
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A keyed order whose second look at PostgreSQL (after its enqueue) finds
// it gone withdraws its task to queue it again unchecked. When the
// withdrawal's call fails, Redis may have run it all the same (its reply
// lost: a read timeout, a dropped connection) and deleted the task. An
// order answered queued must be in the queue: the answer is queued only
// with a task there, or else 503 (not a final answer).
func TestOrderWhoseWithdrawalFailsIsQueuedOrUnavailable(t *testing.T) {
	t.Parallel()
	for _, ran := range []bool{true, false} { // whether Redis ran the failed withdrawal
		t.Run(fmt.Sprintf("ran=%v", ran), func(t *testing.T) {
			t.Parallel()
			pg := testenv.PrivatePostgres(t)
			hook := &withdrawFault{}
			e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg), Hook: hook})
			e.CreateProduct(t, "p1", 5, 0)
			ctx := context.Background()
			req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
			id := sale.KeyedOrderID(req.UserID, req.IdempotencyKey)
			held, release := hook.arm("asynq:{"+e.Queue+"}:t:"+id, ran)
			type result struct {
				placed sale.Placed
				err    error
			}
			done := make(chan result, 1)
			go func() {
				p, err := e.Service.PlaceOrder(ctx, req)
				done <- result{p, err}
			}()
			select {
			case <-held:
			case r := <-done:
				t.Fatalf("answered before its enqueue: %+v, %v", r.placed, r.err)
			case <-time.After(10 * time.Second):
				t.Fatal("the enqueue never came")
			}
			// PostgreSQL goes down after the first look.
			if err := pg.Kill(); err != nil {
				t.Fatal(err)
			}
			release()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("never answered")
			}
			if !hook.failed() {
				t.Fatal("no withdrawal was made to fail")
			}
			switch {
			case errors.Is(r.err, sale.ErrUnavailable):
			case r.err != nil || r.placed.Status != inventory.StatusQueued:
				t.Errorf("%+v, %v; want queued or ErrUnavailable", r.placed, r.err)
			default:
				if ti, err := e.Inspector.Lookup(ctx, id); err != nil {
					t.Errorf("answered queued, but the queue holds %+v, %v: the order is lost", ti, err)
				}
			}
		})
	}
}

// withdrawFault is a go-redis hook that, armed with a task key, holds back
// the first script run naming it (the enqueue) until released, and fails
// the second (the withdrawal): after Redis ran it (its reply lost), or
// before.
type withdrawFault struct {
	mu      sync.Mutex
	key     string
	n       int
	ran     bool
	armed   string // key as armed
	held    chan struct{}
	release chan struct{}
}

// arm makes the next script run naming key wait (held is closed when it
// does, release lets it go on) and the one after it fail.
func (h *withdrawFault) arm(key string, ran bool) (held <-chan struct{}, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.key, h.armed, h.n, h.ran = key, key, 0, ran
	h.held, h.release = make(chan struct{}), make(chan struct{})
	r := h.release
	return h.held, sync.OnceFunc(func() { close(r) })
}

// failed reports whether the hook failed a second script run.
func (h *withdrawFault) failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n >= 2
}

// take counts a script run naming the armed key: 1 for the first, 2 for
// the second (the hook is then disarmed), 0 for any other command.
func (h *withdrawFault) take(cmd redis.Cmder) (n int, ran bool, held, release chan struct{}) {
	if c := cmd.Name(); c != "evalsha" && c != "eval" {
		return 0, false, nil, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.key == "" || !slices.ContainsFunc(cmd.Args(), func(a any) bool { return fmt.Sprint(a) == h.key }) {
		return 0, false, nil, nil
	}
	h.n++
	if h.n == 2 {
		h.key = ""
	}
	return h.n, h.ran, h.held, h.release
}

func (h *withdrawFault) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *withdrawFault) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *withdrawFault) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		n, ran, held, release := h.take(cmd)
		switch {
		case n == 1:
			close(held)
			select {
			case <-release:
			case <-ctx.Done():
			}
		case n == 2 && !ran:
			err := errors.New("withdrawFault: call failed")
			cmd.SetErr(err)
			return err
		}
		err := next(ctx, cmd)
		switch {
		case n != 0 && redis.HasErrorPrefix(err, "NOSCRIPT"):
			// Not run: go-redis runs it again with EVAL, counted instead.
			h.untake(n)
		case n == 2:
			err = errors.New("withdrawFault: reply lost")
			cmd.SetErr(err)
		}
		return err
	}
}

// untake takes back the count of the n-th script run, not run after all.
func (h *withdrawFault) untake(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n = n - 1
	if n == 1 {
		h.held = make(chan struct{}) // the hold is over; the re-run is not held
		h.release = make(chan struct{})
		close(h.release)
	}
	if n == 2 {
		h.key = h.armed
	}
}
