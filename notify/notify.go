// Package notify tells API processes that orders were decided, so a buyer
// long-polling GET /v1/orders/{id}?wait= is answered as soon as the outcome
// commits instead of by a polling loop.
//
// Workers [Publisher.Publish] the outcomes of every committed batch on one
// Redis pub/sub channel; every API process runs a [Hub] subscribed to it that
// hands each outcome to the local waiters of that order, who answer from it
// without reading the database again. Pub/sub is fire-and-forget: a message
// lost while the subscription reconnects only delays a waiter until its
// fallback re-check, never loses an outcome, which lives in PostgreSQL.
package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/subscribe"
)

// Channel returns the channel name for a key prefix.
func Channel(prefix string) string { return prefix + "orders:decided" }

// Outcome is a decided order as announced. An announcement may carry only
// OrderID (Status empty): waiters then read the order themselves.
type Outcome struct {
	OrderID   string    `json:"order_id"`
	ProductID string    `json:"product_id,omitempty"`
	UserID    string    `json:"user_id,omitempty"`
	Quantity  int       `json:"quantity,omitempty"`
	Status    string    `json:"status,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Publisher announces decided orders.
type Publisher struct {
	rdb     redis.UniversalClient
	channel string
}

// NewPublisher publishes on Channel(prefix) through rdb, which the caller owns.
func NewPublisher(rdb redis.UniversalClient, prefix string) *Publisher {
	return &Publisher{rdb: rdb, channel: Channel(prefix)}
}

// Publish announces that the outcomes are committed, in one message.
func (p *Publisher) Publish(ctx context.Context, outcomes ...Outcome) error {
	if len(outcomes) == 0 {
		return nil
	}
	msg, err := json.Marshal(outcomes)
	if err != nil {
		return fmt.Errorf("notify: encode %d outcomes: %w", len(outcomes), err)
	}
	if err := p.rdb.Publish(ctx, p.channel, msg).Err(); err != nil {
		return fmt.Errorf("notify: publish %d outcomes: %w", len(outcomes), err)
	}
	return nil
}

// Hub hands announced outcomes to local waiters. It is safe for concurrent
// use.
type Hub struct {
	rdb     redis.UniversalClient
	channel string

	mu      sync.Mutex
	waiters map[string]map[*Watch]struct{}
}

// Watch is one waiter's registration for one order. C is closed when the
// order is announced; then Outcome tells what was announced.
type Watch struct {
	// C is closed when the order is announced.
	C <-chan struct{}

	c       chan struct{}
	hub     *Hub
	id      string
	outcome Outcome // set before c is closed
}

// Outcome returns the announced outcome once C is closed; ok is false before
// that, or when the announcement carried only the order id.
func (w *Watch) Outcome() (o Outcome, ok bool) {
	select {
	case <-w.c:
		return w.outcome, w.outcome.Status != ""
	default:
		return Outcome{}, false
	}
}

// Stop ends the watch. It may be called more than once.
func (w *Watch) Stop() {
	h := w.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if ws, ok := h.waiters[w.id]; ok {
		delete(ws, w)
		if len(ws) == 0 {
			delete(h.waiters, w.id)
		}
	}
}

// NewHub listens on Channel(prefix) through rdb, which the caller owns.
func NewHub(rdb redis.UniversalClient, prefix string) *Hub {
	return &Hub{rdb: rdb, channel: Channel(prefix), waiters: map[string]map[*Watch]struct{}{}}
}

// Run subscribes and dispatches announcements until ctx ends. The
// subscription reconnects by itself after a Redis failure. It returns an
// error only when the first subscription cannot be made.
func (h *Hub) Run(ctx context.Context, ready func()) error {
	err := subscribe.Run(ctx, h.rdb, h.channel, ready, func(payload string) {
		var outcomes []Outcome
		if json.Unmarshal([]byte(payload), &outcomes) == nil {
			h.dispatch(outcomes)
		} // else not ours; waiters fall back to re-reading
	}, h.wakeAll)
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// wakeAll wakes every waiter with no outcome, so that each reads its order
// again: after a reconnect, announcements made meanwhile are lost.
func (h *Hub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, ws := range h.waiters {
		for w := range ws {
			close(w.c)
		}
		delete(h.waiters, id)
	}
}

func (h *Hub) dispatch(outcomes []Outcome) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range outcomes {
		ws, ok := h.waiters[o.OrderID]
		if !ok {
			continue
		}
		for w := range ws {
			w.outcome = o
			close(w.c)
		}
		delete(h.waiters, o.OrderID)
	}
}

// Watch registers a waiter for order id's next announcement. Watch before
// reading the order's state, so an announcement between the read and the
// wait is not missed; Stop the watch when done.
func (h *Hub) Watch(id string) *Watch {
	c := make(chan struct{})
	w := &Watch{C: c, c: c, hub: h, id: id}
	h.mu.Lock()
	ws := h.waiters[id]
	if ws == nil {
		ws = map[*Watch]struct{}{}
		h.waiters[id] = ws
	}
	ws[w] = struct{}{}
	h.mu.Unlock()
	return w
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
