package sale_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

// A keyed order on a product flagged sold out is refused (409, a final
// answer) only on a flag read again after its lookups, the queue's and
// the database's (see TestKeyedSoldOutAnswerDoesNotOutliveARestock). When
// that second read fails (here the queue's Redis dies while the database
// lookup waits on a lock), the product is not known sold out: the order
// goes on as on a product on sale, and with Redis down answers 503, which
// the buyer may retry, never 409.
func TestKeyedSoldOutAnswerNeedsAReadableFlag(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	e := saletest.New(t, &saletest.Options{RedisURL: r.URL(0), OnFailOpen: func(context.Context, error) {}})
	e.CreateProduct(t, "p1", 0, 0)
	e.MarkSoldOut(t, "p1")
	ctx := context.Background()
	// The order has read the flag and looked in the queue; its database
	// lookup waits on the lock.
	got, release := placeKeyedWhileOrdersLocked(t, e, "p1")
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	// The gate's cached "sold out" has expired: the flag is read again,
	// and cannot be.
	testenv.Eventually(t, 5*time.Second, func() error {
		if _, err := e.Gate.SoldOut(ctx, "p1"); err == nil {
			return errors.New("the gate still answers from its cache")
		}
		return nil
	})
	release() // the lookup answers: not found
	a := <-got
	if errors.Is(a.err, sale.ErrSoldOut) || !errors.Is(a.err, sale.ErrUnavailable) {
		t.Fatalf("keyed order whose second flag read failed: %+v, %v; want ErrUnavailable, not a final sold out", a.p, a.err)
	}
}
