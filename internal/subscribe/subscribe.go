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
// failure (messages published meanwhile are lost). It returns an error only
// when the first subscription cannot be made.
func Run(ctx context.Context, rdb redis.UniversalClient, channel string, ready func(), handle func(payload string)) error {
	sub := rdb.Subscribe(ctx, channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		return fmt.Errorf("subscribe %s: %w", channel, err)
	}
	if ready != nil {
		ready()
	}
	msgs := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			handle(m.Payload)
		}
	}
}

// Start runs run (a Run-like loop) in a goroutine and waits until it calls
// ready, or returns: then its error is returned. The loop goes on until ctx
// ends; done is closed when it has returned.
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
	if err := <-subscribed; err != nil {
		return finished, err
	}
	return finished, nil
}
