// Package subscribe runs a Redis pub/sub subscription loop, shared by the
// API's listeners (decided orders, sold-out changes).
package subscribe

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Run subscribes rdb to channel, calls ready (if not nil) once the
// subscription is confirmed, and hands every message's payload to handle
// until ctx ends. The subscription reconnects by itself after a Redis
// failure; messages published meanwhile are lost, so resubscribed (if not
// nil) is called each time it is confirmed again, for the caller to catch
// up. It returns an error only when the first subscription cannot be made.
func Run(ctx context.Context, rdb redis.UniversalClient, channel string, ready func(), handle func(payload string), resubscribed func()) error {
	sub := rdb.Subscribe(ctx, channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		return fmt.Errorf("subscribe %s: %w", channel, err)
	}
	if ready != nil {
		ready()
	}
	// With the subscriptions: go-redis's Channel() drops the confirmation
	// of a re-subscription after a reconnect, which is the only sign that
	// messages may have been lost.
	msgs := sub.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			switch m := m.(type) {
			case *redis.Message:
				handle(m.Payload)
			case *redis.Subscription:
				if m.Kind == "subscribe" && resubscribed != nil {
					resubscribed()
				}
			}
		}
	}
}

// Start runs run (a Run-like loop) in a goroutine and waits until it calls
// ready, or returns: then its error is returned; or until ctx ends: then
// an error wrapping ctx's is returned. The loop goes on until ctx ends;
// done is closed when it has returned. A loop waiting for its first
// confirmation from a server that stopped answering does not see ctx's end
// (go-redis's read of it has no deadline): it returns when its client is
// closed, which is why Start does not wait for it.
func Start(ctx context.Context, run func(ctx context.Context, ready func()) error) (done <-chan struct{}, err error) {
	subscribed := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var once sync.Once
		err := run(ctx, func() { once.Do(func() { subscribed <- nil }) })
		once.Do(func() {
			if err == nil {
				err = fmt.Errorf("subscription ended before it was confirmed")
			}
			subscribed <- err
		})
	}()
	select {
	case err := <-subscribed:
		return finished, err
	case <-ctx.Done():
		return finished, fmt.Errorf("subscription not confirmed: %w", context.Cause(ctx))
	}
}
