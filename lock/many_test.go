package lock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

// TryAcquireMany and ReleaseMany behave key by key like TryAcquire and
// Release, on one node (one pipelined round trip) and on three.
func TestAcquireAndReleaseMany(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) {
			t.Parallel()
			nodes := locktest.Nodes(t, n)
			prefix := locktest.Prefix(t)
			c := locktest.Client(t, nodes, &lock.Options{TTL: 5 * time.Second, KeyPrefix: prefix})
			rival := locktest.Client(t, nodes, &lock.Options{TTL: 5 * time.Second, KeyPrefix: prefix})
			ctx := locktest.Ctx(t, 30*time.Second)
			held, err := rival.TryAcquire(ctx, "b")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Release(ctx)
			// A node that lost its scripts (restart, SCRIPT FLUSH) is
			// handled: the scripts are loaded again.
			if err := locktest.Redis(t, nodes[0]).ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}

			keys := []string{"a", "b", "c", ""}
			locks, errs := c.TryAcquireMany(ctx, keys)
			if errs[0] != nil || errs[2] != nil || locks[0] == nil || locks[2] == nil {
				t.Fatalf("a, c: got %v, %v; want both acquired", errs[0], errs[2])
			}
			if locks[1] != nil || !errors.Is(errs[1], lock.ErrNotObtained) || lock.CauseOf(errs[1]) != lock.CauseBusy {
				t.Errorf("b (held by a rival): got %v, %v; want busy", locks[1], errs[1])
			}
			if locks[3] != nil || !errors.Is(errs[3], lock.ErrInvalidKey) {
				t.Errorf("empty key: got %v, %v; want ErrInvalidKey", locks[3], errs[3])
			}
			for _, i := range []int{0, 2} {
				l := locks[i]
				if l.Token() <= 0 || l.Context().Err() != nil || time.Until(l.ValidUntil()) <= 0 {
					t.Errorf("%s: token %d, context %v, valid until %v; want a live lock", keys[i], l.Token(), l.Context().Err(), l.ValidUntil())
				}
				// Quorum was reached; the slower node (it reloads its
				// scripts) gets the key a moment later.
				locktest.WaitKey(t, nodes, locktest.LockKey(prefix, keys[i]), true, 5*time.Second)
			}
			// The rival cannot take what the batch holds.
			if _, err := rival.TryAcquire(ctx, "a"); lock.CauseOf(err) != lock.CauseBusy {
				t.Errorf("rival TryAcquire(a): got %v, want busy", err)
			}

			errs = c.ReleaseMany(ctx, []*lock.Lock{locks[0], locks[2]})
			for i, err := range errs {
				if err != nil {
					t.Errorf("ReleaseMany[%d]: %v", i, err)
				}
			}
			for _, i := range []int{0, 2} {
				if !errors.Is(context.Cause(locks[i].Context()), lock.ErrReleased) {
					t.Errorf("%s: context cause %v, want ErrReleased", keys[i], context.Cause(locks[i].Context()))
				}
				locktest.WaitKey(t, nodes, locktest.LockKey(prefix, keys[i]), false, 5*time.Second)
			}
			// Released twice: not held, as with Release.
			errs = c.ReleaseMany(ctx, []*lock.Lock{locks[0], locks[2]})
			if !errors.Is(errs[0], lock.ErrNotHeld) || !errors.Is(errs[1], lock.ErrNotHeld) {
				t.Errorf("second ReleaseMany: got %v, want ErrNotHeld", errs)
			}
			// Tokens go on increasing after a batch.
			again, err := c.TryAcquire(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			defer again.Release(ctx)
			if again.Token() <= locks[0].Token() {
				t.Errorf("token after the batch: got %d, want more than %d", again.Token(), locks[0].Token())
			}
		})
	}
}

// With one of three nodes down the batch operations still reach a majority,
// within about NodeTimeout; with two down every key fails with no quorum
// and leaves nothing behind on the node that answered.
func TestManyWithNodesDown(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	prefix := locktest.Prefix(t)
	// Killed nodes refuse connections at once: nothing here waits for
	// NodeTimeout, which only has to outlast a loaded machine's answers
	// (at 100ms the live nodes' answers came too late once, under load).
	const nodeTimeout = time.Second
	c := locktest.Client(t, nodes, &lock.Options{TTL: 5 * time.Second, NodeTimeout: nodeTimeout, KeyPrefix: prefix})
	ctx := locktest.Ctx(t, 30*time.Second)
	keys := []string{"a", "b", "c", "d", "e"}
	const limit = nodeTimeout + 400*time.Millisecond

	if err := nodes[2].Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	start := time.Now()
	locks, errs := c.TryAcquireMany(ctx, keys)
	if d := time.Since(start); d > limit {
		t.Errorf("TryAcquireMany with a node down took %v, want within %v", d, limit)
	}
	for i, err := range errs {
		if err != nil || locks[i] == nil || locks[i].Token() <= 0 {
			t.Fatalf("%s with 2 of 3 nodes: got %v, %v; want a lock", keys[i], locks[i], err)
		}
	}
	start = time.Now()
	for i, err := range c.ReleaseMany(ctx, locks) {
		if err != nil {
			t.Errorf("ReleaseMany[%s] with 2 of 3 nodes: %v", keys[i], err)
		}
	}
	if d := time.Since(start); d > limit {
		t.Errorf("ReleaseMany with a node down took %v, want within %v", d, limit)
	}

	if err := nodes[1].Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	locks, errs = c.TryAcquireMany(ctx, keys)
	for i, err := range errs {
		if locks[i] != nil || !errors.Is(err, lock.ErrNoQuorum) || lock.CauseOf(err) != lock.CauseNoQuorum {
			t.Errorf("%s with 1 of 3 nodes: got %v, %v; want no quorum", keys[i], locks[i], err)
		}
	}
	// (Cleaned up at once, or in the background if the node answered
	// after NodeTimeout.)
	for _, k := range keys {
		locktest.WaitKey(t, nodes[:1], locktest.LockKey(prefix, k), false, 5*time.Second)
	}
}

// With one of three nodes paused (SIGSTOP: it takes the pipeline and never
// answers) the batch operations return within about NodeTimeout (bounded,
// not waiting for the paused node), holding every key on the two others.
func TestManyWithPausedNode(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	// The paused node never answers, for the whole test: a call that
	// waited for it would take until ctx ends (10s), far past limit. The
	// live nodes must answer within NodeTimeout, which at 100ms they did
	// not always do on a loaded machine; limit stays well under the TTL.
	const nodeTimeout = time.Second
	const ttl = 5 * time.Second
	c := locktest.Client(t, nodes, &lock.Options{TTL: ttl, NodeTimeout: nodeTimeout, KeyPrefix: locktest.Prefix(t)})
	ctx := locktest.Ctx(t, 2*ttl)
	if err := nodes[2].Pause(); err != nil {
		t.Fatalf("pause: %v", err)
	}
	t.Cleanup(func() { _ = nodes[2].Resume() })
	const limit = nodeTimeout + 1500*time.Millisecond
	keys := []string{"a", "b", "c", "d"}
	start := time.Now()
	locks, errs := c.TryAcquireMany(ctx, keys)
	if d := time.Since(start); d > limit {
		t.Errorf("TryAcquireMany with a paused node took %v, want within %v", d, limit)
	}
	for i, err := range errs {
		if err != nil || locks[i] == nil {
			t.Fatalf("%s: got %v, %v; want a lock", keys[i], locks[i], err)
		}
	}
	start = time.Now()
	for i, err := range c.ReleaseMany(ctx, locks) {
		if err != nil {
			t.Errorf("ReleaseMany[%s]: %v", keys[i], err)
		}
	}
	if d := time.Since(start); d > limit {
		t.Errorf("ReleaseMany with a paused node took %v, want within %v", d, limit)
	}
}

// A lock the batch holds that was taken over meanwhile is reported not held,
// and the new owner's key survives.
func TestReleaseManyStale(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	prefix := locktest.Prefix(t)
	c := locktest.Client(t, nodes, &lock.Options{TTL: 5 * time.Second, KeyPrefix: prefix})
	ctx := locktest.Ctx(t, 30*time.Second)
	locks, errs := c.TryAcquireMany(ctx, []string{"x", "y"})
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	r := locktest.Redis(t, nodes[0])
	if err := r.Set(ctx, locktest.LockKey(prefix, "x"), "someone else", 0).Err(); err != nil {
		t.Fatal(err)
	}
	errs = c.ReleaseMany(ctx, locks)
	if !errors.Is(errs[0], lock.ErrNotHeld) || errs[1] != nil {
		t.Errorf("ReleaseMany: got %v, want ErrNotHeld for x and nil for y", errs)
	}
	if v, _ := r.Get(ctx, locktest.LockKey(prefix, "x")).Result(); v != "someone else" {
		t.Errorf("x: got %q, want the new owner's value kept", v)
	}
}
