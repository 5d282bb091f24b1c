// Package notify tells API processes that orders were decided, so a buyer
// long-polling GET /v1/orders/{id}?wait= is answered as soon as the outcome
// commits instead of by a polling loop.
//
// Workers [Publisher.Publish] the ids of every committed batch on one Redis
// pub/sub channel; every API process runs a [Hub] subscribed to it that
// wakes the local waiters of those ids. Pub/sub is fire-and-forget: a
// message lost while the subscription reconnects only delays a waiter until
// its fallback re-check, never loses an outcome, which lives in PostgreSQL.
package notify

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Channel returns the channel name for a key prefix.
func Channel(prefix string) string { return prefix + "orders:decided" }

// Publisher announces decided orders.
type Publisher struct {
	rdb     redis.UniversalClient
	channel string
}

// NewPublisher publishes on Channel(prefix) through rdb, which the caller owns.
func NewPublisher(rdb redis.UniversalClient, prefix string) *Publisher {
	return &Publisher{rdb: rdb, channel: Channel(prefix)}
}

// Publish announces that the orders ids have their outcome committed.
// Order ids never contain a comma.
func (p *Publisher) Publish(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := p.rdb.Publish(ctx, p.channel, strings.Join(ids, ",")).Err(); err != nil {
		return fmt.Errorf("notify: publish %d ids: %w", len(ids), err)
	}
	return nil
}

// Hub wakes local waiters when their order is announced. It is safe for
// concurrent use.
type Hub struct {
	rdb     redis.UniversalClient
	channel string

	mu      sync.Mutex
	waiters map[string]map[*waiter]struct{}
}

type waiter struct{ ch chan struct{} }

// NewHub listens on Channel(prefix) through rdb, which the caller owns.
func NewHub(rdb redis.UniversalClient, prefix string) *Hub {
	return &Hub{rdb: rdb, channel: Channel(prefix), waiters: map[string]map[*waiter]struct{}{}}
}

// Run subscribes and dispatches announcements until ctx ends. The
// subscription reconnects by itself after a Redis failure. It returns an
// error only when the first subscription cannot be made.
func (h *Hub) Run(ctx context.Context, ready func()) error {
	sub := h.rdb.Subscribe(ctx, h.channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		return fmt.Errorf("notify: subscribe %s: %w", h.channel, err)
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
			h.dispatch(strings.Split(m.Payload, ","))
		}
	}
}

func (h *Hub) dispatch(ids []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		ws, ok := h.waiters[id]
		if !ok {
			continue
		}
		for w := range ws {
			close(w.ch)
		}
		delete(h.waiters, id)
	}
}

// Watch returns a channel that is closed when order id is next announced,
// and a function to stop watching. Watch before reading the order's state,
// so an announcement between the read and the wait is not missed.
func (h *Hub) Watch(id string) (<-chan struct{}, func()) {
	w := &waiter{ch: make(chan struct{})}
	h.mu.Lock()
	ws := h.waiters[id]
	if ws == nil {
		ws = map[*waiter]struct{}{}
		h.waiters[id] = ws
	}
	ws[w] = struct{}{}
	h.mu.Unlock()
	return w.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if ws, ok := h.waiters[id]; ok {
			delete(ws, w)
			if len(ws) == 0 {
				delete(h.waiters, id)
			}
		}
	}
}

// Waiting returns how many waiters are registered, for metrics.
func (h *Hub) Waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ws := range h.waiters {
		n += len(ws)
	}
	return n
}
