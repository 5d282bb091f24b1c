package subscribe_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/subscribe"
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
// Start: it returns ctx's cause at once.
func TestStartReturnsAtCtxEnd(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancelCause(context.Background())
	stopped := errors.New("signal received")
	cancel(stopped)
	_, err := subscribe.Start(ctx, func(context.Context, func()) error { <-release; return nil })
	if !errors.Is(err, stopped) {
		t.Fatalf("Start: err = %v, want one wrapping ctx's cause", err)
	}
}
