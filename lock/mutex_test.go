package lock_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

// contend runs clients × goroutines workers that each take the lock for key
// iterations times and, under it, increment counterKey on store with a
// non-atomic GET then SET. Every hold is recorded in holds. It returns the
// number of completed increments; stop ends the workers early.
func contend(t *testing.T, ctx context.Context, clients []*lock.Client, goroutines, iterations int, key string, store *redis.Client, counterKey string, holds *locktest.Holds, stop <-chan struct{}, tolerateNoQuorum bool) int {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done int
	)
	for ci, c := range clients {
		for g := range goroutines {
			owner := fmt.Sprintf("c%d/g%d", ci, g)
			wg.Go(func() {
				for range iterations {
					select {
					case <-stop:
						return
					default:
					}
					l, err := c.Acquire(ctx, key)
					if err != nil {
						t.Errorf("%s: Acquire: %v", owner, err)
						return
					}
					from := time.Now()
					err = increment(l.Context(), store, counterKey)
					to := time.Now()
					holds.Add(owner, l.Token(), from, to)
					if err != nil {
						t.Errorf("%s: increment: %v", owner, err)
						return
					}
					mu.Lock()
					done++
					mu.Unlock()
					// With a node killed, a holder whose majority included
					// it can no longer confirm on a majority: ErrNoQuorum.
					if rerr := l.Release(context.Background()); rerr != nil && !(tolerateNoQuorum && errors.Is(rerr, lock.ErrNoQuorum)) {
						t.Errorf("%s: Release: %v", owner, rerr)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	return done
}

// increment is a deliberately racy read-modify-write.
func increment(ctx context.Context, r *redis.Client, key string) error {
	v, err := r.Get(ctx, key).Int()
	if err != nil && err != redis.Nil {
		return err
	}
	return r.Set(ctx, key, strconv.Itoa(v+1), 0).Err()
}

func counter(t *testing.T, r *redis.Client, key string) int {
	t.Helper()
	v, err := r.Get(context.Background(), key).Int()
	if err != nil && err != redis.Nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

// TestMutualExclusion: 8 clients × 16 goroutines on one key, each increment
// under the lock is a non-atomic GET+SET; the count must be exact, the holds
// disjoint and the tokens increasing in hold order. On 1 node and on 3.
func TestMutualExclusion(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			t.Parallel()
			const clients, goroutines, iterations = 8, 16, 4
			nodes := locktest.Nodes(t, n)
			prefix := locktest.Prefix(t)
			opts := &lock.Options{TTL: 5 * time.Second, NodeTimeout: 500 * time.Millisecond, KeyPrefix: prefix}
			cs := make([]*lock.Client, clients)
			for i := range cs {
				cs[i] = locktest.Client(t, nodes, opts)
			}
			store := locktest.Redis(t, nodes[0])
			var holds locktest.Holds
			ctx := locktest.Ctx(t, 60*time.Second)
			done := contend(t, ctx, cs, goroutines, iterations, "item", store, prefix+"counter", &holds, nil, false)
			if want := clients * goroutines * iterations; done != want {
				t.Fatalf("completed %d increments, want %d", done, want)
			}
			if got, want := counter(t, store, prefix+"counter"), clients*goroutines*iterations; got != want {
				t.Errorf("counter = %d, want %d", got, want)
			}
			holds.Check(t)
			var attempts uint64
			for _, c := range cs {
				attempts += c.Stats().Attempts
			}
			t.Logf("%d acquisitions in %d attempts", done, attempts)
			for i, c := range cs {
				if s := c.Stats(); s.Held != 0 || s.Waiting != 0 {
					t.Errorf("client %d stats after the run: Held %d, Waiting %d, want 0, 0", i, s.Held, s.Waiting)
				}
			}
		})
	}
}
