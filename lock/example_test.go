package lock_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lock"
)

// examplePrefix is a key prefix unique to one run of an example on the
// shared test Redis; cleanup deletes its keys (fence counters never expire).
func examplePrefix() (prefix string, cleanup func()) {
	prefix = "lockexample:" + rand.Text()[:8] + ":"
	return prefix, func() {
		opt, err := redis.ParseURL(testenv.RedisURL())
		if err != nil {
			return
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	}
}

// Acquire a lock, do the work under its context with its fencing token, then
// release it.
func Example() {
	ctx := context.Background()
	prefix, cleanup := examplePrefix()
	defer cleanup()
	c, err := lock.NewFromURLs([]string{testenv.RedisURL()}, &lock.Options{KeyPrefix: prefix})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	l, err := c.Acquire(ctx, "sku:42")
	if err != nil {
		panic(err)
	}
	// Run the guarded work under l.Context(): it is cancelled if the lock is
	// lost. Pass l.Token() to the storage, which rejects older tokens.
	work := func(ctx context.Context, token int64) error { return ctx.Err() }
	if err := work(l.Context(), l.Token()); err != nil {
		fmt.Println("work:", err)
	}
	if err := l.Release(ctx); err != nil {
		fmt.Println("release:", err)
	}
	fmt.Println("released:", context.Cause(l.Context()))
	// Output:
	// released: lock: released
}

// TryAcquire does not wait: a held lock gives ErrNotObtained.
func ExampleClient_TryAcquire() {
	ctx := context.Background()
	prefix, cleanup := examplePrefix()
	defer cleanup()
	c, err := lock.NewFromURLs([]string{testenv.RedisURL()}, &lock.Options{KeyPrefix: prefix})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	l, err := c.TryAcquire(ctx, "report")
	if err != nil {
		panic(err)
	}
	defer l.Release(ctx)

	_, err = c.TryAcquire(ctx, "report")
	fmt.Println(errors.Is(err, lock.ErrNotObtained), lock.CauseOf(err))
	// Output:
	// true busy
}

// When the context ends while waiting, the error matches both ErrNotObtained
// and the context's error.
func ExampleClient_Acquire_deadline() {
	prefix, cleanup := examplePrefix()
	defer cleanup()
	c, err := lock.NewFromURLs([]string{testenv.RedisURL()}, &lock.Options{KeyPrefix: prefix})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	l, err := c.Acquire(context.Background(), "batch")
	if err != nil {
		panic(err)
	}
	defer l.Release(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = c.Acquire(ctx, "batch")
	fmt.Println(errors.Is(err, lock.ErrNotObtained), errors.Is(err, context.DeadlineExceeded))
	fmt.Println(err)
	// Output:
	// true true
	// lock: not obtained: context deadline exceeded
}

// Fencing tokens increase with every acquisition of a key.
func ExampleLock_Token() {
	ctx := context.Background()
	prefix, cleanup := examplePrefix()
	defer cleanup()
	c, err := lock.NewFromURLs([]string{testenv.RedisURL()}, &lock.Options{KeyPrefix: prefix})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	for range 3 {
		l, err := c.Acquire(ctx, "sku:7")
		if err != nil {
			panic(err)
		}
		fmt.Println("token", l.Token())
		l.Release(ctx)
	}
	// Output:
	// token 1
	// token 2
	// token 3
}

// The lock's context is cancelled with ErrLost as soon as the lock may be
// lost, here because its key was deleted behind its back.
func ExampleLock_Context() {
	ctx := context.Background()
	prefix, cleanup := examplePrefix()
	defer cleanup()
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	c, err := lock.New([]redis.UniversalClient{rdb}, &lock.Options{TTL: 300 * time.Millisecond, KeyPrefix: prefix})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	l, err := c.Acquire(ctx, "job")
	if err != nil {
		panic(err)
	}
	rdb.Del(ctx, prefix+"{job}") // someone else's mistake

	select {
	case <-l.Context().Done(): // noticed at the next renewal (TTL/3)
		fmt.Println(errors.Is(context.Cause(l.Context()), lock.ErrLost))
	case <-time.After(5 * time.Second): // a missing Output line fails the example
		fmt.Println("not noticed within 5s")
	}
	fmt.Println(errors.Is(l.Release(ctx), lock.ErrNotHeld))
	// Output:
	// true
	// true
}

// An Observer receives metrics events; embed NopObserver to implement only
// some of them.
type acquireCounter struct {
	lock.NopObserver
	acquired int
}

func (o *acquireCounter) Acquired(key string, latency, wait time.Duration) { o.acquired++ }

func ExampleObserver() {
	obs := &acquireCounter{}
	prefix, cleanup := examplePrefix()
	defer cleanup()
	c, err := lock.NewFromURLs([]string{testenv.RedisURL()}, &lock.Options{KeyPrefix: prefix, Observer: obs})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	l, err := c.Acquire(context.Background(), "k")
	if err != nil {
		panic(err)
	}
	l.Release(context.Background())
	fmt.Println(obs.acquired, c.Stats().Released)
	// Output:
	// 1 1
}
