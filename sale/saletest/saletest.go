// Package saletest wires a real [sale.Service] for tests: a fresh migrated
// PostgreSQL database, and a queue name and key prefix of the test's own on
// the shared Redis (or on a Redis the test names, such as a private
// redis-server it means to kill). Nothing is mocked. There is no worker:
// [Env.Decide] decides a queued order the way a worker would.
package saletest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	sub "github.com/flashsale/flashsale/internal/subscribe"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/notify"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/ratelimit"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/soldout"
)

// Options configures [New]. Nil or the zero value takes the defaults.
type Options struct {
	// RedisURL is the Redis of the queue, the sold-out flags and the
	// notifications; default the shared test Redis (testenv.RedisURL).
	RedisURL string
	// APIClient, with RedisURL, connects to it as the API process does
	// (queue.ParseRedisURL, queue.NewRedisClient: go-redis's retries and
	// read timeout), not with a client that fails fast: for tests of how
	// long a call waits on a Redis that hangs.
	APIClient bool
	// RateLimit, when set, limits orders per user with a
	// [ratelimit.Limiter] on the test's Redis (its KeyPrefix is set to the
	// test's). Limiter, when set, is used instead.
	RateLimit *ratelimit.Options
	Limiter   sale.Limiter
	// OnFailOpen and ProductTimeout are passed to the service
	// (sale.Options).
	OnFailOpen     func(context.Context, error)
	ProductTimeout time.Duration
	// CacheTTL is how long the sold-out gate trusts what it read (both
	// answers); default 100ms, so tests see flags quickly and restocks
	// settle fast (Settle, 300ms), while a read of a flag may take up to
	// 250ms on a loaded machine and still count (the gate gives a "sold
	// out" to no caller later than Settle - 50ms after its read began).
	CacheTTL time.Duration
	// Hook, when set, is added to the service's Redis client (queue,
	// flags, notifications): to hold a call back at a chosen moment.
	Hook redis.Hook
	// DatabaseURL is an empty database that New migrates and uses (one on
	// a private PostgreSQL the test stops, say); default a fresh database
	// on the shared test PostgreSQL.
	DatabaseURL string
}

// Env is a Service and everything under it.
type Env struct {
	Service   *sale.Service
	Store     *inventory.Store
	Redis     *redis.Client
	Gate      *soldout.Gate
	Hub       *notify.Hub
	Publisher *notify.Publisher
	Inspector *queue.Inspector
	// Asynq reads and changes the queue directly (archive, delete tasks).
	Asynq *asynq.Inspector
	// DatabaseURL is the test's database.
	DatabaseURL string
	// Queue is the asynq queue name and Prefix the key prefix, both unique
	// to the test.
	Queue, Prefix string

	fence atomic.Int64
}

// sharedRedis reports whether url (empty: the default) names the shared
// test Redis (testenv.RedisURL), whatever its database.
func sharedRedis(url string) bool {
	if url == "" {
		return true
	}
	// A URL redis.ParseURL refuses (another scheme) names no shared Redis.
	named, err := redis.ParseURL(url)
	if err != nil {
		return false
	}
	shared, err := redis.ParseURL(testenv.RedisURL())
	return err == nil && named.Addr == shared.Addr
}

// New wires a Service for t. Everything is closed, and the test's Redis
// keys and database removed, at cleanup. The hub is subscribed before New
// returns.
func New(t testing.TB, opts *Options) *Env {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 100 * time.Millisecond
	}
	ns := testenv.Namespace(t)
	e := &Env{Queue: "q_" + ns, Prefix: "t:" + ns + ":"}
	if opts.DatabaseURL == "" {
		e.DatabaseURL = inventorytest.NewDatabase(t)
	} else {
		e.DatabaseURL = opts.DatabaseURL
		inventorytest.Migrate(t, e.DatabaseURL)
	}
	e.Store = inventorytest.Open(t, e.DatabaseURL, &inventory.Options{MaxConns: 4})

	switch {
	case opts.RedisURL == "":
		e.Redis = testenv.Redis(t)
	case opts.APIClient:
		copt, err := queue.ParseRedisURL(opts.RedisURL, 0)
		if err != nil {
			t.Fatalf("saletest: redis URL: %v", err)
		}
		rdb, err := queue.NewRedisClient(copt)
		if err != nil {
			t.Fatalf("saletest: redis client: %v", err)
		}
		c, ok := rdb.(*redis.Client)
		if !ok {
			t.Fatalf("saletest: APIClient wants a redis:// URL, got a %T", rdb)
		}
		e.Redis = c
		t.Cleanup(func() { _ = e.Redis.Close() })
	default:
		ropt, err := redis.ParseURL(opts.RedisURL)
		if err != nil {
			t.Fatalf("saletest: redis URL: %v", err)
		}
		// Fail fast once the test has killed the server; end calls at
		// their context's deadline, as the API's client does
		// (queue.NewRedisClient).
		ropt.MaxRetries = -1
		ropt.DialTimeout = time.Second
		ropt.ContextTimeoutEnabled = true
		e.Redis = redis.NewClient(ropt)
		t.Cleanup(func() { _ = e.Redis.Close() })
	}
	// Registered after the client's Close, so it runs before it. Only on
	// the shared Redis: a Redis the test names is its own (a private
	// redis-server, often killed by then), where DeleteKeys would retry
	// for its minute and fail the test.
	if sharedRedis(opts.RedisURL) {
		testenv.DeleteKeys(t, e.Redis, e.Prefix)
		testenv.DeleteKeys(t, e.Redis, "rate:"+e.Prefix)
		testenv.DeleteKeys(t, e.Redis, "asynq:{"+e.Queue+"}")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Redis.SRem(ctx, "asynq:queues", e.Queue)
	})

	if opts.Hook != nil {
		e.Redis.AddHook(opts.Hook)
	}
	qopts := queue.Options{Queue: e.Queue}
	client := asynq.NewClientFromRedisClient(e.Redis)
	e.Asynq = asynq.NewInspectorFromRedisClient(e.Redis)
	e.Inspector = queue.NewInspector(e.Redis, qopts)
	e.Gate = soldout.New(e.Redis, soldout.Options{KeyPrefix: e.Prefix, CacheTTL: opts.CacheTTL, OpenTTL: opts.CacheTTL,
		Committed: e.Store.RestockGen}) // as cmd/flashsale wires it
	e.Publisher = notify.NewPublisher(e.Redis, e.Prefix)
	e.Hub = notify.NewHub(e.Redis, e.Prefix)
	subscribe(t, "notify hub", e.Hub.Run)
	subscribe(t, "sold-out gate", e.Gate.Run)
	limiter := opts.Limiter
	if limiter == nil && opts.RateLimit != nil {
		ro := *opts.RateLimit
		ro.KeyPrefix = e.Prefix + "ratelimit:"
		l, err := ratelimit.New(e.Redis, ro)
		if err != nil {
			t.Fatalf("saletest: %v", err)
		}
		limiter = l
	}
	e.Service = sale.New(e.Store, queue.NewProducer(client, qopts), e.Inspector, e.Gate, e.Hub,
		&sale.Options{Limiter: limiter, OnFailOpen: opts.OnFailOpen, ProductTimeout: opts.ProductTimeout})
	t.Cleanup(e.Service.Close) // before the clients it uses close
	return e
}

// subscribe runs a subscriber (the notify hub, the sold-out gate) until
// cleanup and waits for its subscription.
func subscribe(t testing.TB, name string, run func(ctx context.Context, ready func()) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	done, err := sub.Start(ctx, run)
	t.Cleanup(func() {
		cancel()
		<-done
	})
	if err != nil {
		t.Fatalf("saletest: %s: %v", name, err)
	}
}

// CreateProduct creates a product or fails the test.
func (e *Env) CreateProduct(t testing.TB, id string, stock int64, perUserLimit int) inventory.Product {
	t.Helper()
	return inventorytest.CreateProduct(t, e.Store, id, stock, perUserLimit)
}

// PlaceOrder places an order or fails the test.
func (e *Env) PlaceOrder(t testing.TB, r sale.PlaceOrderRequest) sale.Placed {
	t.Helper()
	p, err := e.Service.PlaceOrder(context.Background(), r)
	if err != nil {
		t.Fatalf("saletest: place order %+v: %v", r, err)
	}
	return p
}

// Decide does what a worker does with the queued order id: decides it in
// PostgreSQL with a fresh fencing token ([Env.Commit]), flags its product
// sold out when the stock reached 0, removes its task from the queue and
// announces it. It fails the test when the order is not queued or cannot be
// decided.
func (e *Env) Decide(t testing.TB, id string) inventory.Order {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, res := e.commit(ctx, t, id)
	o := d.Order
	if ps, ok := res.Products[o.ProductID]; ok && ps.Stock == 0 {
		if _, err := e.Gate.Mark(ctx, o.ProductID, ps.RestockGen); err != nil {
			t.Fatalf("saletest: mark %s sold out: %v", o.ProductID, err)
		}
	}
	if err := e.Asynq.DeleteTask(e.Queue, id); err != nil {
		t.Fatalf("saletest: delete task %s: %v", id, err)
	}
	if err := e.Publisher.Publish(ctx, notify.Outcome{OrderID: id}); err != nil {
		t.Fatalf("saletest: announce %s: %v", id, err)
	}
	return d.Order
}

// Commit decides the queued order id in PostgreSQL only, with a fresh
// fencing token, and leaves its task queued and the decision unannounced:
// a worker's run cut short after its commit. It fails the test when the
// order is not queued or cannot be decided.
func (e *Env) Commit(t testing.TB, id string) inventory.Order {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, _ := e.commit(ctx, t, id)
	return d.Order
}

func (e *Env) commit(ctx context.Context, t testing.TB, id string) (inventory.Decision, inventory.Result) {
	t.Helper()
	ti, err := e.Inspector.Lookup(ctx, id)
	if err != nil {
		t.Fatalf("saletest: look up order %s: %v", id, err)
	}
	o := ti.Order
	res, err := e.Store.Apply(ctx, inventory.Batch{
		Orders: []inventory.OrderRequest{{ID: o.ID, ProductID: o.ProductID, UserID: o.UserID,
			Quantity: o.Quantity, IdempotencyKey: o.IdempotencyKey, AcceptedAt: o.AcceptedAt}},
		Tokens: map[string]int64{o.ProductID: e.fence.Add(1)},
	})
	if err != nil {
		t.Fatalf("saletest: decide order %s: %v", id, err)
	}
	d := res.Decisions[0]
	if d.Err != nil {
		t.Fatalf("saletest: decide order %s: %v", id, d.Err)
	}
	return d, *res
}

// MarkSoldOut flags product sold out at its current restock generation, as
// a worker does after selling the last unit, and waits until the service
// sees the flag.
func (e *Env) MarkSoldOut(t testing.TB, product string) {
	t.Helper()
	ctx := context.Background()
	p, err := e.Store.Product(ctx, product)
	if err != nil {
		t.Fatalf("saletest: product %s: %v", product, err)
	}
	ok, err := e.Gate.Mark(ctx, product, p.RestockGen)
	if err != nil || !ok {
		t.Fatalf("saletest: mark %s sold out: got %v, %v; want true, nil", product, ok, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		sold, err := e.Gate.SoldOut(ctx, product)
		if err != nil {
			return err
		}
		if !sold {
			return fmt.Errorf("%s not seen sold out yet", product)
		}
		return nil
	})
}
