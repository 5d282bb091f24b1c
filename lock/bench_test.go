package lock_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/lock"
)

// The benchmarks of one run share private redis-server processes: one for
// the 1-node cases, three for the 3-node cases. TestMain kills them.
var (
	benchMu    sync.Mutex
	benchNodes []*localsvc.Redis
	benchDirs  []string
)

func benchServers(b *testing.B, n int) []*localsvc.Redis {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if benchNodes == nil {
		for range 4 {
			dir, err := os.MkdirTemp("", "lockbench-*")
			if err != nil {
				b.Fatal(err)
			}
			benchDirs = append(benchDirs, dir)
			r, err := localsvc.StartRedis(localsvc.RedisOptions{Dir: dir})
			if err != nil {
				b.Fatalf("start redis-server: %v", err)
			}
			benchNodes = append(benchNodes, r)
		}
	}
	if n == 1 {
		return benchNodes[:1]
	}
	return benchNodes[1 : 1+n]
}

func stopBenchNodes() {
	benchMu.Lock()
	defer benchMu.Unlock()
	for _, r := range benchNodes {
		_ = r.Kill()
	}
	for _, d := range benchDirs {
		_ = os.RemoveAll(d)
	}
}

func benchClients(b *testing.B, servers []*localsvc.Redis) []*redis.Client {
	b.Helper()
	out := make([]*redis.Client, len(servers))
	for i, s := range servers {
		out[i] = redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true})
		b.Cleanup(func() { out[i].Close() })
	}
	return out
}

var benchSeq atomic.Int64

func benchKey(name string) string {
	return fmt.Sprintf("bench:%s:%d:%d", name, time.Now().UnixNano(), benchSeq.Add(1))
}

// locker is one library's acquire+release, as used by the benchmarks.
type locker interface {
	acquire(ctx context.Context, key string) (release func() error, err error)
}

type ourLock struct{ c *lock.Client }

func (o ourLock) acquire(ctx context.Context, key string) (func() error, error) {
	l, err := o.c.Acquire(ctx, key)
	if err != nil {
		return nil, err
	}
	return func() error { return l.Release(ctx) }, nil
}

type bsmLock struct {
	c     *redislock.Client
	retry bool
}

func (o bsmLock) acquire(ctx context.Context, key string) (func() error, error) {
	var opt *redislock.Options
	if o.retry {
		opt = &redislock.Options{RetryStrategy: redislock.LinearBackoff(10 * time.Millisecond)}
	}
	l, err := o.c.Obtain(ctx, key, 10*time.Second, opt)
	if err != nil {
		return nil, err
	}
	return func() error { return l.Release(ctx) }, nil
}

type redsyncLock struct{ rs *redsync.Redsync }

func (o redsyncLock) acquire(ctx context.Context, key string) (func() error, error) {
	// Default retry delay (random 50-250ms); unlimited tries so that no
	// waiter gives up under contention.
	m := o.rs.NewMutex(key, redsync.WithExpiry(10*time.Second), redsync.WithTries(math.MaxInt32))
	if err := m.LockContext(ctx); err != nil {
		return nil, err
	}
	return func() error {
		_, err := m.UnlockContext(ctx)
		return err
	}, nil
}

// newLocker builds lib on the given servers; clients is how many independent
// clients (processes) share the work, for our lock.
func newLocker(b *testing.B, lib string, servers []*localsvc.Redis, clients int) []locker {
	b.Helper()
	var out []locker
	for range clients {
		rdbs := benchClients(b, servers)
		switch lib {
		case "lock", "lock-noqueue":
			nodes := make([]redis.UniversalClient, len(rdbs))
			for i, r := range rdbs {
				nodes[i] = r
			}
			c, err := lock.New(nodes, &lock.Options{KeyPrefix: "bench:"})
			if err != nil {
				b.Fatal(err)
			}
			if lib == "lock-noqueue" {
				lock.SetLocalQueue(c, false)
			}
			b.Cleanup(func() { c.Close() })
			out = append(out, ourLock{c})
		case "redislock":
			out = append(out, bsmLock{c: redislock.New(rdbs[0]), retry: true})
		case "redsync":
			pools := make([]redsyncredis.Pool, len(rdbs))
			for i, r := range rdbs {
				pools[i] = goredis.NewPool(r)
			}
			out = append(out, redsyncLock{redsync.New(pools...)})
		default:
			b.Fatalf("unknown lib %q", lib)
		}
	}
	return out
}

// BenchmarkUncontended: one goroutine acquires and releases one key, so
// every acquisition succeeds at the first attempt. One op = acquire+release.
func BenchmarkUncontended(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, lib := range []string{"lock", "redislock", "redsync"} {
			if lib == "redislock" && nodes > 1 {
				continue // single-node only
			}
			b.Run(fmt.Sprintf("nodes=%d/lib=%s", nodes, lib), func(b *testing.B) {
				l := newLocker(b, lib, benchServers(b, nodes), 1)[0]
				key := benchKey("u")
				ctx := context.Background()
				for b.Loop() {
					release, err := l.acquire(ctx, key)
					if err != nil {
						b.Fatalf("acquire: %v", err)
					}
					if err := release(); err != nil {
						b.Fatalf("release: %v", err)
					}
				}
			})
		}
	}
}

// BenchmarkContended: 32 goroutines loop acquire+release on one key with an
// empty critical section. One op = one acquisition. Reports acquisitions per
// second, true hand-offs per second (acquisitions by a different goroutine
// than the previous holder: a goroutine that re-takes the lock it just
// released hands nothing off), and the mean and 99th percentile of the time
// spent waiting in acquire.
func BenchmarkContended(b *testing.B) {
	const goroutines = 32
	cases := []struct {
		lib     string
		nodes   int
		clients int
	}{
		{"lock", 1, 1},
		{"lock-noqueue", 1, 1},
		{"lock", 1, 4},
		{"redislock", 1, 1},
		{"redsync", 1, 1},
		{"lock", 3, 1},
		{"redsync", 3, 1},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("nodes=%d/lib=%s", tc.nodes, tc.lib)
		if tc.clients > 1 {
			name += fmt.Sprintf("/clients=%d", tc.clients)
		}
		b.Run(name, func(b *testing.B) {
			lockers := newLocker(b, tc.lib, benchServers(b, tc.nodes), tc.clients)
			key := benchKey("c")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			var (
				next     atomic.Int64
				owner    atomic.Int64 // last holder's goroutine number + 1
				handoffs atomic.Int64
				mu       sync.Mutex
				waits    = make([]time.Duration, 0, b.N)
				wg       sync.WaitGroup
			)
			total := int64(b.N)
			b.ResetTimer()
			start := time.Now()
			for g := range goroutines {
				l := lockers[g%len(lockers)]
				id := int64(g + 1)
				wg.Go(func() {
					local := make([]time.Duration, 0, b.N/goroutines+1)
					defer func() {
						mu.Lock()
						waits = append(waits, local...)
						mu.Unlock()
					}()
					for next.Add(1) <= total {
						t0 := time.Now()
						release, err := l.acquire(ctx, key)
						if err != nil {
							b.Errorf("acquire: %v", err)
							return
						}
						local = append(local, time.Since(t0))
						if prev := owner.Swap(id); prev != id && prev != 0 {
							handoffs.Add(1)
						}
						if err := release(); err != nil {
							b.Errorf("release: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if len(waits) == 0 {
				return
			}
			slices.Sort(waits)
			var sum time.Duration
			for _, w := range waits {
				sum += w
			}
			b.ReportMetric(float64(len(waits))/elapsed.Seconds(), "acq/s")
			b.ReportMetric(float64(handoffs.Load())/elapsed.Seconds(), "handoffs/s")
			b.ReportMetric(float64(sum.Microseconds())/float64(len(waits))/1000, "wait-mean-ms")
			b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "wait-p99-ms")
		})
	}
}

// BenchmarkTryAcquireMany: one client takes 24 distinct free keys with
// TryAcquireMany and gives them back with ReleaseMany, as the worker does
// for the products of a batch. One op = both calls.
func BenchmarkTryAcquireMany(b *testing.B) {
	const n = 24
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d/keys=%d", nodes, n), func(b *testing.B) {
			var urls []string
			for _, r := range benchServers(b, nodes) {
				urls = append(urls, r.URL(0))
			}
			c, err := lock.NewFromURLs(urls, &lock.Options{TTL: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			ctx := context.Background()
			keys := make([]string, n)
			for b.Loop() {
				for i := range keys {
					keys[i] = benchKey("m")
				}
				locks, errs := c.TryAcquireMany(ctx, keys)
				for _, err := range errs {
					if err != nil {
						b.Fatalf("TryAcquireMany: %v", err)
					}
				}
				for _, err := range c.ReleaseMany(ctx, locks) {
					if err != nil {
						b.Fatalf("ReleaseMany: %v", err)
					}
				}
			}
		})
	}
}
