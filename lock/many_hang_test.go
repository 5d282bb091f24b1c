package lock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

// Options.NodeTimeout promises that, with a node client passed to New
// without ContextTimeoutEnabled, "the lock still stops waiting for it" at
// NodeTimeout (only the connection stays busy until ReadTimeout), and
// TryAcquireMany/ReleaseMany promise to decide each key as TryAcquire and
// Release do. On a single such node that hangs, TryAcquire gives up at
// NodeTimeout; the one-node batch paths waited for the client's ReadTimeout
// (ReleaseMany up to three times).
func TestManyOneNodeWithoutContextTimeoutsStopsAtNodeTimeout(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	const readTimeout = 2 * time.Second
	rdb := redis.NewClient(&redis.Options{Addr: nodes[0].Addr(), ReadTimeout: readTimeout})
	t.Cleanup(func() { _ = rdb.Close() })
	const nodeTimeout = 200 * time.Millisecond
	c, err := lock.New([]redis.UniversalClient{rdb}, &lock.Options{TTL: 30 * time.Second, NodeTimeout: nodeTimeout, KeyPrefix: locktest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := locktest.Ctx(t, 60*time.Second)
	// Warm the pool (and hold two locks to release later). The first call
	// also loads the script (NOSCRIPT, SCRIPT LOAD, the pipeline again), all
	// within one NodeTimeout: on a loaded machine that can run out, so the
	// warm-up tries again (fresh keys each time) until it holds both.
	held := holdMany(ctx, t, c, func(try int) []string {
		return []string{fmt.Sprintf("r1-%d", try), fmt.Sprintf("r2-%d", try)}
	})
	pauseAndProbe(ctx, t, c, nodes[0])
	const limit = nodeTimeout + time.Second

	start := time.Now()
	_, _ = c.TryAcquireMany(ctx, []string{"a", "b"})
	if d := time.Since(start); d > limit {
		t.Errorf("TryAcquireMany on a hung node took %v, want within %v (NodeTimeout %v; TryAcquire stops there)", d, limit, nodeTimeout)
	}

	start = time.Now()
	_ = c.ReleaseMany(ctx, held)
	if d := time.Since(start); d > 3*limit {
		t.Errorf("ReleaseMany on a hung node took %v, want within %v (three rounds of NodeTimeout %v, as Release)", d, 3*limit, nodeTimeout)
	}
}

// Options.NodeTimeout: "one attempt waits at most this long for slow or
// paused nodes before it decides with the answers it has", and a failed
// attempt cleans up "as soon as they answer on those that timed out" (in the
// background). TryAcquire on a hung single node returns at NodeTimeout;
// TryAcquireMany on the same node released each key's value on the hung
// node synchronously, one key after the other, each waiting NodeTimeout:
// (1 + keys) × NodeTimeout.
func TestTryAcquireManyOnAHungSingleNode(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	const nodeTimeout = 200 * time.Millisecond
	c := locktest.Client(t, nodes, &lock.Options{TTL: 30 * time.Second, NodeTimeout: nodeTimeout, KeyPrefix: locktest.Prefix(t)})
	ctx := locktest.Ctx(t, 60*time.Second)
	// Warm the pool; the first call also loads the script within one
	// NodeTimeout, which a loaded machine can run out: try again.
	warmUp(t, func(try int) error {
		warm, err := c.TryAcquire(ctx, fmt.Sprintf("warm-%d", try))
		if err != nil {
			return fmt.Errorf("TryAcquire: %w", err)
		}
		if err := warm.Release(ctx); err != nil {
			t.Fatal(err)
		}
		return nil
	})
	pauseAndProbe(ctx, t, c, nodes[0])
	const limit = nodeTimeout + time.Second

	keys := make([]string, 16)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	start := time.Now()
	_, errs := c.TryAcquireMany(ctx, keys)
	d := time.Since(start)
	for i, err := range errs {
		if !errors.Is(err, lock.ErrNoQuorum) {
			t.Errorf("%s: %v, want ErrNoQuorum", keys[i], err)
		}
	}
	if d > limit {
		t.Errorf("TryAcquireMany of %d keys on a hung node took %v, want within %v (NodeTimeout %v; TryAcquire stops there)", len(keys), d, limit, nodeTimeout)
	}
	// The values the failed tries may have written are removed once the
	// node runs again (the clean-up's calls were queued behind the tries').
	if err := nodes[0].Resume(); err != nil {
		t.Fatal(err)
	}
	r := locktest.Redis(t, nodes[0])
	prefix := locktest.Prefix(t)
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, k := range keys {
			if locktest.Exists(t, r, locktest.LockKey(prefix, k)) {
				return fmt.Errorf("%s still holds a failed try's value", k)
			}
		}
		return nil
	})
}

// warmUp calls try (with the try's number, for fresh keys) until it
// succeeds, 21 times at most, 50ms apart: a fresh node's first call loads
// the lock's script within one NodeTimeout, which a loaded machine can run
// out.
func warmUp(t *testing.T, try func(n int) error) {
	t.Helper()
	for n := 0; ; n++ {
		err := try(n)
		if err == nil {
			return
		}
		if n >= 20 {
			t.Fatalf("warm-up: %v", err)
		}
		t.Logf("warm-up (try %d): %v", n, err)
		time.Sleep(50 * time.Millisecond)
	}
}

// holdMany takes every key of keys(try) with TryAcquireMany, through
// warmUp: a try that does not get them all releases what it got, and the
// next try asks for keys(try+1).
func holdMany(ctx context.Context, t *testing.T, c *lock.Client, keys func(try int) []string) []*lock.Lock {
	t.Helper()
	var held []*lock.Lock
	warmUp(t, func(try int) error {
		locks, errs := c.TryAcquireMany(ctx, keys(try))
		if err := errors.Join(errs...); err != nil {
			for _, l := range locks {
				if l != nil {
					_ = l.Release(ctx)
				}
			}
			return fmt.Errorf("TryAcquireMany: %w", err)
		}
		held = locks
		return nil
	})
	return held
}

// pauseAndProbe pauses node (resumed at cleanup) and logs how long a
// plain TryAcquire on it takes to give up: the bound the batch calls are
// held to. It fails the test if that TryAcquire succeeds.
func pauseAndProbe(ctx context.Context, t *testing.T, c *lock.Client, node *localsvc.Redis) {
	t.Helper()
	if err := node.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Resume() })
	start := time.Now()
	if _, err := c.TryAcquire(ctx, "single"); err == nil {
		t.Fatal("TryAcquire on a hung node succeeded")
	}
	t.Logf("TryAcquire on the hung node returned after %v", time.Since(start))
}

// ReleaseMany promises to release each lock as Release does, which stops
// waiting for hung nodes at NodeTimeout. With three nodes whose clients do
// not abort calls at the context deadline (New without
// ContextTimeoutEnabled) and two of them hung, each lock's tally waited
// NodeTimeout one after the other: keys × NodeTimeout (2.4s for 12 locks at
// 200ms) instead of one NodeTimeout for them all.
func TestReleaseManyOnHungNodesStopsAtNodeTimeout(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	rdbs := make([]redis.UniversalClient, len(nodes))
	for i, n := range nodes {
		r := redis.NewClient(&redis.Options{Addr: n.Addr(), ReadTimeout: 10 * time.Second})
		t.Cleanup(func() { _ = r.Close() })
		rdbs[i] = r
	}
	const nodeTimeout = 200 * time.Millisecond
	c, err := lock.New(rdbs, &lock.Options{TTL: 30 * time.Second, NodeTimeout: nodeTimeout, KeyPrefix: locktest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := locktest.Ctx(t, 60*time.Second)
	keys := make([]string, 12)
	held := holdMany(ctx, t, c, func(try int) []string {
		for i := range keys {
			keys[i] = fmt.Sprintf("k%d-%d", i, try)
		}
		return keys
	})
	for _, n := range nodes[1:] {
		if err := n.Pause(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Resume() })
	}
	const limit = nodeTimeout + time.Second
	start := time.Now()
	errs := c.ReleaseMany(ctx, held)
	if d := time.Since(start); d > limit {
		t.Errorf("ReleaseMany of %d locks with 2 of 3 nodes hung took %v, want within %v (NodeTimeout %v, as Release)", len(held), d, limit, nodeTimeout)
	}
	for i, err := range errs {
		if !errors.Is(err, lock.ErrNoQuorum) {
			t.Errorf("%s: %v, want ErrNoQuorum", keys[i], err)
		}
	}
}

// Each node's pipeline of TryAcquireMany is bounded by NodeTimeout, whatever
// the caller's context: with one node of three hung and a context without
// a deadline, the batch succeeds on the other two, and the background work
// it leaves (the fencing token carried to the hung node) ends within
// NodeTimeout plus its own timeout, so Close, which waits for it, returns
// promptly instead of waiting for the node to come back.
func TestTryAcquireManyOnAHungNodeLetsCloseReturn(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	c, err := lock.NewFromURLs(locktest.URLs(nodes), &lock.Options{TTL: 30 * time.Second, NodeTimeout: 300 * time.Millisecond, KeyPrefix: locktest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Warm the pools (and load the script) before the node hangs.
	warm := holdMany(locktest.Ctx(t, 30*time.Second), t, c, func(try int) []string {
		return []string{fmt.Sprintf("w1-%d", try), fmt.Sprintf("w2-%d", try)}
	})
	if err := errors.Join(c.ReleaseMany(context.Background(), warm)...); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = nodes[2].Resume() }()
	// The locks are abandoned with the client (Close does not release).
	_, errs := c.TryAcquireMany(context.Background(), []string{"a", "b"})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("TryAcquireMany with one of three nodes hung: %v", err)
	}
	closed := make(chan error, 1)
	start := time.Now()
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
		t.Logf("Close returned after %v", time.Since(start))
	case <-time.After(5 * time.Second):
		_ = nodes[2].Resume()
		<-closed
		t.Errorf("Close waited %v, until the hung node came back; want within NodeTimeout plus the background timeout", time.Since(start))
	}
}
