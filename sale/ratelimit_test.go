package sale_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/ratelimit"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A limit of more than one order a second refuses too: its waits are under
// a second (at most 100ms at 10 a second), and a refusal is any wait, not
// only one a client would read as a whole second or more.
func TestSubSecondRateLimit(t *testing.T) {
	t.Parallel()
	e := saletest.New(t, &saletest.Options{RateLimit: &ratelimit.Options{Rate: 1, Per: time.Second}})
	e.CreateProduct(t, "p1", 100, 0)
	ctx := context.Background()
	// Two orders of one user within the second: the second is refused.
	// A pair that took a second or more (a stalled machine) tells nothing;
	// another user tries again.
	for i := range 5 {
		user := fmt.Sprint("u", i)
		start := time.Now()
		if _, err := e.Service.PlaceOrder(ctx, sale.PlaceOrderRequest{ProductID: "p1", UserID: user, Quantity: 1}); err != nil {
			t.Fatalf("%s's first order: %v", user, err)
		}
		_, err := e.Service.PlaceOrder(ctx, sale.PlaceOrderRequest{ProductID: "p1", UserID: user, Quantity: 1})
		took := time.Since(start)
		var rl *sale.RateLimitedError
		switch {
		case errors.As(err, &rl):
			if rl.RetryAfter <= 0 || rl.RetryAfter > time.Second {
				t.Fatalf("%s's second order: RetryAfter %v, want in (0, 1s]", user, rl.RetryAfter)
			}
			return
		case took >= time.Second:
			t.Logf("%s's two orders took %v: the limit had refilled", user, took)
		default:
			t.Fatalf("%s's second order within %v of the first: %v; want a RateLimitedError (one order a second)", user, took, err)
		}
	}
	t.Fatal("no two orders of a user were placed within a second")
}
