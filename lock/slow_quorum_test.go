package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

// clientPause makes each node hold every client's commands for d (CLIENT
// PAUSE): the node answers late, by its own clock, without the test
// sleeping.
func clientPause(t *testing.T, nodes []*localsvc.Redis, d time.Duration) {
	t.Helper()
	for _, n := range nodes {
		if err := locktest.Redis(t, n).Do(context.Background(), "CLIENT", "PAUSE", d.Milliseconds()).Err(); err != nil {
			t.Fatalf("CLIENT PAUSE: %v", err)
		}
	}
}

// A lock is valid until the start of the round that took (or extended) it
// plus TTL minus drift, however long the quorum took to answer: the nodes
// set their TTL when they ran the script, early in the round. Here two of
// three nodes hold their answers for 1.5s (CLIENT PAUSE), so the round
// ends 1.5s after it began; a validity counted from the answers would
// outlast the keys on the nodes by those 1.5s.
func TestValidityCountsFromTheRoundsStart(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	const ttl, drift, hold = 5 * time.Second, 52 * time.Millisecond, 1500 * time.Millisecond // drift: 5s*0.01 + 2ms
	c := locktest.Client(t, nodes, &lock.Options{TTL: ttl, NodeTimeout: 4 * time.Second, RenewInterval: -1, KeyPrefix: locktest.Prefix(t)})
	// Warm up: each node's first call loads the script.
	mustAcquire(t, c, "warm").Release(context.Background())

	for _, op := range []string{"acquire", "extend"} {
		var l *lock.Lock
		if op == "extend" {
			l = mustAcquire(t, c, "e")
		}
		clientPause(t, nodes[:2], hold)
		before := time.Now()
		var err error
		if op == "acquire" {
			l, err = c.TryAcquire(locktest.Ctx(t, 10*time.Second), "a")
		} else {
			err = l.Extend(locktest.Ctx(t, 10*time.Second))
		}
		took := time.Since(before)
		if err != nil {
			t.Fatalf("%s with two nodes answering after %v: %v", op, hold, err)
		}
		if took < hold/2 {
			t.Fatalf("%s took %v: the paused nodes did not hold it (the test sees nothing)", op, took)
		}
		// The round began just after before; counted from the answers,
		// ValidUntil would be about took later.
		if limit := before.Add(ttl - drift + took/2); l.ValidUntil().After(limit) {
			t.Errorf("%s took %v; ValidUntil = its start + %v, want about + %v (TTL - drift)",
				op, took, l.ValidUntil().Sub(before), ttl-drift)
		}
		if err := l.Release(context.Background()); err != nil {
			t.Errorf("Release: %v", err)
		}
	}
}

// Extend needs a majority like Acquire: with two of three nodes down, the
// one node that still holds the value is no quorum. Extend must say so
// (ErrNoQuorum) and leave ValidUntil where it was, so that the lock's
// context still ends when the majority's keys may have expired.
func TestExtendWithoutAMajorityFails(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	c := locktest.Client(t, nodes, &lock.Options{TTL: 5 * time.Second, NodeTimeout: time.Second, RenewInterval: -1, KeyPrefix: locktest.Prefix(t)})
	l := mustAcquire(t, c, "k")
	for _, n := range nodes[1:] {
		if err := n.Kill(); err != nil {
			t.Fatalf("kill: %v", err)
		}
	}
	vu := l.ValidUntil()
	if err := l.Extend(locktest.Ctx(t, 10*time.Second)); !errors.Is(err, lock.ErrNoQuorum) {
		t.Errorf("Extend with 1 of 3 nodes up: got %v, want ErrNoQuorum", err)
	}
	if got := l.ValidUntil(); !got.Equal(vu) {
		t.Errorf("ValidUntil moved by %v by an Extend with 1 of 3 nodes, want unchanged", got.Sub(vu))
	}
	if l.Context().Err() != nil {
		t.Errorf("context ended (%v): the lock is still valid until ValidUntil", context.Cause(l.Context()))
	}
}
