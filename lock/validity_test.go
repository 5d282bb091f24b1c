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
