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

	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// scriptStep is what a [scriptHook] does to one script run (EVAL or
// EVALSHA: asynq's enqueue, queue.Inspector.Withdraw): flags.
type scriptStep int

const (
	holdRun   scriptStep = 1 << iota // wait until released, then go on
	failUnrun                        // fail it without running it
	loseReply                        // run it, then fail it: its reply lost
	holdReply                        // run it, then wait until released
)

// scriptHook is a go-redis hook that, armed with a key, takes one step
// for each script run naming that key, in order, until its steps are
// taken; other commands pass. A run answered NOSCRIPT (go-redis then runs
// it again with EVAL) takes its step again, without the hold.
type scriptHook struct {
	mu      sync.Mutex
	key     string
	steps   []scriptStep
	taken   int
	held    chan struct{}
	release chan struct{}
}

// arm sets the key and steps. held is closed when a run is held, and
// release lets it go on.
func (h *scriptHook) arm(key string, steps ...scriptStep) (held <-chan struct{}, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.key, h.steps, h.taken = key, steps, 0
	h.held, h.release = make(chan struct{}), make(chan struct{})
	r := h.release
	return h.held, sync.OnceFunc(func() { close(r) })
}

// takenSteps is how many steps runs have taken since arm.
func (h *scriptHook) takenSteps() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.taken
}

// take returns the step for cmd (0 for a command that is not a script run
// naming the key, or past the steps) and its number.
func (h *scriptHook) take(cmd redis.Cmder) (step scriptStep, n int) {
	if c := cmd.Name(); c != "evalsha" && c != "eval" {
		return 0, 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.taken == len(h.steps) || !slices.ContainsFunc(cmd.Args(), func(a any) bool { return fmt.Sprint(a) == h.key }) {
		return 0, 0
	}
	h.taken++
	return h.steps[h.taken-1], h.taken
}

// untake gives step n back, without its hold: its run was not made.
func (h *scriptHook) untake(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.taken = n - 1
	h.steps[n-1] &^= holdRun
}

func (h *scriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		step, n := h.take(cmd)
		if step&holdRun != 0 {
			h.hold(ctx)
		}
		if step&failUnrun != 0 {
			err := errors.New("scriptHook: call failed")
			cmd.SetErr(err)
			return err
		}
		err := next(ctx, cmd)
		switch {
		case n != 0 && redis.HasErrorPrefix(err, "NOSCRIPT"):
			h.untake(n)
		case step&loseReply != 0:
			err = errors.New("scriptHook: reply lost")
			cmd.SetErr(err)
		case step&holdReply != 0:
			h.hold(ctx)
		}
		return err
	}
}

// hold closes held and waits for release (or ctx's end).
func (h *scriptHook) hold(ctx context.Context) {
	h.mu.Lock()
	held, release := h.held, h.release
	h.mu.Unlock()
	close(held)
	select {
	case <-release:
	case <-ctx.Done():
	}
}

// placeHeld places r in the background, its Redis client hooked by hook,
// armed with the task key of r's keyed order and steps, the first of which
// must hold (holdRun or holdReply). It returns once the run is held; finish releases it and
// returns PlaceOrder's answer.
func placeHeld(t *testing.T, e *saletest.Env, hook *scriptHook, req sale.PlaceOrderRequest, steps ...scriptStep) (finish func() (sale.Placed, error)) {
	t.Helper()
	held, release := hook.arm("asynq:{"+e.Queue+"}:t:"+sale.KeyedOrderID(req.UserID, req.IdempotencyKey), steps...)
	type result struct {
		placed sale.Placed
		err    error
	}
	done := make(chan result, 1)
	go func() {
		p, err := e.Service.PlaceOrder(context.Background(), req)
		done <- result{p, err}
	}()
	select {
	case <-held:
	case r := <-done:
		t.Fatalf("order %+v answered before its held call: %+v, %v", req, r.placed, r.err)
	case <-time.After(10 * time.Second):
		t.Fatalf("order %+v: the held call never came", req)
	}
	return func() (sale.Placed, error) {
		t.Helper()
		release()
		select {
		case r := <-done:
			return r.placed, r.err
		case <-time.After(sale.OrderBudget + 10*time.Second):
			t.Fatalf("order %+v never answered", req)
			return sale.Placed{}, nil
		}
	}
}
