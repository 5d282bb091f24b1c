package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

// A lock is valid for TTL minus the clock drift (TTL*DriftFactor + 2ms)
// from the start of the attempt that took (or extended) it, never the whole
// TTL: the nodes' clocks may run faster and expire the key earlier.
func TestValidityLeavesRoomForDrift(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	const ttl = 10 * time.Second
	const drift = time.Second + 2*time.Millisecond // 10s * 0.1 + 2ms
	c := locktest.Client(t, nodes, &lock.Options{TTL: ttl, DriftFactor: 0.1, RenewInterval: -1, KeyPrefix: locktest.Prefix(t)})
	before := time.Now()
	l := mustAcquire(t, c, "k")
	after := time.Now()
	defer l.Release(context.Background())
	if v := l.ValidUntil(); v.After(after.Add(ttl-drift)) || v.Before(before.Add(ttl-drift)) {
		t.Errorf("ValidUntil after Acquire = start %+v, want start + TTL - drift = %v (Acquire took %v)",
			v.Sub(before), ttl-drift, after.Sub(before))
	}
	before = time.Now()
	if err := l.Extend(context.Background()); err != nil {
		t.Fatal(err)
	}
	after = time.Now()
	if v := l.ValidUntil(); v.After(after.Add(ttl-drift)) || v.Before(before.Add(ttl-drift)) {
		t.Errorf("ValidUntil after Extend = start %+v, want start + TTL - drift = %v (Extend took %v)",
			v.Sub(before), ttl-drift, after.Sub(before))
	}
}

// An acquisition whose quorum answers only after the lock's validity
// (TTL minus drift from the attempt's start) has run out is no
// acquisition: the holder would start with a lock the nodes may already
// have expired. Two of three nodes are paused past the validity and
// resumed well before NodeTimeout, so their replies do arrive, late.
func TestAcquireAnsweredPastItsValidityFails(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	prefix := locktest.Prefix(t)
	// Validity 3s - (3s*0.49 + 2ms) = 1.528s; NodeTimeout 2.9s; the nodes
	// resume about midway, 2.2s after the attempt began (0.67s past the
	// validity, 0.7s before NodeTimeout: room for a loaded machine).
	const ttl, nodeTimeout, resumeAt = 3 * time.Second, 2900 * time.Millisecond, 2200 * time.Millisecond
	c := locktest.Client(t, nodes, &lock.Options{TTL: ttl, NodeTimeout: nodeTimeout, DriftFactor: 0.49, RenewInterval: -1, KeyPrefix: prefix})
	// Warm up: each node's first call loads the script.
	mustAcquire(t, c, "warm").Release(context.Background())
	for _, n := range nodes[:2] {
		if err := n.Pause(); err != nil {
			t.Fatalf("pause: %v", err)
		}
		t.Cleanup(func() { _ = n.Resume() })
	}
	ctx := locktest.Ctx(t, 10*time.Second)
	begun := make(chan time.Time, 1)
	errc := make(chan error, 1)
	go func() {
		begun <- time.Now() // timed from here, not from before the goroutine ran
		l, err := c.TryAcquire(ctx, "k")
		if err == nil {
			l.Release(context.Background())
		}
		errc <- err
	}()
	start := <-begun
	time.Sleep(resumeAt - time.Since(start)) // the fault: paused past the validity
	for _, n := range nodes[:2] {
		if err := n.Resume(); err != nil {
			t.Fatalf("resume: %v", err)
		}
	}
	select {
	case err := <-errc:
		if !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("TryAcquire answered %v after its start: %v; want ErrNotObtained (validity 1.528s)", time.Since(start), err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("TryAcquire did not return")
	}
	// Nothing left behind on any node.
	locktest.WaitKey(t, nodes, locktest.LockKey(prefix, "k"), false, 5*time.Second)
}

// TryAcquireMany decides each key "exactly as TryAcquire" does, on a single
// node too (where it takes its own path): each lock is valid for TTL minus
// the drift from the start of the batch's attempt, and a key whose node
// answered only after that validity ran out is no lock and is given back.
func TestTryAcquireManyOnOneNodeValidity(t *testing.T) {
	t.Parallel()
	t.Run("room for drift", func(t *testing.T) {
		t.Parallel()
		nodes := locktest.Nodes(t, 1)
		const ttl = 10 * time.Second
		const drift = time.Second + 2*time.Millisecond // 10s * 0.1 + 2ms
		c := locktest.Client(t, nodes, &lock.Options{TTL: ttl, DriftFactor: 0.1, RenewInterval: -1, KeyPrefix: locktest.Prefix(t)})
		before := time.Now()
		locks, errs := c.TryAcquireMany(locktest.Ctx(t, 10*time.Second), []string{"a", "b"})
		after := time.Now()
		for i, l := range locks {
			if errs[i] != nil {
				t.Fatalf("TryAcquireMany: key %d: %v", i, errs[i])
			}
			defer l.Release(context.Background())
			if v := l.ValidUntil(); v.After(after.Add(ttl-drift)) || v.Before(before.Add(ttl-drift)) {
				t.Errorf("key %d: ValidUntil = start %+v, want start + TTL - drift = %v (TryAcquireMany took %v)",
					i, v.Sub(before), ttl-drift, after.Sub(before))
			}
		}
	})
	t.Run("answered past the validity", func(t *testing.T) {
		t.Parallel()
		nodes := locktest.Nodes(t, 1)
		prefix := locktest.Prefix(t)
		// As in TestAcquireAnsweredPastItsValidityFails: validity 1.528s,
		// NodeTimeout 2.9s, the node resumed 2.2s after the attempt began.
		const ttl, nodeTimeout, resumeAt = 3 * time.Second, 2900 * time.Millisecond, 2200 * time.Millisecond
		c := locktest.Client(t, nodes, &lock.Options{TTL: ttl, NodeTimeout: nodeTimeout, DriftFactor: 0.49, RenewInterval: -1, KeyPrefix: prefix})
		// Warm up: the first batch loads the script.
		warm, errs := c.TryAcquireMany(locktest.Ctx(t, 10*time.Second), []string{"w1", "w2"})
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		if err := errors.Join(c.ReleaseMany(context.Background(), warm)...); err != nil {
			t.Fatalf("warm-up release: %v", err)
		}
		if err := nodes[0].Pause(); err != nil {
			t.Fatalf("pause: %v", err)
		}
		t.Cleanup(func() { _ = nodes[0].Resume() })
		keys := []string{"a", "b"}
		begun := make(chan time.Time, 1)
		type result struct {
			locks []*lock.Lock
			errs  []error
		}
		done := make(chan result, 1)
		go func() {
			begun <- time.Now()
			locks, errs := c.TryAcquireMany(locktest.Ctx(t, 10*time.Second), keys)
			done <- result{locks, errs}
		}()
		start := <-begun
		time.Sleep(resumeAt - time.Since(start)) // the fault: paused past the validity
		if err := nodes[0].Resume(); err != nil {
			t.Fatalf("resume: %v", err)
		}
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("TryAcquireMany did not return")
		}
		for i, l := range r.locks {
			if l != nil {
				l.Release(context.Background())
			}
			if !errors.Is(r.errs[i], lock.ErrNotObtained) {
				t.Errorf("key %q answered %v after the start: %v; want ErrNotObtained (validity 1.528s)", keys[i], time.Since(start), r.errs[i])
			}
		}
		for _, k := range keys {
			locktest.WaitKey(t, nodes, locktest.LockKey(prefix, k), false, 5*time.Second)
		}
	})
}
