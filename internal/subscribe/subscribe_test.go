package subscribe_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/subscribe"
	"github.com/flashsale/flashsale/internal/testenv"
)

// Start returns once the loop is confirmed (nil), or with why it is not: the
// loop's error, "ended before it was confirmed" for a loop that returned
// without one, or ctx's end. Before, the package had no tests: a Start that
// took a loop's return without error for a confirmation went unnoticed,
// and the API served without its subscription (long polls never woken,
// sold-out changes never seen).
func TestStart(t *testing.T) {
	t.Parallel()
	failed := errors.New("subscribe: connection refused")
	for _, tc := range []struct {
		name    string
		run     func(ctx context.Context, ready func()) error
		wantErr bool
	}{
		{"confirmed", func(ctx context.Context, ready func()) error { ready(); <-ctx.Done(); return nil }, false},
		{"confirmed twice", func(ctx context.Context, ready func()) error { ready(); ready(); <-ctx.Done(); return nil }, false},
		{"failed", func(context.Context, func()) error { return failed }, true},
		{"ended unconfirmed", func(context.Context, func()) error { return nil }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			done, err := subscribe.Start(ctx, tc.run)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Start: err = %v, want an error %v", err, tc.wantErr)
			}
			if tc.name == "failed" && !errors.Is(err, failed) {
				t.Errorf("Start: err = %v, want the loop's", err)
			}
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("done not closed 10s after ctx ended")
			}
		})
	}
}

// A loop that waits for its confirmation past ctx's end does not hold
// Start: it returns ctx's cause at once. When the loop returns later (its
// client closed), done is closed all the same: nobody reads its outcome
// any more, and that must not hold the loop's goroutine.
func TestStartReturnsAtCtxEnd(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	ctx, cancel := context.WithCancelCause(context.Background())
	stopped := errors.New("signal received")
	cancel(stopped)
	done, err := subscribe.Start(ctx, func(context.Context, func()) error { <-release; return nil })
	if !errors.Is(err, stopped) {
		close(release)
		t.Fatalf("Start: err = %v, want one wrapping ctx's cause", err)
	}
	close(release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("done not closed 10s after the loop was released")
	}
}

// Run's ready and resubscribed may be nil (documented "if not nil"): a
// caller with nothing to catch up on after a reconnect, or none waiting for
// the confirmation, passes nil, and the loop neither panics at its first
// confirmation nor at a re-subscription, and hands messages on throughout.
func TestRunWithoutCallbacks(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	admin := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		done <- subscribe.Run(ctx, rdb, "ch", nil, func(payload string) {
			select {
			case got <- payload:
			default:
			}
		}, nil)
	}()
	// Published until one arrives: without ready, nothing tells when the
	// subscription is made.
	received := func(round string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() error {
			if err := admin.Publish(ctx, "ch", round).Err(); err != nil {
				return err
			}
			for {
				select {
				case p := <-got:
					if p == round {
						return nil
					}
				case err := <-done:
					done <- err
					t.Fatalf("Run returned %v before %s", err, round)
				case <-time.After(100 * time.Millisecond):
					return fmt.Errorf("%s: no message yet", round)
				}
			}
		})
	}
	received("first")
	if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	received("after the reconnect")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context's end")
	}
}

// Run leaves no subscription behind when it returns at ctx's end: its
// connection is closed, not left subscribed (and reconnecting) for a
// process that no longer listens.
func TestRunUnsubscribesWhenItReturns(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t)
	channel := "t:" + testenv.Namespace(t) + ":ch"
	numsub := func() (int64, error) {
		n, err := rdb.PubSubNumSub(context.Background(), channel).Result()
		return n[channel], err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- subscribe.Run(ctx, rdb, channel, func() { close(ready) }, func(string) {}, nil) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not subscribe within 10s")
	}
	if n, err := numsub(); err != nil || n != 1 {
		t.Fatalf("subscribers of the channel while Run runs = %d, %v; want 1", n, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context's end")
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n, err := numsub(); err != nil || n != 0 {
			return fmt.Errorf("subscribers of the channel after Run returned = %d, %v; want 0", n, err)
		}
		return nil
	})
}
