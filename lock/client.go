package lock

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Client acquires locks on one Redis node or on a majority of N independent
// nodes. It is safe for concurrent use by multiple goroutines. Create it with
// [New] or [NewFromURLs] and [Client.Close] it when done.
type Client struct {
	cfg    config
	nodes  []*node
	quorum int
	owned  []*redis.Client // created by NewFromURLs, closed by Close
	stats  counters
	hub    *hub

	// noQueue turns off the local queue of waiters (benchmarks compare).
	noQueue bool
	// valuePrefix starts the owner value of every lock this client tries
	// (newValue). release.lua publishes the released value, so the
	// subscription reader can ignore this client's own releases: they wake
	// its waiters locally already, and the release a failed attempt makes
	// to clean up (a lost vote) would otherwise wake the same waiter again
	// when its message arrived, after the waiter had dropped the wake-ups
	// it expected, for another round against the same holder.
	valuePrefix string

	mu        sync.Mutex
	closed    bool
	done      chan struct{} // closed by Close
	active    map[*Lock]struct{}
	heldByKey map[string]int
	bg        sync.WaitGroup // background clean-ups; Close waits for them
}

type node struct {
	idx int
	rdb redis.UniversalClient
	sub *nodeSub
	// ctxTimeouts: the client aborts calls at the context's deadline
	// (ContextTimeoutEnabled), so a call may run inline.
	ctxTimeouts bool
}

// honorsContext reports whether rdb aborts calls at the context deadline.
func honorsContext(rdb redis.UniversalClient) bool {
	switch r := rdb.(type) {
	case *redis.Client:
		return r.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return r.Options().ContextTimeoutEnabled
	}
	return false
}

// keyset holds the Redis names of one lock.
type keyset struct {
	lock, fence, channel string
	both                 []string // {lock, fence}
}

// New returns a client for the given nodes. One node gives a single-node
// lock; N nodes give a quorum lock that needs N/2+1 of them (any N >= 1 is
// accepted; use independent servers, not replicas of each other). The nodes
// stay owned by the caller: Close does not close them. opts may be nil.
//
// Set ContextTimeoutEnabled on the nodes' options so that calls are aborted
// at [Options.NodeTimeout]; see there.
func New(nodes []redis.UniversalClient, opts *Options) (*Client, error) {
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, errors.New("lock: no nodes")
	}
	c := &Client{
		cfg:       cfg,
		quorum:    len(nodes)/2 + 1,
		done:      make(chan struct{}),
		active:    make(map[*Lock]struct{}),
		heldByKey: make(map[string]int),
		// 10 of rand.Text's base32 characters: 50 random bits, so that
		// another client's values never share the prefix.
		valuePrefix: rand.Text()[:10] + ".",
	}
	c.hub = newHub(c)
	for i, rdb := range nodes {
		if rdb == nil {
			return nil, fmt.Errorf("lock: node %d is nil", i)
		}
		n := &node{idx: i, rdb: rdb, ctxTimeouts: honorsContext(rdb)}
		n.sub = newNodeSub(c.hub, n)
		c.nodes = append(c.nodes, n)
	}
	return c, nil
}

// NewFromURLs connects to each redis:// (or rediss://) URL and returns a
// client for those nodes, as [New] does. The connections are made with
// ContextTimeoutEnabled and a single dial attempt (so that a down node fails
// fast), and are closed by [Client.Close].
func NewFromURLs(urls []string, opts *Options) (*Client, error) {
	var rdbs []*redis.Client
	closeAll := func() {
		for _, r := range rdbs {
			_ = r.Close()
		}
	}
	nodes := make([]redis.UniversalClient, 0, len(urls))
	for _, u := range urls {
		o, err := redis.ParseURL(u)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("lock: parse node URL: %w", err)
		}
		o.ContextTimeoutEnabled = true
		o.DialerRetries = 1 // a node that refuses connections fails fast
		r := redis.NewClient(o)
		rdbs = append(rdbs, r)
		nodes = append(nodes, r)
	}
	c, err := New(nodes, opts)
	if err != nil {
		closeAll()
		return nil, err
	}
	c.owned = rdbs
	return c, nil
}

// Close stops the client: blocked Acquire calls return an error matching
// [ErrClosed] and [ErrNotObtained], and later calls fail with ErrClosed. Locks
// still held are not released (they expire after at most TTL); their
// watchdogs stop and their contexts are cancelled with a cause matching both
// [ErrLost] and [ErrClosed]. Close waits for the clean-ups already running
// in the background (each bounded by NodeTimeout on nodes that honor
// context deadlines, as [New] asks; by the node client's ReadTimeout on
// others), then closes the nodes created by [NewFromURLs]; clean-ups due
// after that are not run (what they would remove expires within TTL).
// Closing twice is a no-op.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	locks := make([]*Lock, 0, len(c.active))
	for l := range c.active {
		locks = append(locks, l)
	}
	c.mu.Unlock()

	cause := fmt.Errorf("%w: %w", ErrLost, ErrClosed)
	for _, l := range locks {
		l.abandon(stateClosed, cause)
	}
	c.bg.Wait() // no new ones: background refuses once closed is set
	c.hub.close()
	var errs []error
	for _, r := range c.owned {
		if err := r.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats { return c.stats.snapshot() }

// Quorum is the number of nodes an acquisition needs: len(nodes)/2+1.
func (c *Client) Quorum() int { return c.quorum }

func (c *Client) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *Client) keys(key string) keyset {
	lk := c.cfg.prefix + "{" + key + "}"
	ks := keyset{lock: lk, fence: lk + ":fence", channel: lk + ":released"}
	ks.both = []string{ks.lock, ks.fence}
	return ks
}

// TryAcquire makes one attempt to acquire the lock for key and does not wait.
// It returns [ErrNotObtained] when another owner holds the lock; an error
// matching both ErrNotObtained and [ErrNoQuorum] when too few nodes answered;
// ErrNotObtained joined with ctx's error when ctx ended; [ErrClosed] (with
// ErrNotObtained) after Close; [ErrInvalidKey] for an empty key.
func (c *Client) TryAcquire(ctx context.Context, key string) (*Lock, error) {
	begin := time.Now()
	if err := c.precheck(key); err != nil {
		return nil, c.failed(key, err, begin)
	}
	ks := c.keys(key)
	l, r := c.attempt(ctx, key, ks)
	if l != nil {
		return c.acquired(l, r.latency, begin)
	}
	if ctx.Err() != nil {
		return nil, c.failed(key, ctxError(ctx, r), begin)
	}
	return nil, c.failed(key, r.err, begin)
}

// Acquire acquires the lock for key, waiting as long as ctx allows. Waiters
// are woken by pub/sub when the holder releases, and otherwise poll (see
// [Options.PollMin]). Within one Client, goroutines waiting for the same key
// queue locally in FIFO order, so only one of them at a time contends at the
// nodes.
//
// When ctx ends first, the error matches both [ErrNotObtained] and ctx.Err()
// (context.DeadlineExceeded or context.Canceled), and also [ErrNoQuorum] when
// the last attempt failed because too few nodes answered. After Close it
// matches [ErrClosed] and ErrNotObtained. An empty key gives [ErrInvalidKey].
func (c *Client) Acquire(ctx context.Context, key string) (*Lock, error) {
	begin := time.Now()
	if err := c.precheck(key); err != nil {
		return nil, c.failed(key, err, begin)
	}
	ks := c.keys(key)
	var last attemptResult
	// Fast path, unless local goroutines already queue for this key: then
	// the lock is most likely held, and joining the queue keeps FIFO order.
	if c.noQueue || !c.hub.queued(ks.channel) {
		l, r := c.attempt(ctx, key, ks)
		if l != nil {
			return c.acquired(l, r.latency, begin)
		}
		if ctx.Err() != nil {
			return nil, c.failed(key, ctxError(ctx, r), begin)
		}
		last = r
	}
	return c.wait(ctx, key, ks, begin, last)
}

func (c *Client) wait(ctx context.Context, key string, ks keyset, begin time.Time, last attemptResult) (*Lock, error) {
	kw := c.hub.join(ks.channel)
	defer c.hub.leave(kw)
	if c.noQueue {
		c.stats.waiting.Add(1)
		defer c.stats.waiting.Add(-1)
	} else {
		turn := c.hub.enqueueTurn(kw)
		// Counted once in the queue: a caller that sees Waiting grow knows
		// the waiter's place is fixed.
		c.stats.waiting.Add(1)
		defer c.stats.waiting.Add(-1)
		select {
		case <-turn:
			defer c.hub.releaseTurn(kw)
		case <-ctx.Done():
			c.hub.abandonTurn(kw, turn)
			return nil, c.failed(key, ctxError(ctx, last), begin)
		case <-c.done:
			c.hub.abandonTurn(kw, turn)
			return nil, c.failed(key, closedError(), begin)
		}
	}
	wake := c.hub.listen(kw)
	defer c.hub.unlisten(kw, wake)

	// Wait (briefly) until the nodes confirmed the subscription, so that a
	// release between here and the next attempt is not missed.
	if err := kw.awaitReady(ctx, c.done, c.cfg.nodeTimeout); err != nil {
		if c.isClosed() {
			return nil, c.failed(key, closedError(), begin)
		}
		return nil, c.failed(key, ctxError(ctx, last), begin)
	}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	splits := 0 // split rounds in a row
	for {
		delay := c.pollDelay(-1)
		// While a goroutine of this client holds the lock, its release (or
		// loss) wakes us locally: no need to ask the nodes.
		if c.noQueue || !c.heldLocally(key) {
			l, r := c.attempt(ctx, key, ks)
			if l != nil {
				return c.acquired(l, r.latency, begin)
			}
			if ctx.Err() != nil {
				return nil, c.failed(key, ctxError(ctx, r.orEarlier(last)), begin)
			}
			last = r
			if r.split {
				splits++
			} else {
				splits = 0
			}
			if r.split && splits <= maxSplitRetries {
				// Several contenders split the nodes between them. Retry
				// after a short random delay, ignoring the wake-ups that
				// the other losers' clean-ups publish, so that the next
				// round is not split again.
				if err := sleepCtx(ctx, c.done, mrand.N(2*r.latency+time.Millisecond)); err != nil {
					if c.isClosed() {
						return nil, c.failed(key, closedError(), begin)
					}
					return nil, c.failed(key, ctxError(ctx, last), begin)
				}
				drain(wake)
				continue
			}
			if r.split {
				// Split again and again: most likely a holder with just a
				// majority (a node restarted empty, or was down when it
				// acquired), whose free node we win each time. Wait for
				// its release like any waiter, instead of spinning on that
				// node for as long as it holds the lock. (Our own
				// clean-up's message does not wake us: see valuePrefix.)
				drain(wake)
			}
			delay = c.pollDelay(r.hint)
		}
		timer.Reset(delay)
		select {
		case <-wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		case <-ctx.Done():
			return nil, c.failed(key, ctxError(ctx, last), begin)
		case <-c.done:
			return nil, c.failed(key, closedError(), begin)
		}
	}
}

// newValue returns a fresh owner value: the client's prefix and 130 random
// bits.
func (c *Client) newValue() string { return c.valuePrefix + rand.Text() }

// ownValue reports whether v is the owner value of a lock this client
// tried.
func (c *Client) ownValue(v string) bool { return strings.HasPrefix(v, c.valuePrefix) }

// maxSplitRetries is how many split rounds in a row a waiter retries at once
// (after a short random delay) before it waits as for a busy lock.
const maxSplitRetries = 3

// pollDelay is a random delay in [PollMin, PollMax], shortened to just past
// hint (the time until enough holders' keys expire) when that is known (>= 0).
func (c *Client) pollDelay(hint time.Duration) time.Duration {
	d := c.cfg.pollMin
	if span := c.cfg.pollMax - c.cfg.pollMin; span > 0 {
		d += mrand.N(span)
	}
	if hint >= 0 {
		d = min(d, hint+time.Millisecond+mrand.N(time.Millisecond))
	}
	return d
}

func sleepCtx(ctx context.Context, done <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return ErrClosed
	}
}

func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func (c *Client) heldLocally(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heldByKey[key] > 0
}

func (c *Client) precheck(key string) error {
	if key == "" {
		return ErrInvalidKey
	}
	if c.isClosed() {
		return closedError()
	}
	return nil
}

func closedError() error { return fmt.Errorf("%w: %w", ErrNotObtained, ErrClosed) }

// ctxError is the error of an acquisition whose context ended; r is the last
// attempt's result.
func ctxError(ctx context.Context, r attemptResult) error {
	if r.noQuorum {
		return fmt.Errorf("%w: %w: %w (last attempt: %v)", ErrNotObtained, ErrNoQuorum, ctx.Err(), r.err)
	}
	return fmt.Errorf("%w: %w", ErrNotObtained, ctx.Err())
}

func (c *Client) acquired(l *Lock, latency time.Duration, begin time.Time) (*Lock, error) {
	if !c.register(l) {
		// Closed while the attempt ran: give the lock back.
		l.abandon(stateClosed, fmt.Errorf("%w: %w", ErrLost, ErrClosed))
		c.releaseNodes(context.Background(), l.ks, l.value)
		return nil, c.failed(l.key, closedError(), begin)
	}
	l.start()
	c.stats.acquired.Add(1)
	c.cfg.observer.Acquired(l.key, latency, time.Since(begin))
	return l, nil
}

func (c *Client) failed(key string, err error, begin time.Time) error {
	cause := CauseOf(err)
	c.stats.acquireFailed.Add(1)
	switch cause {
	case CauseBusy:
		c.stats.busy.Add(1)
	case CauseNoQuorum:
		c.stats.noQuorum.Add(1)
	}
	c.cfg.observer.AcquireFailed(key, cause, time.Since(begin))
	return err
}

func (c *Client) register(l *Lock) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.active[l] = struct{}{}
	c.heldByKey[l.key]++
	c.stats.held.Add(1)
	return true
}

func (c *Client) unregister(l *Lock) {
	c.mu.Lock()
	if _, ok := c.active[l]; ok {
		delete(c.active, l)
		c.stats.held.Add(-1)
		if c.heldByKey[l.key]--; c.heldByKey[l.key] <= 0 {
			delete(c.heldByKey, l.key)
		}
	}
	c.mu.Unlock()
}

// nodeReply is one node's answer to a script call.
type nodeReply struct {
	idx int
	ok  bool  // the script succeeded (acquired, extended, released)
	n   int64 // acquire: token if ok, holder's PTTL if not
	err error
}

// fanout calls every node in parallel, each call bounded by NodeTimeout, and
// returns a channel that receives exactly one reply per node. The channel is
// buffered, so callers may stop reading at any time.
func (c *Client) fanout(ctx context.Context, call func(ctx context.Context, rdb redis.UniversalClient) nodeReply) chan nodeReply {
	replies := make(chan nodeReply, len(c.nodes))
	if len(c.nodes) == 1 && c.nodes[0].ctxTimeouts {
		// One node whose client honours the deadline: no goroutine needed.
		n := c.nodes[0]
		cctx, cancel := context.WithTimeout(ctx, c.cfg.nodeTimeout)
		r := call(cctx, n.rdb)
		cancel()
		r.idx = n.idx
		replies <- r
		return replies
	}
	for _, n := range c.nodes {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, c.cfg.nodeTimeout)
			r := call(cctx, n.rdb)
			cancel()
			r.idx = n.idx
			replies <- r
		}()
	}
	return replies
}

// orEarlier returns the earlier attempt's result when r was cut short by
// the caller: a blocking Acquire whose context ends during an attempt is
// explained by what the attempts before it met (no quorum, say), not by the
// interrupted one.
func (r attemptResult) orEarlier(earlier attemptResult) attemptResult {
	if r.cut && earlier.err != nil {
		return earlier
	}
	return r
}

// cutByCaller reports whether a node call failed only because the caller's
// context ended (rather than the node, or its NodeTimeout, failing).
func cutByCaller(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// attemptResult describes a failed or successful attempt.
type attemptResult struct {
	latency  time.Duration
	err      error         // why it failed
	noQuorum bool          // failed because too few nodes answered
	split    bool          // won some nodes but not a majority (split vote)
	cut      bool          // cut short by the caller's context; no node failed
	hint     time.Duration // time until enough holders expire; -1 unknown
}

// attempt makes one acquisition round: SET NX + INCR on every node in
// parallel, then [Client.decide].
func (c *Client) attempt(ctx context.Context, key string, ks keyset) (*Lock, attemptResult) {
	c.stats.attempts.Add(1)
	value := c.newValue()
	start := time.Now()
	ttl := c.cfg.ttlMillis
	replies := c.fanout(ctx, func(ctx context.Context, rdb redis.UniversalClient) nodeReply {
		return acquireReply(acquireScript.Run(ctx, rdb, ks.both, value, ttl))
	})
	return c.decide(ctx, key, ks, value, start, replies)
}

// acquireReply reads one node's answer to the acquire script.
func acquireReply(cmd *redis.Cmd) nodeReply {
	v, err := cmd.Int64Slice()
	if err != nil {
		return nodeReply{err: err}
	}
	if len(v) != 2 {
		return nodeReply{err: fmt.Errorf("lock: unexpected acquire reply %v", v)}
	}
	return nodeReply{ok: v[0] == 1, n: v[1]}
}

// decide completes an acquisition of key with value, begun at start, from
// the nodes' replies to the acquire script (one per node; the channel must
// hold room for all of them): success on a majority, token raised to the
// maximum on a majority, and on failure every value the attempt may have
// written removed.
func (c *Client) decide(ctx context.Context, key string, ks keyset, value string, start time.Time, replies chan nodeReply) (*Lock, attemptResult) {
	n, q := len(c.nodes), c.quorum
	timer := time.NewTimer(c.cfg.nodeTimeout)
	defer timer.Stop()
	var (
		oks      []nodeReply
		busy     []nodeReply // n is the holder's PTTL
		errored  []int       // nodes that answered with an error
		faults   int         // errors not caused by ctx ending
		lastErr  error
		got      int
		timedOut bool
	)
	// Collect until a majority succeeded or became impossible. After a
	// failure, go on collecting the answers still in flight (within the same
	// NodeTimeout), so that the values they wrote are removed before
	// returning and the next attempt finds those nodes free.
	for got < n && !timedOut && ctx.Err() == nil {
		if len(oks) >= q {
			break
		}
		select {
		case r := <-replies:
			got++
			switch {
			case r.err != nil:
				errored = append(errored, r.idx)
				lastErr = fmt.Errorf("node %d: %w", r.idx, r.err)
				if !cutByCaller(ctx, r.err) {
					faults++
				}
			case r.ok:
				oks = append(oks, r)
			default:
				busy = append(busy, r)
			}
		case <-timer.C:
			timedOut = true
			lastErr = fmt.Errorf("%d node(s) did not answer within %v", n-got, c.cfg.nodeTimeout)
		case <-ctx.Done():
			lastErr = ctx.Err()
		}
	}
	pending := n - got

	if len(oks) >= q {
		token := int64(0)
		for _, r := range oks {
			token = max(token, r.n)
		}
		confirmed := 0
		var lagging []int
		for _, r := range oks {
			if r.n >= token {
				confirmed++
			} else {
				lagging = append(lagging, r.idx)
			}
		}
		if confirmed < q {
			confirmed += c.raiseFence(ctx, ks.fence, token, lagging, q-confirmed, c.cfg.nodeTimeout)
		}
		validUntil := start.Add(c.cfg.ttl - c.cfg.drift)
		now := time.Now()
		if confirmed >= q && now.Before(validUntil) {
			if pending > 0 || len(busy) > 0 || len(errored) > 0 {
				// Carry the token to the other nodes too (best effort), so
				// that nodes restarting empty later cannot make it go back.
				var idx []int
				for _, r := range busy {
					idx = append(idx, r.idx)
				}
				idx = append(idx, errored...)
				c.background(func() { c.propagateFence(ks.fence, token, replies, pending, idx) })
			}
			l := newLock(c, key, ks, value, token, validUntil)
			return l, attemptResult{latency: now.Sub(start)}
		}
		if confirmed < q {
			lastErr = fmt.Errorf("fencing token %d confirmed on %d node(s), %d needed", token, confirmed, q)
		} else {
			lastErr = fmt.Errorf("acquired after its validity ran out (%v)", now.Sub(start))
		}
		c.cleanup(ks, value, oks, errored, replies, pending)
		return nil, attemptResult{err: fmt.Errorf("%w: %w: %v", ErrNotObtained, ErrNoQuorum, lastErr), noQuorum: true, hint: -1}
	}

	c.cleanup(ks, value, oks, errored, replies, pending)
	res := attemptResult{hint: -1, split: len(oks) > 0, latency: time.Since(start)}
	reachable := n - len(errored) - pending
	if len(busy) > 0 && reachable >= q {
		res.err = ErrNotObtained
		// Enough of the holders' keys must expire for us to reach q nodes.
		if need := q - (n - len(busy)); need >= 1 && need <= len(busy) {
			pttls := make([]int64, len(busy))
			for i, r := range busy {
				pttls[i] = r.n
			}
			slices.Sort(pttls)
			switch p := pttls[need-1]; {
			case p == -2: // gone since
				res.hint = 0
			case p >= 0:
				res.hint = time.Duration(p) * time.Millisecond
			}
		}
		return nil, res
	}
	if faults == 0 && !timedOut && ctx.Err() != nil {
		// The caller's context ended before enough nodes answered, and
		// none failed on its own: the caller gave up, the nodes did not.
		res.err = fmt.Errorf("%w: %w", ErrNotObtained, ctx.Err())
		res.cut = true
		return nil, res
	}
	res.noQuorum = true
	res.err = fmt.Errorf("%w: %w: %d of %d nodes answered, %d needed: %v", ErrNotObtained, ErrNoQuorum, reachable, n, q, lastErr)
	return nil, res
}

// background runs f in a goroutine that Close waits for, unless the client
// is closed: then it runs nothing (what f would have cleaned up expires
// after at most TTL) and returns false.
func (c *Client) background(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.bg.Go(f)
	return true
}

// cleanup removes value from every node a failed attempt may have written:
// synchronously from nodes that answered OK (so that the next attempt finds
// them free), in the background from nodes that errored or have not answered
// yet (once their answer arrives).
func (c *Client) cleanup(ks keyset, value string, oks []nodeReply, errored []int, replies chan nodeReply, pending int) {
	if len(oks) > 0 {
		idx := make([]int, len(oks))
		for i, r := range oks {
			idx[i] = r.idx
		}
		// Not waking our waiters: the one waiting for this key is the
		// caller, which decides its next step on return (a wake-up now would
		// send it straight into another round, against the same holder).
		c.releaseOn(context.Background(), ks, value, idx, false)
	}
	if pending == 0 && len(errored) == 0 {
		return
	}
	c.background(func() {
		idx := errored
		for range pending {
			if r := <-replies; r.err != nil || r.ok {
				idx = append(idx, r.idx)
			}
		}
		c.releaseOn(context.Background(), ks, value, idx, true)
	})
}

// allNodes is every node's index.
func (c *Client) allNodes() []int {
	idx := make([]int, len(c.nodes))
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// releaseOn runs the release script on the given nodes, in parallel, and
// waits for them (each bounded by NodeTimeout). With wake, when it removed
// the value anywhere, it wakes this client's waiters for the key.
func (c *Client) releaseOn(ctx context.Context, ks keyset, value string, idx []int, wake bool) {
	if len(idx) == 0 {
		return
	}
	var wg sync.WaitGroup
	var deleted atomic.Bool
	for _, i := range idx {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, c.cfg.nodeTimeout)
			defer cancel()
			if releaseReply(releaseScript.Run(cctx, c.nodes[i].rdb, []string{ks.lock}, value, ks.channel)).ok {
				deleted.Store(true)
			}
		})
	}
	wg.Wait()
	if wake && deleted.Load() {
		// The nodes' message carries our own value, which our subscription
		// ignores (valuePrefix): wake our waiters here, since the key may
		// now be free (a lost lock's or a failed attempt's leftover gone).
		c.hub.notify(ks.channel)
	}
}

// raiseFence raises the fence counter to at least token on the given nodes in
// parallel and returns how many confirmed, waiting until need confirmed or all
// answered (each call bounded by timeout).
func (c *Client) raiseFence(ctx context.Context, fence string, token int64, idx []int, need int, timeout time.Duration) int {
	if len(idx) == 0 {
		return 0
	}
	done := make(chan bool, len(idx))
	arg := strconv.FormatInt(token, 10)
	for _, i := range idx {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			s, err := fenceScript.Run(cctx, c.nodes[i].rdb, []string{fence}, arg).Text()
			v, perr := strconv.ParseInt(s, 10, 64)
			done <- err == nil && perr == nil && v >= token
		}()
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	confirmed := 0
	for range idx {
		select {
		case ok := <-done:
			if ok {
				confirmed++
				if confirmed >= need {
					return confirmed
				}
			}
		case <-timer.C:
			return confirmed
		}
	}
	return confirmed
}

// propagateFence raises the fence counter to token on the nodes that did not
// confirm it during the acquisition: idx (nodes that answered busy or with an
// error: the script may have run anyway), and those still pending unless
// their answer shows a counter >= token. It runs in the background, with a
// longer timeout than NodeTimeout since nobody waits for it.
func (c *Client) propagateFence(fence string, token int64, replies chan nodeReply, pending int, idx []int) {
	for range pending {
		if r := <-replies; r.err != nil || !r.ok || r.n < token {
			idx = append(idx, r.idx)
		}
	}
	c.raiseFence(context.Background(), fence, token, idx, len(idx), max(c.cfg.nodeTimeout, backgroundTimeout))
}

// backgroundTimeout bounds background fence propagation calls.
const backgroundTimeout = 250 * time.Millisecond

// AdvanceFence raises the fence counter of key to at least min on every
// reachable node, so that every later acquisition gets a token greater than
// min. Use it when the storage reports a fence newer than the lock's tokens
// (for example after a majority of nodes, or the single node, restarted
// without its data). It needs a majority of nodes to confirm; otherwise it
// returns an error matching [ErrNoQuorum]. It does not touch the lock itself.
func (c *Client) AdvanceFence(ctx context.Context, key string, min int64) error {
	if key == "" {
		return ErrInvalidKey
	}
	if min < 0 {
		return fmt.Errorf("lock: advance fence of %q: negative minimum %d", key, min)
	}
	if c.isClosed() {
		return ErrClosed
	}
	ks := c.keys(key)
	idx := make([]int, len(c.nodes))
	for i := range idx {
		idx[i] = i
	}
	if got := c.raiseFence(ctx, ks.fence, min, idx, len(idx), c.cfg.nodeTimeout); got < c.quorum {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("lock: advance fence of %q: %w: %w", key, ErrNoQuorum, err)
		}
		return fmt.Errorf("lock: advance fence of %q: %w: %d of %d nodes confirmed, %d needed", key, ErrNoQuorum, got, len(c.nodes), c.quorum)
	}
	return nil
}

// tally counts the replies of an extend or release round.
type tally struct {
	ok, notHeld, failed int
	lastErr             error
}

// ownerRound runs an owner-checked script (extend or release) on every node
// and returns once a majority succeeded, success became impossible, all
// answered, NodeTimeout passed or ctx ended.
func (c *Client) ownerRound(ctx context.Context, call func(ctx context.Context, rdb redis.UniversalClient) nodeReply) tally {
	return c.tallyOf(ctx, c.fanout(ctx, call))
}

// tallyOf counts the nodes' replies to an owner-checked script (one per
// node; the channel must hold room for all of them) until a majority
// succeeded, success became impossible, all answered, NodeTimeout passed or
// ctx ended.
func (c *Client) tallyOf(ctx context.Context, replies chan nodeReply) tally {
	n, q := len(c.nodes), c.quorum
	timer := time.NewTimer(c.cfg.nodeTimeout)
	defer timer.Stop()
	var t tally
	for got := 0; got < n && t.ok < q && t.notHeld <= n-q; {
		select {
		case r := <-replies:
			got++
			switch {
			case r.err != nil:
				t.failed++
				t.lastErr = fmt.Errorf("node %d: %w", r.idx, r.err)
			case r.ok:
				t.ok++
			default:
				t.notHeld++
			}
		case <-timer.C:
			t.failed += n - got
			t.lastErr = fmt.Errorf("%d node(s) did not answer within %v", n-got, c.cfg.nodeTimeout)
			return t
		case <-ctx.Done():
			t.failed += n - got
			t.lastErr = ctx.Err()
			return t
		}
	}
	return t
}

func (c *Client) extendNodes(ctx context.Context, ks keyset, value string) tally {
	ttl := c.cfg.ttlMillis
	return c.ownerRound(ctx, func(ctx context.Context, rdb redis.UniversalClient) nodeReply {
		v, err := extendScript.Run(ctx, rdb, []string{ks.lock}, value, ttl).Int64()
		return nodeReply{ok: v == 1, err: err}
	})
}

func (c *Client) releaseNodes(ctx context.Context, ks keyset, value string) tally {
	return c.ownerRound(ctx, func(ctx context.Context, rdb redis.UniversalClient) nodeReply {
		return releaseReply(releaseScript.Run(ctx, rdb, []string{ks.lock}, value, ks.channel))
	})
}

// releaseReply reads one node's answer to the release script.
func releaseReply(cmd *redis.Cmd) nodeReply {
	v, err := cmd.Int64()
	return nodeReply{ok: v == 1, err: err}
}
