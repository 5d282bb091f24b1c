package lock

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Waking waiters.
//
// Each Client keeps, per key that has waiting goroutines, a keyWaiters entry
// (indexed by the key's channel name). While an entry exists, the key's
// channel is subscribed on every node through one shared PubSub connection
// per node; release.lua publishes on it. Messages of other clients'
// releases, and this client's releases (locally), wake the entry's
// listeners. Entries with no waiters are swept (and their
// channels unsubscribed) after idleUnsubscribe, so that a busy key does not
// subscribe and unsubscribe on every hand-off.

const (
	idleUnsubscribe = 2 * time.Second
	sweepInterval   = time.Second
)

type hub struct {
	c  *Client
	mu sync.Mutex
	m  map[string]*keyWaiters // by channel

	closed    bool
	stop      chan struct{}
	sweepOnce sync.Once
}

type keyWaiters struct {
	channel string

	// Guarded by hub.mu.
	// The local queue: the goroutine holding the turn is the one that
	// contends at the nodes; the others wait in turnQueue, oldest first.
	// A goroutine's place is fixed when it enqueues (under hub.mu), not
	// when it gets around to blocking, so arrival order is kept exactly.
	turnHeld   bool
	turnQueue  []chan struct{}
	refs       int
	listeners  map[chan struct{}]struct{}
	ready      chan struct{} // closed once a quorum of nodes confirmed the subscription
	readyNodes []bool
	readyCount int
	idleSince  time.Time
}

func newHub(c *Client) *hub {
	return &hub{c: c, m: make(map[string]*keyWaiters), stop: make(chan struct{})}
}

// queued reports whether goroutines of this client wait for the channel's key.
func (h *hub) queued(channel string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	kw := h.m[channel]
	return kw != nil && kw.refs > 0
}

// join registers a waiter for channel, subscribing on first use.
func (h *hub) join(channel string) *keyWaiters {
	h.mu.Lock()
	kw := h.m[channel]
	created := kw == nil
	if created {
		kw = &keyWaiters{
			channel:    channel,
			listeners:  make(map[chan struct{}]struct{}),
			ready:      make(chan struct{}),
			readyNodes: make([]bool, len(h.c.nodes)),
		}
		h.m[channel] = kw
	}
	kw.refs++
	closed := h.closed
	h.mu.Unlock()
	if created && !closed {
		h.sweepOnce.Do(func() { go h.sweep() })
		for _, n := range h.c.nodes {
			n.sub.request(channel)
		}
	}
	return kw
}

// enqueueTurn puts the caller at the end of the key's local queue and
// returns a channel that is closed when its turn comes: at once when no one
// holds the turn. The caller must then call releaseTurn, or abandonTurn if
// it stops waiting.
func (h *hub) enqueueTurn(kw *keyWaiters) chan struct{} {
	ch := make(chan struct{})
	h.mu.Lock()
	defer h.mu.Unlock()
	if !kw.turnHeld {
		kw.turnHeld = true
		close(ch)
		return ch
	}
	kw.turnQueue = append(kw.turnQueue, ch)
	return ch
}

// releaseTurn hands the turn to the next in line.
func (h *hub) releaseTurn(kw *keyWaiters) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.passTurn(kw)
}

// abandonTurn takes ch out of the queue; if its turn came meanwhile, it is
// passed on.
func (h *hub) abandonTurn(kw *keyWaiters, ch chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range kw.turnQueue {
		if c == ch {
			kw.turnQueue = append(kw.turnQueue[:i], kw.turnQueue[i+1:]...)
			return
		}
	}
	h.passTurn(kw)
}

// passTurn must be called with h.mu held, by the turn's holder.
func (h *hub) passTurn(kw *keyWaiters) {
	if len(kw.turnQueue) == 0 {
		kw.turnHeld = false
		return
	}
	next := kw.turnQueue[0]
	kw.turnQueue[0] = nil
	kw.turnQueue = kw.turnQueue[1:]
	close(next)
}

func (h *hub) leave(kw *keyWaiters) {
	h.mu.Lock()
	if kw.refs--; kw.refs == 0 {
		kw.idleSince = time.Now()
	}
	h.mu.Unlock()
}

// listen returns a channel that receives a value when the key may be free.
func (h *hub) listen(kw *keyWaiters) chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	kw.listeners[ch] = struct{}{}
	h.mu.Unlock()
	return ch
}

func (h *hub) unlisten(kw *keyWaiters, ch chan struct{}) {
	h.mu.Lock()
	delete(kw.listeners, ch)
	h.mu.Unlock()
}

// notify wakes the listeners of channel; it never blocks.
func (h *hub) notify(channel string) {
	h.mu.Lock()
	if kw := h.m[channel]; kw != nil {
		for ch := range kw.listeners {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	h.mu.Unlock()
}

// wanted reports whether channel should be subscribed.
func (h *hub) wanted(channel string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.closed && h.m[channel] != nil
}

func (h *hub) markReady(channel string, idx int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kw := h.m[channel]
	if kw == nil || kw.readyNodes[idx] {
		return
	}
	kw.readyNodes[idx] = true
	if kw.readyCount++; kw.readyCount == h.c.quorum {
		close(kw.ready)
	}
}

// awaitReady waits until a quorum of nodes confirmed the subscription, at
// most timeout. It returns an error only when ctx ended or done was closed.
func (kw *keyWaiters) awaitReady(ctx context.Context, done <-chan struct{}, timeout time.Duration) error {
	select {
	case <-kw.ready:
		return nil
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-kw.ready:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return ErrClosed
	}
	return nil
}

// sweep drops idle entries and unsubscribes their channels.
func (h *hub) sweep() {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		var idle []string
		h.mu.Lock()
		for ch, kw := range h.m {
			if kw.refs == 0 && time.Since(kw.idleSince) >= idleUnsubscribe {
				delete(h.m, ch)
				idle = append(idle, ch)
			}
		}
		h.mu.Unlock()
		for _, ch := range idle {
			for _, n := range h.c.nodes {
				n.sub.request(ch)
			}
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.stop)
	h.mu.Unlock()
	for _, n := range h.c.nodes {
		n.sub.close()
	}
}

// nodeSub is the subscription state of one node: one PubSub connection,
// started on first use, and a goroutine that brings the subscribed channels
// in line with the hub's entries.
type nodeSub struct {
	h    *hub
	n    *node
	once sync.Once
	ps   *redis.PubSub
	kick chan struct{}

	mu      sync.Mutex
	started bool
	closed  bool
	pending map[string]struct{}
	state   map[string]*subState
}

type subState struct {
	subscribed  bool // SUBSCRIBE sent last (not UNSUBSCRIBE)
	outstanding int  // commands sent whose confirmation has not arrived
}

func newNodeSub(h *hub, n *node) *nodeSub {
	return &nodeSub{
		h: h, n: n,
		kick:    make(chan struct{}, 1),
		pending: make(map[string]struct{}),
		state:   make(map[string]*subState),
	}
}

// request asks the sync goroutine to reconcile channel.
func (s *nodeSub) request(channel string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.pending[channel] = struct{}{}
	if !s.started {
		s.started = true
		s.ps = s.n.rdb.Subscribe(context.Background())
		msgs := s.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
		go s.read(msgs)
		go s.sync()
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *nodeSub) close() {
	s.mu.Lock()
	s.closed = true
	ps := s.ps
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
}

func (s *nodeSub) sync() {
	timeout := max(s.h.c.cfg.nodeTimeout, time.Second)
	for {
		select {
		case <-s.kick:
		case <-s.h.stop:
			return
		}
		s.mu.Lock()
		batch := s.pending
		s.pending = make(map[string]struct{})
		s.mu.Unlock()

		var sub, unsub, ready []string
		for ch := range batch {
			want := s.h.wanted(ch)
			s.mu.Lock()
			st := s.state[ch]
			if st == nil {
				st = &subState{}
				s.state[ch] = st
			}
			switch {
			case want && !st.subscribed:
				st.subscribed = true
				st.outstanding++
				sub = append(sub, ch)
			case want && st.outstanding == 0:
				ready = append(ready, ch)
			case !want && st.subscribed:
				st.subscribed = false
				st.outstanding++
				unsub = append(unsub, ch)
			case !want && st.outstanding == 0:
				delete(s.state, ch)
			}
			s.mu.Unlock()
		}
		for _, ch := range ready {
			s.h.markReady(ch, s.n.idx)
		}
		s.send(sub, timeout, s.ps.Subscribe)
		s.send(unsub, timeout, s.ps.Unsubscribe)
	}
}

func (s *nodeSub) send(chs []string, timeout time.Duration, cmd func(context.Context, ...string) error) {
	if len(chs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	err := cmd(ctx, chs...)
	cancel()
	if err != nil {
		// No confirmation will come for these; go-redis re-subscribes the
		// channels it tracks when it reconnects.
		s.mu.Lock()
		for _, ch := range chs {
			if st := s.state[ch]; st != nil && st.outstanding > 0 {
				st.outstanding--
				s.forgetIfDone(ch, st)
			}
		}
		s.mu.Unlock()
	}
}

// forgetIfDone drops the state of a channel unsubscribed and confirmed:
// otherwise every key ever waited for would keep an entry for the client's
// life. Callers hold s.mu.
func (s *nodeSub) forgetIfDone(ch string, st *subState) {
	if !st.subscribed && st.outstanding == 0 {
		delete(s.state, ch)
	}
}

func (s *nodeSub) read(msgs <-chan interface{}) {
	for m := range msgs {
		switch m := m.(type) {
		case *redis.Message:
			// The payload is the released owner value (release.lua); this
			// client's own releases woke its waiters locally.
			if !s.h.c.ownValue(m.Payload) {
				s.h.notify(m.Channel)
			}
		case *redis.Subscription:
			s.mu.Lock()
			st := s.state[m.Channel]
			ready := false
			if st != nil {
				if st.outstanding > 0 {
					st.outstanding--
				}
				ready = st.subscribed && st.outstanding == 0
				s.forgetIfDone(m.Channel, st)
			}
			s.mu.Unlock()
			if ready {
				s.h.markReady(m.Channel, s.n.idx)
			}
		}
	}
}
