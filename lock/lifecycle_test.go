package lock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

func mustAcquire(t *testing.T, c *lock.Client, key string) *lock.Lock {
	t.Helper()
	l, err := c.Acquire(locktest.Ctx(t, 10*time.Second), key)
	if err != nil {
		t.Fatalf("Acquire %q: %v", key, err)
	}
	return l
}

// TestHolderCrash: a holder whose client is closed without releasing blocks
// others for at most the TTL; its lock's context says lost and closed.
func TestHolderCrash(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	const ttl = 500 * time.Millisecond
	opts := &lock.Options{TTL: ttl, KeyPrefix: locktest.Prefix(t)}
	crashed := locktest.Client(t, nodes, opts)
	other := locktest.Client(t, nodes, opts)

	l := mustAcquire(t, crashed, "k")
	start := time.Now()
	if err := crashed.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	locktest.WaitDone(t, l, time.Second)
	if cause := context.Cause(l.Context()); !errors.Is(cause, lock.ErrLost) || !errors.Is(cause, lock.ErrClosed) {
		t.Errorf("cause after Close = %v, want ErrLost and ErrClosed", cause)
	}
	l2, err := other.Acquire(locktest.Ctx(t, 5*time.Second), "k")
	if err != nil {
		t.Fatalf("Acquire after the holder crashed: %v", err)
	}
	defer l2.Release(context.Background())
	// The margin is for a loaded machine (polls, scheduling); a lock that
	// did not expire would fail the Acquire above after 5s.
	if d, limit := time.Since(start), ttl+time.Second; d > limit {
		t.Errorf("lock free after %v, want within TTL (%v, limit %v)", d, ttl, limit)
	}
	if err := l.Release(context.Background()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Release of the crashed holder's lock: got %v, want ErrNotHeld", err)
	}
	if s := crashed.Stats(); s.Held != 0 {
		t.Errorf("closed client holds %d locks, want 0", s.Held)
	}
}

// TestWatchdogKeepsLock: the watchdog keeps a lock past twice its first
// validity while a rival keeps trying.
func TestWatchdogKeepsLock(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 3} {
		t.Run(map[int]string{1: "nodes=1", 3: "nodes=3"}[n], func(t *testing.T) {
			t.Parallel()
			nodes := locktest.Nodes(t, n)
			// A 2s TTL with the default NodeTimeout (500ms here) and a
			// renewal every 200ms: the lock survives unless no renewal
			// succeeds for about 1.8s. (With a 300ms TTL and a 50ms
			// NodeTimeout one 200ms stall of a loaded machine lost it.)
			// Without the watchdog it still ends at its first ValidUntil.
			const ttl = 2 * time.Second
			opts := &lock.Options{TTL: ttl, RenewInterval: 200 * time.Millisecond, KeyPrefix: locktest.Prefix(t)}
			holder := locktest.Client(t, nodes, opts)
			rival := locktest.Client(t, nodes, opts)
			acquired := time.Now()
			l := mustAcquire(t, holder, "k")
			first := l.ValidUntil()
			// Hold it until twice its first validity has passed.
			end := time.NewTimer(time.Until(first.Add(first.Sub(acquired))))
			defer end.Stop()
			tick := time.NewTicker(ttl / 4)
			defer tick.Stop()
		loop:
			for {
				select {
				case <-l.Done():
					t.Fatalf("lock lost while the watchdog should keep it: %v", context.Cause(l.Context()))
				case <-end.C:
					break loop
				case <-tick.C:
					if l2, err := rival.TryAcquire(context.Background(), "k"); !errors.Is(err, lock.ErrNotObtained) {
						if l2 != nil {
							l2.Release(context.Background())
						}
						t.Fatalf("rival TryAcquire: got %v, want ErrNotObtained", err)
					}
				}
			}
			if err := l.Context().Err(); err != nil {
				t.Fatalf("lock lost after twice its first validity: %v", context.Cause(l.Context()))
			}
			if vu := l.ValidUntil(); !vu.After(first) {
				t.Errorf("ValidUntil %v not moved past the first one %v", vu, first)
			}
			// The nodes agree: the rival finds the key held (busy), not
			// merely unreachable.
			if _, err := rival.TryAcquire(context.Background(), "k"); lock.CauseOf(err) != lock.CauseBusy {
				t.Errorf("rival TryAcquire after twice the first validity: got %v, want busy", err)
			}
			if err := l.Release(context.Background()); err != nil {
				t.Errorf("Release: %v", err)
			}
		})
	}
}

// TestReleasedHolderStopsRenewing: after Release the key is gone, stays gone
// and no renewal happens any more.
func TestReleasedHolderStopsRenewing(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	prefix := locktest.Prefix(t)
	const ttl = 300 * time.Millisecond
	c := locktest.Client(t, nodes, &lock.Options{TTL: ttl, KeyPrefix: prefix})
	rdb := locktest.Redis(t, nodes[0])
	l := mustAcquire(t, c, "k")
	testenv.Eventually(t, 2*time.Second, func() error {
		if c.Stats().Renewed == 0 {
			return errors.New("no renewal yet")
		}
		return nil
	})
	if err := l.Release(context.Background()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if cause := context.Cause(l.Context()); !errors.Is(cause, lock.ErrReleased) {
		t.Errorf("cause after Release = %v, want ErrReleased", cause)
	}
	renewed := c.Stats().Renewed
	time.Sleep(2 * ttl) // let several renewal periods pass
	if got := c.Stats().Renewed; got != renewed {
		t.Errorf("renewals after Release: %d, want 0", got-renewed)
	}
	if locktest.Exists(t, rdb, locktest.LockKey(prefix, "k")) {
		t.Errorf("lock key exists after Release")
	}
	if err := l.Release(context.Background()); !errors.Is(err, lock.ErrNotHeld) || !errors.Is(err, lock.ErrReleased) {
		t.Errorf("second Release: got %v, want ErrNotHeld and ErrReleased", err)
	}
	// Extend "returns ErrNotHeld joined with the cause when the lock was
	// already released": it says so without asking the nodes, which would
	// only count a failed renewal for a lock given up on purpose.
	failed := c.Stats().RenewFailed
	if err := l.Extend(context.Background()); !errors.Is(err, lock.ErrNotHeld) || !errors.Is(err, lock.ErrReleased) {
		t.Errorf("Extend after Release: got %v, want ErrNotHeld and ErrReleased", err)
	}
	if got := c.Stats().RenewFailed; got != failed {
		t.Errorf("Extend after Release counted %d failed renewals, want 0", got-failed)
	}
}

// TestCancelledWaiterLeavesNothing: an Acquire cancelled while waiting leaves
// no key, no renewal and no waiter behind.
func TestCancelledWaiterLeavesNothing(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	prefix := locktest.Prefix(t)
	opts := &lock.Options{TTL: 2 * time.Second, NodeTimeout: 200 * time.Millisecond, KeyPrefix: prefix}
	holder := locktest.Client(t, nodes, opts)
	waiter := locktest.Client(t, nodes, opts)
	l := mustAcquire(t, holder, "k")

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		l2, err := waiter.Acquire(ctx, "k")
		if err == nil {
			l2.Release(context.Background())
		}
		errc <- err
	}()
	testenv.Eventually(t, 5*time.Second, func() error {
		if waiter.Stats().Waiting != 1 {
			return errors.New("waiter not waiting yet")
		}
		return nil
	})
	cancel()
	if err := <-errc; !errors.Is(err, lock.ErrNotObtained) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire: got %v, want ErrNotObtained and context.Canceled", err)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	// Release returns once a majority answered; the last node follows.
	locktest.WaitKey(t, nodes, locktest.LockKey(prefix, "k"), false, 5*time.Second)
	if s := waiter.Stats(); s.Held != 0 || s.Waiting != 0 || s.Renewed != 0 {
		t.Errorf("waiter stats: Held %d, Waiting %d, Renewed %d, want 0, 0, 0", s.Held, s.Waiting, s.Renewed)
	}
}

// staleEnv is what a TestStaleReleaseAndExtend case works with.
type staleEnv struct {
	l       *lock.Lock
	other   *lock.Client
	rdb     *redis.Client
	lockKey string
}

// TestStaleReleaseAndExtend: Release and Extend of a lock that is no longer
// held return ErrNotHeld and leave the new owner's key alone.
func TestStaleReleaseAndExtend(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts lock.Options
		// otherTTL, when set, is the TTL of the other client (the new
		// owner); otherwise it uses opts.
		otherTTL time.Duration
		// takeOver makes the lock stale; the returned check verifies that
		// the new owner is unharmed by the stale calls.
		takeOver func(t *testing.T, e staleEnv) (check func(t *testing.T))
	}{
		{
			name: "expired then acquired by another",
			opts: lock.Options{TTL: 100 * time.Millisecond, RenewInterval: -1},
			// The new owner's lock must outlast the stale calls and its
			// own Extend: with the same 100ms TTL (and 25ms NodeTimeout)
			// a loaded machine could let it expire first.
			otherTTL: 10 * time.Second,
			takeOver: func(t *testing.T, e staleEnv) func(t *testing.T) {
				locktest.WaitDone(t, e.l, 5*time.Second) // validity ran out: no watchdog
				l2 := mustAcquire(t, e.other, "k")
				return func(t *testing.T) {
					if err := l2.Extend(context.Background()); err != nil {
						t.Errorf("new holder's Extend: %v", err)
					}
					if err := l2.Release(context.Background()); err != nil {
						t.Errorf("new holder's Release: %v", err)
					}
				}
			},
		},
		{
			name: "overwritten by a foreign value",
			opts: lock.Options{TTL: 2 * time.Second},
			takeOver: func(t *testing.T, e staleEnv) func(t *testing.T) {
				if err := e.rdb.Set(context.Background(), e.lockKey, "foreign", time.Minute).Err(); err != nil {
					t.Fatalf("SET: %v", err)
				}
				return func(t *testing.T) {
					if v, err := e.rdb.Get(context.Background(), e.lockKey).Result(); err != nil || v != "foreign" {
						t.Errorf("foreign value after stale calls: got %q, %v, want \"foreign\"", v, err)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		for _, order := range []string{"release first", "extend first"} {
			t.Run(tt.name+"/"+order, func(t *testing.T) {
				t.Parallel()
				nodes := locktest.Nodes(t, 1)
				prefix := locktest.Prefix(t)
				opts := tt.opts
				opts.KeyPrefix = prefix
				c := locktest.Client(t, nodes, &opts)
				otherOpts := opts
				if tt.otherTTL != 0 {
					otherOpts.TTL = tt.otherTTL
				}
				e := staleEnv{
					l:       mustAcquire(t, c, "k"),
					other:   locktest.Client(t, nodes, &otherOpts),
					rdb:     locktest.Redis(t, nodes[0]),
					lockKey: locktest.LockKey(prefix, "k"),
				}
				check := tt.takeOver(t, e)
				ops := []func() error{
					func() error { return e.l.Release(context.Background()) },
					func() error { return e.l.Extend(context.Background()) },
				}
				if order == "extend first" {
					ops[0], ops[1] = ops[1], ops[0]
				}
				for i, op := range ops {
					if err := op(); !errors.Is(err, lock.ErrNotHeld) {
						t.Errorf("stale call %d (%s): got %v, want ErrNotHeld", i, order, err)
					}
				}
				if e.l.Context().Err() == nil {
					t.Errorf("stale lock's context not cancelled")
				}
				check(t)
			})
		}
	}
}

// TestLostLock: the holder's context is cancelled with ErrLost when the key
// is deleted (by the next renewal, long before ValidUntil) or when the only
// node is paused past the validity (by the validity timer, at ValidUntil).
func TestLostLock(t *testing.T) {
	t.Parallel()
	t.Run("key deleted", func(t *testing.T) {
		t.Parallel()
		nodes := locktest.Nodes(t, 1)
		prefix := locktest.Prefix(t)
		obs := &recorder{}
		// A TTL far longer than the test, renewed every 100ms: only a
		// renewal can notice the deletion before ValidUntil, so the test
		// tells which path noticed it instead of timing it (a bound of
		// 400ms after the deletion failed on a loaded machine).
		c := locktest.Client(t, nodes, &lock.Options{TTL: time.Minute, RenewInterval: 100 * time.Millisecond, KeyPrefix: prefix, Observer: obs})
		l := mustAcquire(t, c, "k")
		if err := locktest.Redis(t, nodes[0]).Del(context.Background(), locktest.LockKey(prefix, "k")).Err(); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		done := locktest.WaitDone(t, l, 10*time.Second)
		cause := context.Cause(l.Context())
		if !errors.Is(cause, lock.ErrLost) {
			t.Errorf("cause = %v, want ErrLost", cause)
		}
		// Noticed by a renewal (the key is gone), not by the validity
		// timer, which says "validity ran out" and fires at ValidUntil.
		if vu := l.ValidUntil(); !done.Before(vu) {
			t.Errorf("cancelled at %v, not before ValidUntil %v: by the validity timer, want by the next renewal", done, vu)
		}
		if !strings.Contains(cause.Error(), "key gone") {
			t.Errorf("cause = %v, want the renewal's (key gone)", cause)
		}
		if got := obs.count("lost"); got != 1 {
			t.Errorf("Observer.Lost calls = %d, want 1", got)
		}
		if err := l.Release(context.Background()); !errors.Is(err, lock.ErrNotHeld) || !errors.Is(err, lock.ErrLost) {
			t.Errorf("Release of a lost lock: got %v, want ErrNotHeld and ErrLost", err)
		}
	})
	t.Run("value left on a minority is removed", func(t *testing.T) {
		t.Parallel()
		nodes := locktest.Nodes(t, 3)
		prefix := locktest.Prefix(t)
		// A TTL far longer than the test: the key can only go by release.
		c := locktest.Client(t, nodes, &lock.Options{TTL: time.Minute, KeyPrefix: prefix})
		l := mustAcquire(t, c, "k")
		key := locktest.LockKey(prefix, "k")
		locktest.WaitKey(t, nodes, key, true, 2*time.Second)
		for _, n := range nodes[:2] {
			if err := locktest.Redis(t, n).Del(context.Background(), key).Err(); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		}
		if err := l.Extend(context.Background()); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Extend with the key gone from a majority: %v, want ErrNotHeld", err)
		}
		locktest.WaitDone(t, l, 2*time.Second)
		// The third node kept the value: the lost lock removes it.
		locktest.WaitKey(t, nodes[2:], key, false, 3*time.Second)
	})
	t.Run("node paused past validity", func(t *testing.T) {
		t.Parallel()
		nodes := locktest.Nodes(t, 1)
		// The first renewal (at TTL/3) hangs on the paused node until
		// NodeTimeout, past the validity: a lock that noticed its end only
		// by renewing would be cancelled about 0.9s after ValidUntil, the
		// timer at it. (With a 600ms TTL and a 50ms NodeTimeout the two
		// were 100ms apart, and a loaded machine ran the timer 200ms late.)
		c := locktest.Client(t, nodes, &lock.Options{TTL: 3 * time.Second, NodeTimeout: 2900 * time.Millisecond, KeyPrefix: locktest.Prefix(t)})
		l := mustAcquire(t, c, "k")
		if err := nodes[0].Pause(); err != nil {
			t.Fatalf("pause: %v", err)
		}
		t.Cleanup(func() { _ = nodes[0].Resume() })
		done := locktest.WaitDone(t, l, 10*time.Second)
		if cause := context.Cause(l.Context()); !errors.Is(cause, lock.ErrLost) {
			t.Errorf("cause = %v, want ErrLost", cause)
		}
		vu := l.ValidUntil()
		if done.Before(vu) {
			t.Errorf("cancelled at %v, before ValidUntil %v", done, vu)
		}
		if late := done.Sub(vu); late > 500*time.Millisecond {
			t.Errorf("cancelled %v after ValidUntil, want at ValidUntil (timer, not next renewal)", late)
		}
	})
}

// TestContextEnds: an Acquire on a held key returns when its context ends,
// with an error matching ErrNotObtained and the context's error.
func TestContextEnds(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	opts := &lock.Options{KeyPrefix: locktest.Prefix(t)}
	holder := locktest.Client(t, nodes, opts)
	waiter := locktest.Client(t, nodes, opts)
	l := mustAcquire(t, holder, "k")
	defer l.Release(context.Background())

	tests := []struct {
		name      string
		ctx       func() (context.Context, context.CancelFunc)
		want      error
		wantCause lock.Cause
	}{
		{"deadline 20ms", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded, lock.CauseDeadline},
		{"cancelled after 20ms", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled, lock.CauseCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			_, err := waiter.Acquire(ctx, "k")
			if !errors.Is(err, lock.ErrNotObtained) || !errors.Is(err, tt.want) {
				t.Errorf("got %v, want ErrNotObtained and %v", err, tt.want)
			}
			if got := lock.CauseOf(err); got != tt.wantCause {
				t.Errorf("CauseOf = %v, want %v", got, tt.wantCause)
			}
			// About 20ms; the bound leaves a loaded machine room, and is
			// still far below the holder's hold (the whole test).
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("returned after %v, want about 20ms", d)
			}
		})
	}
}

// TestWakeUp: a waiter is woken by the release (pub/sub from another client,
// locally within the same client), not by polling: the poll is set to 10s.
func TestWakeUp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		nodes      int
		sameClient bool
	}{
		{"other client/1 node", 1, false},
		{"other client/3 nodes", 3, false},
		{"same client/1 node", 1, true},
		{"same client/3 nodes", 3, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nodes := locktest.Nodes(t, tt.nodes)
			opts := &lock.Options{TTL: 30 * time.Second, PollMin: 10 * time.Second, PollMax: 10 * time.Second, KeyPrefix: locktest.Prefix(t)}
			holder := locktest.Client(t, nodes, opts)
			waiter := holder
			if !tt.sameClient {
				waiter = locktest.Client(t, nodes, opts)
			}
			l := mustAcquire(t, holder, "k")
			got := make(chan *lock.Lock, 1)
			go func() {
				l2, err := waiter.Acquire(locktest.Ctx(t, 20*time.Second), "k")
				if err != nil {
					t.Errorf("waiter Acquire: %v", err)
				}
				got <- l2
			}()
			testenv.Eventually(t, 5*time.Second, func() error {
				if waiter.Stats().Waiting != 1 {
					return errors.New("waiter not waiting yet")
				}
				return nil
			})
			released := time.Now()
			if err := l.Release(context.Background()); err != nil {
				t.Fatalf("Release: %v", err)
			}
			select {
			case l2 := <-got:
				if d := time.Since(released); d > time.Second {
					t.Errorf("waiter acquired %v after the release, want well below the 10s poll", d)
				}
				if l2 != nil {
					l2.Release(context.Background())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("waiter not woken within 5s of the release (poll is 10s)")
			}
		})
	}
}

// TestLocalQueueFIFO: goroutines of one client waiting for the same key
// acquire it in arrival order. A waiter that gives up leaves the queue; the
// ones behind it keep their order, and one that gives up holding the turn
// passes it on.
func TestLocalQueueFIFO(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		quit map[int]bool // waiters that give up (0 holds the turn)
		want []int
	}{
		{"arrival order", nil, []int{0, 1, 2, 3, 4}},
		{"waiters that give up", map[int]bool{0: true, 2: true}, []int{1, 3, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nodes := locktest.Nodes(t, 1)
			c := locktest.Client(t, nodes, &lock.Options{KeyPrefix: locktest.Prefix(t)})
			l := mustAcquire(t, c, "k")
			const waiters = 5
			var (
				mu     sync.Mutex
				order  []int
				wg     sync.WaitGroup
				cancel = make([]context.CancelFunc, waiters)
			)
			for i := range waiters {
				ctx, stop := context.WithCancel(locktest.Ctx(t, 20*time.Second))
				cancel[i] = stop
				wg.Go(func() {
					l, err := c.Acquire(ctx, "k")
					if tt.quit[i] {
						if !errors.Is(err, lock.ErrNotObtained) || !errors.Is(err, context.Canceled) {
							t.Errorf("waiter %d: got %v, want ErrNotObtained and context.Canceled", i, err)
						}
						return
					}
					if err != nil {
						t.Errorf("waiter %d: %v", i, err)
						return
					}
					mu.Lock()
					order = append(order, i)
					mu.Unlock()
					l.Release(context.Background())
				})
				// Queue them one by one.
				testenv.Eventually(t, 5*time.Second, func() error {
					if c.Stats().Waiting != int64(i+1) {
						return errors.New("waiter not queued yet")
					}
					return nil
				})
			}
			for i := range waiters {
				if tt.quit[i] {
					cancel[i]()
				}
			}
			testenv.Eventually(t, 5*time.Second, func() error {
				if w := c.Stats().Waiting; w != waiters-int64(len(tt.quit)) {
					return fmt.Errorf("%d waiting", w)
				}
				return nil
			})
			l.Release(context.Background())
			wg.Wait()
			for _, stop := range cancel {
				stop()
			}
			if !slices.Equal(order, tt.want) {
				t.Fatalf("acquisition order %v, want %v", order, tt.want)
			}
		})
	}
}

// TestNilLock: methods on a nil *Lock return sentinels instead of panicking.
func TestNilLock(t *testing.T) {
	t.Parallel()
	var l *lock.Lock
	if err := l.Release(context.Background()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Release: got %v, want ErrNotHeld", err)
	}
	if err := l.Extend(context.Background()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Extend: got %v, want ErrNotHeld", err)
	}
	if got := context.Cause(l.Context()); !errors.Is(got, lock.ErrNotHeld) {
		t.Errorf("Context cause: got %v, want ErrNotHeld", got)
	}
	select {
	case <-l.Done():
	default:
		t.Errorf("Done not closed")
	}
	if l.Key() != "" || l.Token() != 0 || !l.ValidUntil().IsZero() {
		t.Errorf("Key, Token, ValidUntil = %q, %d, %v, want zero values", l.Key(), l.Token(), l.ValidUntil())
	}
}

// TestClosedClient: calls after Close, and Acquire calls blocked during it,
// fail with ErrClosed.
func TestClosedClient(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	opts := &lock.Options{KeyPrefix: locktest.Prefix(t)}
	holder := locktest.Client(t, nodes, opts)
	c := locktest.Client(t, nodes, opts)
	l := mustAcquire(t, holder, "k")
	defer l.Release(context.Background())

	errc := make(chan error, 1)
	go func() {
		_, err := c.Acquire(locktest.Ctx(t, 20*time.Second), "k")
		errc <- err
	}()
	testenv.Eventually(t, 5*time.Second, func() error {
		if c.Stats().Waiting != 1 {
			return errors.New("not waiting yet")
		}
		return nil
	})
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, lock.ErrClosed) || !errors.Is(err, lock.ErrNotObtained) {
			t.Errorf("blocked Acquire: got %v, want ErrClosed and ErrNotObtained", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("blocked Acquire did not return after Close")
	}
	if _, err := c.Acquire(context.Background(), "k"); !errors.Is(err, lock.ErrClosed) {
		t.Errorf("Acquire after Close: got %v, want ErrClosed", err)
	}
	if _, err := c.TryAcquire(context.Background(), "k"); !errors.Is(err, lock.ErrClosed) {
		t.Errorf("TryAcquire after Close: got %v, want ErrClosed", err)
	}
	if err := c.AdvanceFence(context.Background(), "k", 1); !errors.Is(err, lock.ErrClosed) {
		t.Errorf("AdvanceFence after Close: got %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// recorder is an Observer that counts events.
type recorder struct {
	lock.NopObserver
	mu     sync.Mutex
	events map[string]int
	causes []lock.Cause
}

func (r *recorder) add(ev string) {
	r.mu.Lock()
	if r.events == nil {
		r.events = make(map[string]int)
	}
	r.events[ev]++
	r.mu.Unlock()
}

func (r *recorder) count(ev string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[ev]
}

func (r *recorder) Acquired(string, time.Duration, time.Duration) { r.add("acquired") }
func (r *recorder) AcquireFailed(_ string, c lock.Cause, _ time.Duration) {
	r.add("failed")
	r.mu.Lock()
	r.causes = append(r.causes, c)
	r.mu.Unlock()
}
func (r *recorder) Renewed(string, time.Duration)  { r.add("renewed") }
func (r *recorder) Lost(string)                    { r.add("lost") }
func (r *recorder) Released(string, time.Duration) { r.add("released") }

// TestObserverAndStats: events reach the Observer with their causes and the
// Stats counters agree.
func TestObserverAndStats(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	obs := &recorder{}
	c := locktest.Client(t, nodes, &lock.Options{KeyPrefix: locktest.Prefix(t), Observer: obs})
	l := mustAcquire(t, c, "k")
	if _, err := c.TryAcquire(context.Background(), "k"); !errors.Is(err, lock.ErrNotObtained) {
		t.Fatalf("TryAcquire on a held key: got %v, want ErrNotObtained", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Acquire(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire on a held key: got %v, want DeadlineExceeded", err)
	}
	if _, err := c.TryAcquire(context.Background(), ""); !errors.Is(err, lock.ErrInvalidKey) {
		t.Fatalf("TryAcquire of an empty key: got %v, want ErrInvalidKey", err)
	}
	if err := l.Extend(context.Background()); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	for ev, want := range map[string]int{"acquired": 1, "failed": 3, "renewed": 1, "released": 1, "lost": 0} {
		if got := obs.count(ev); got != want {
			t.Errorf("Observer %s events = %d, want %d", ev, got, want)
		}
	}
	wantCauses := []lock.Cause{lock.CauseBusy, lock.CauseDeadline, lock.CauseError}
	obs.mu.Lock()
	for i, want := range wantCauses {
		if i >= len(obs.causes) || obs.causes[i] != want {
			t.Errorf("causes = %v, want %v", obs.causes, wantCauses)
			break
		}
	}
	obs.mu.Unlock()
	s := c.Stats()
	if s.Acquired != 1 || s.AcquireFailed != 3 || s.Busy != 1 || s.Renewed != 1 || s.Released != 1 || s.Held != 0 {
		t.Errorf("Stats = %+v, want Acquired 1, AcquireFailed 3, Busy 1, Renewed 1, Released 1, Held 0", s)
	}
}

// TestOptions: invalid options are rejected by New.
func TestOptions(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t)
	nodes := []redis.UniversalClient{rdb}
	tests := []struct {
		name string
		opts *lock.Options
		ok   bool
	}{
		{"nil", nil, true},
		{"zero", &lock.Options{}, true},
		{"short TTL", &lock.Options{TTL: 10 * time.Millisecond}, true},
		{"TTL below 10ms", &lock.Options{TTL: 5 * time.Millisecond}, false},
		{"negative TTL", &lock.Options{TTL: -time.Second}, false},
		{"NodeTimeout >= TTL", &lock.Options{TTL: time.Second, NodeTimeout: time.Second}, false},
		{"negative NodeTimeout", &lock.Options{NodeTimeout: -1}, false},
		{"DriftFactor 0.5", &lock.Options{DriftFactor: 0.5}, false},
		{"negative DriftFactor", &lock.Options{DriftFactor: -0.1}, false},
		{"RenewInterval >= TTL", &lock.Options{TTL: time.Second, RenewInterval: time.Second}, false},
		{"watchdog off", &lock.Options{RenewInterval: -1}, true},
		{"PollMax < PollMin", &lock.Options{PollMin: time.Second, PollMax: time.Millisecond}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := lock.New(nodes, tt.opts)
			if got := err == nil; got != tt.ok {
				t.Fatalf("New(%+v): err = %v, want ok = %v", tt.opts, err, tt.ok)
			}
			if c != nil {
				c.Close()
			}
		})
	}
	if _, err := lock.New(nil, nil); err == nil {
		t.Errorf("New with no nodes: got nil error")
	}
	if _, err := lock.NewFromURLs([]string{"http://nope"}, nil); err == nil {
		t.Errorf("NewFromURLs with a bad URL: got nil error")
	}
}

// Once idle channels are unsubscribed, nothing of them is kept: a client
// that waited for many keys does not grow with them.
func TestIdleSubscriptionsAreForgotten(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	opts := &lock.Options{TTL: 5 * time.Second, KeyPrefix: locktest.Prefix(t)}
	holder := locktest.Client(t, nodes, opts)
	waiter := locktest.Client(t, nodes, opts)
	for i := range 5 {
		key := fmt.Sprintf("k%d", i)
		l := mustAcquire(t, holder, key)
		// Waits (so subscribes) until its context ends.
		if _, err := waiter.Acquire(locktest.Ctx(t, 100*time.Millisecond), key); !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("Acquire(%s) of a held key: %v, want ErrNotObtained", key, err)
		}
		if err := l.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := lock.SubscriptionStates(waiter); n == 0 {
		t.Fatal("no subscription state after waiting for 5 keys: the test sees nothing")
	}
	// Unsubscribed after 2s idle, swept every second.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := lock.SubscriptionStates(waiter); n != 0 {
			return fmt.Errorf("%d channel states kept", n)
		}
		return nil
	})
}

// replyHold holds back the reply to the first script call that match
// accepts, made while armed, after the node ran it: ran is closed when it
// holds the reply, which it returns once proceed is closed. calls counts
// the calls match accepts, armed or not.
type replyHold struct {
	match   func(args []any) bool
	armed   atomic.Bool
	calls   atomic.Int64
	once    sync.Once
	ran     chan struct{}
	proceed chan struct{}
}

func newReplyHold(match func(args []any) bool) *replyHold {
	return &replyHold{match: match, ran: make(chan struct{}), proceed: make(chan struct{})}
}

// acquireCall matches acquire.lua's calls (two keys).
func acquireCall(args []any) bool { return len(args) > 2 && fmt.Sprint(args[2]) == "2" }

// extendCall matches extend.lua's calls: one key, then the owner value and
// the TTL (release.lua has the channel, "...:released", last).
func extendCall(args []any) bool {
	return len(args) == 6 && fmt.Sprint(args[2]) == "1" && !strings.HasSuffix(fmt.Sprint(args[5]), ":released")
}

func (h *replyHold) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *replyHold) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *replyHold) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		args := cmd.Args()
		if (args[0] != "evalsha" && args[0] != "eval") || !h.match(args) {
			return err
		}
		h.calls.Add(1)
		if err == nil && h.armed.Load() {
			h.once.Do(func() {
				close(h.ran)
				<-h.proceed
			})
		}
		return err
	}
}

// Close while an attempt is in flight: the attempt wins the node, but the
// client is closed by the time it returns. TryAcquire fails with ErrClosed
// and must give the key back: it is never renewed, released or reported,
// and would block every other client for the whole TTL.
func TestCloseDuringAnAttemptGivesTheLockBack(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	prefix := locktest.Prefix(t)
	rdb := redis.NewClient(&redis.Options{Addr: nodes[0].Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	hook := newReplyHold(acquireCall)
	rdb.AddHook(hook)
	c, err := lock.New([]redis.UniversalClient{rdb}, &lock.Options{TTL: time.Minute, KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	hook.armed.Store(true)
	errc := make(chan error, 1)
	go func() {
		l, err := c.TryAcquire(locktest.Ctx(t, 10*time.Second), "k")
		if err == nil {
			err = fmt.Errorf("acquired %v", l.Token())
		}
		errc <- err
	}()
	select {
	case <-hook.ran:
	case <-time.After(10 * time.Second):
		close(hook.proceed)
		t.Fatal("the acquire script did not run")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	close(hook.proceed)
	if err := <-errc; !errors.Is(err, lock.ErrClosed) || !errors.Is(err, lock.ErrNotObtained) {
		t.Errorf("TryAcquire closed during its attempt: %v, want ErrClosed and ErrNotObtained", err)
	}
	if locktest.Exists(t, locktest.Redis(t, nodes[0]), locktest.LockKey(prefix, "k")) {
		t.Errorf("key left on the node after TryAcquire returned ErrClosed (TTL %v)", time.Minute)
	}
}

// A renewal in flight while the lock is released: the watchdog must stop
// once it sees the lock released, not schedule another renewal. Otherwise
// it retries the released lock's renewal every RenewInterval/4 for as long
// as the client lives (each call failing on the lock's cancelled context).
func TestReleaseDuringARenewalStopsTheWatchdog(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	rdb := redis.NewClient(&redis.Options{Addr: nodes[0].Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	hook := newReplyHold(extendCall)
	rdb.AddHook(hook)
	const interval = 100 * time.Millisecond
	c, err := lock.New([]redis.UniversalClient{rdb}, &lock.Options{TTL: time.Minute, RenewInterval: interval, NodeTimeout: time.Second, KeyPrefix: locktest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	l := mustAcquire(t, c, "k")
	hook.armed.Store(true)
	select {
	case <-hook.ran:
	case <-time.After(10 * time.Second):
		close(hook.proceed)
		t.Fatal("no renewal ran")
	}
	if err := l.Release(context.Background()); err != nil {
		close(hook.proceed)
		t.Fatalf("Release: %v", err)
	}
	calls := hook.calls.Load()
	close(hook.proceed)
	time.Sleep(10 * interval) // let several retry periods (interval/4) pass
	if got := hook.calls.Load() - calls; got != 0 {
		t.Errorf("%d renewals after Release, want 0", got)
	}
}

// Release: "a round in which no node answered is tried up to three times",
// since a lock left behind blocks everyone until its TTL runs out. The
// node's first answer to the release script is lost here (a go-redis hook
// returns an error without sending it): Release must try again, delete
// the key and return nil.
func TestReleaseRetriesARoundWithNoAnswer(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	prefix := locktest.Prefix(t)
	rdb := redis.NewClient(&redis.Options{Addr: nodes[0].Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	hook := &dropFirstRelease{}
	rdb.AddHook(hook)
	c, err := lock.New([]redis.UniversalClient{rdb}, &lock.Options{TTL: time.Minute, KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	l := mustAcquire(t, c, "k")
	hook.armed.Store(true)
	if err := l.Release(context.Background()); err != nil {
		t.Errorf("Release after a round with no answer: %v, want nil (tried again)", err)
	}
	if hook.dropped.Load() != 1 {
		t.Fatalf("dropped %d release calls, want 1", hook.dropped.Load())
	}
	if locktest.Exists(t, locktest.Redis(t, nodes[0]), locktest.LockKey(prefix, "k")) {
		t.Errorf("key left on the node after Release")
	}
}

// dropFirstRelease fails the first release script call made while armed
// with an error, without sending it to the node.
type dropFirstRelease struct {
	armed   atomic.Bool
	dropped atomic.Int64
}

func (h *dropFirstRelease) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *dropFirstRelease) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *dropFirstRelease) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if h.armed.Load() && len(args) == 6 && (args[0] == "evalsha" || args[0] == "eval") &&
			strings.HasSuffix(fmt.Sprint(args[5]), ":released") && h.dropped.CompareAndSwap(0, 1) {
			err := errors.New("test: release call dropped")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}
