package lock_test

import (
	"context"
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
