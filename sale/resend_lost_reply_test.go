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

// A keyed re-send racing its order's decision (see
// TestResendRacingItsOrdersDecisionLeavesNoTask) whose enqueue goes through
// but whose reply is lost: PlaceOrder tries again, the task it made refuses
// the second try, and the re-send is answered from that task. It is the
// re-send's own, a duplicate of the decided order all the same: it must be
// checked as one just queued (withdrawn, the re-send answered with the
// decided order), not left to read queued during a PostgreSQL outage.
func TestResendRacingItsOrdersDecisionWithALostEnqueueReplyLeavesNoTask(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	hook := &lostEnqueueReply{}
	e := saletest.New(t, &saletest.Options{DatabaseURL: testenv.PrivateDatabase(t, pg), Hook: hook})
	e.CreateProduct(t, "p1", 5, 0)
	ctx := context.Background()
	req := sale.PlaceOrderRequest{ProductID: "p1", UserID: "alice", Quantity: 1, IdempotencyKey: "k"}
	first := e.PlaceOrder(t, req)
	held, release := hook.arm("asynq:{" + e.Queue + "}:t:" + first.OrderID)
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
		t.Fatalf("re-send answered before its enqueue: %+v, %v", r.placed, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the re-send's enqueue never came")
	}
	e.Decide(t, first.OrderID) // committed, its task removed
	release()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the re-send never answered")
	}
	if r.err != nil || !r.placed.Replay || r.placed.Status != inventory.StatusSucceeded {
		t.Errorf("re-send = %+v, %v; want a replay, succeeded", r.placed, r.err)
	}
	if ti, err := e.Inspector.Lookup(ctx, first.OrderID); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("the queue holds %+v, %v for the decided order; want no task", ti, err)
	}
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	if v, err := e.Service.Order(ctx, first.OrderID); !errors.Is(err, sale.ErrUnavailable) {
		t.Errorf("read during an outage: %s, %v; want ErrUnavailable (it read succeeded before)", v.Status, err)
	}
}

// lostEnqueueReply is a go-redis hook that, armed with a task key, holds
// back the first script run naming it (the enqueue) until released, then
// runs it and loses its reply.
type lostEnqueueReply struct {
	mu      sync.Mutex
	key     string
	held    chan struct{}
	release chan struct{}
}

// arm makes the next script run naming key wait (held is closed when it
// does, release lets it go on) and then fail, though Redis ran it.
func (h *lostEnqueueReply) arm(key string) (held <-chan struct{}, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.key, h.held, h.release = key, make(chan struct{}), make(chan struct{})
	r := h.release
	return h.held, sync.OnceFunc(func() { close(r) })
}

// take disarms the hook and returns its armed key and channels if cmd runs
// a script naming the key.
func (h *lostEnqueueReply) take(cmd redis.Cmder) (key string, held, release chan struct{}) {
	if n := cmd.Name(); n != "evalsha" && n != "eval" {
		return "", nil, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.key == "" || !slices.ContainsFunc(cmd.Args(), func(a any) bool { return fmt.Sprint(a) == h.key }) {
		return "", nil, nil
	}
	key, h.key = h.key, ""
	return key, h.held, h.release
}

func (h *lostEnqueueReply) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *lostEnqueueReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *lostEnqueueReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		key, held, release := h.take(cmd)
		if held == nil {
			return next(ctx, cmd)
		}
		close(held)
		select {
		case <-release:
		case <-ctx.Done():
		}
		err := next(ctx, cmd)
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Not run: go-redis runs it again with EVAL, to fail instead.
			h.mu.Lock()
			h.key, h.held, h.release = key, make(chan struct{}), make(chan struct{})
			close(h.release)
			h.mu.Unlock()
			return err
		}
		err = errors.New("lostEnqueueReply: reply lost")
		cmd.SetErr(err)
		return err
	}
}
