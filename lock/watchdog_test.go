package lock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

// A renewal that fails (the node hung for a moment) is retried every
// RenewInterval/4 until one succeeds: the watchdog goes on after a failure,
// and the lock is kept once the node answers again, well before its
// validity runs out.
func TestWatchdogRetriesAfterAFailedRenewal(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	c := locktest.Client(t, nodes, &lock.Options{TTL: 5 * time.Second, NodeTimeout: 200 * time.Millisecond,
		RenewInterval: 400 * time.Millisecond, KeyPrefix: locktest.Prefix(t)})
	l := mustAcquire(t, c, "k")
	defer l.Release(context.Background())
	if err := nodes[0].Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nodes[0].Resume() })
	testenv.Eventually(t, 3*time.Second, func() error {
		if c.Stats().RenewFailed == 0 {
			return errors.New("no failed renewal yet")
		}
		return nil
	})
	if err := nodes[0].Resume(); err != nil {
		t.Fatal(err)
	}
	renewed := c.Stats().Renewed
	// Retried every 100ms; the validity (4.95s from the last renewal)
	// leaves a loaded machine room.
	testenv.Eventually(t, 3*time.Second, func() error {
		if err := l.Context().Err(); err != nil {
			return fmt.Errorf("lock lost: %v", context.Cause(l.Context()))
		}
		if c.Stats().Renewed == renewed {
			return errors.New("no renewal since the node answers again")
		}
		return nil
	})
	if err := l.Context().Err(); err != nil {
		t.Fatalf("lock lost: %v", context.Cause(l.Context()))
	}
}

// Options.RenewInterval: "A failed renewal is retried every RenewInterval/4
// until the validity runs out", not at the next RenewInterval, which could
// leave a single retry (or none) before the validity ends. With the only
// node hung, failed renewals follow each other about RenewInterval/4 plus
// NodeTimeout apart: two more within 1.2s after the first here, where a
// watchdog waiting a whole RenewInterval needs 4.2s.
func TestWatchdogRetriesAtAQuarterInterval(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	const interval, nodeTimeout = 2 * time.Second, 100 * time.Millisecond
	c := locktest.Client(t, nodes, &lock.Options{TTL: 30 * time.Second, NodeTimeout: nodeTimeout,
		RenewInterval: interval, KeyPrefix: locktest.Prefix(t)})
	l := mustAcquire(t, c, "k")
	defer l.Release(context.Background())
	if err := nodes[0].Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nodes[0].Resume() })
	failedAtLeast := func(n uint64) func() error {
		return func() error {
			if got := c.Stats().RenewFailed; got < n {
				return fmt.Errorf("%d failed renewals, want %d", got, n)
			}
			return nil
		}
	}
	testenv.Eventually(t, 2*interval, failedAtLeast(1))
	// 2 × (500ms + 100ms) = 1.2s; the bound leaves a loaded machine 1.3s
	// and stays 1.7s under 2 × (interval + NodeTimeout).
	testenv.Eventually(t, 2500*time.Millisecond, failedAtLeast(3))
	if err := l.Context().Err(); err != nil {
		t.Fatalf("lock lost: %v", context.Cause(l.Context()))
	}
}
