package lock

import (
	"fmt"
	"time"
)

// Default option values. See [Options] for how each is used.
const (
	DefaultTTL         = 10 * time.Second
	DefaultDriftFactor = 0.01
	DefaultKeyPrefix   = "lock:"
	DefaultPollMin     = 50 * time.Millisecond
	DefaultPollMax     = 250 * time.Millisecond

	// Bounds of the default NodeTimeout, TTL/100.
	minDefaultNodeTimeout = 20 * time.Millisecond
	maxDefaultNodeTimeout = 500 * time.Millisecond

	// driftConstant is added to TTL*DriftFactor: Redis expires keys with
	// millisecond precision and may expire them up to a millisecond early.
	driftConstant = 2 * time.Millisecond
)

// Options configures a [Client]. A nil *Options, like every zero field, means
// the defaults.
type Options struct {
	// TTL is the time to live of the lock key on each node, renewed by the
	// watchdog while the lock is held. It bounds how long a crashed holder
	// blocks others. At least 10ms. Default 10s.
	TTL time.Duration

	// NodeTimeout bounds each call to a node (acquire, extend, release,
	// fence). Nodes are asked in parallel, so one attempt waits at most this
	// long for slow or paused nodes before it decides with the answers it
	// has. Must be below TTL. Default TTL/100 clamped to [20ms, 500ms] (and
	// to at most TTL/2): 100ms for the default TTL.
	//
	// Clients passed to [New] should have ContextTimeoutEnabled set, so that
	// go-redis aborts a call at this deadline; otherwise the lock still
	// stops waiting for it, but the call occupies a connection until the
	// client's own ReadTimeout. [NewFromURLs] sets it.
	NodeTimeout time.Duration

	// DriftFactor accounts for clock drift between the nodes and this
	// process. A lock acquired by an attempt that started at time s is valid
	// until s + TTL − (TTL*DriftFactor + 2ms); that is TTL − elapsed − drift
	// from the moment it is returned. In [0, 0.5). Default 0.01.
	DriftFactor float64

	// RenewInterval is the watchdog period: while a lock is held it is
	// extended by TTL this often. A failed renewal is retried every
	// RenewInterval/4 until the validity runs out. Must be below TTL minus
	// the drift. Default TTL/3. A negative value turns the watchdog off: the
	// lock then lasts its validity unless [Lock.Extend] is called, and its
	// context is still cancelled (ErrLost) when the validity runs out.
	RenewInterval time.Duration

	// KeyPrefix prefixes every Redis key and channel. The lock for key k
	// uses the keys <prefix>{k} (owner value, with TTL) and <prefix>{k}:fence
	// (fencing counter, never expires), and the channel <prefix>{k}:released.
	// The braces are a hash tag so both keys map to the same cluster slot.
	// Default "lock:".
	KeyPrefix string

	// PollMin and PollMax bound the fallback poll of a blocked Acquire.
	// Waiters are woken by pub/sub when the lock is released; the poll only
	// covers missed messages and holders that died without releasing. A
	// waiter re-tries after a random delay in [PollMin, PollMax], or sooner
	// when the holder's remaining TTL (returned by the failed attempt) is
	// shorter. Defaults 50ms and 250ms.
	PollMin, PollMax time.Duration

	// Observer receives metrics events; nil means none. See [Observer].
	Observer Observer
}

// config is Options with the defaults applied and derived values computed.
type config struct {
	ttl           time.Duration
	ttlMillis     int64
	nodeTimeout   time.Duration
	drift         time.Duration
	renewInterval time.Duration // <= 0: no watchdog
	renewRetry    time.Duration
	prefix        string
	pollMin       time.Duration
	pollMax       time.Duration
	observer      Observer
}

func (o *Options) config() (config, error) {
	if o == nil {
		o = &Options{}
	}
	c := config{
		ttl:           o.TTL,
		nodeTimeout:   o.NodeTimeout,
		renewInterval: o.RenewInterval,
		prefix:        o.KeyPrefix,
		pollMin:       o.PollMin,
		pollMax:       o.PollMax,
		observer:      o.Observer,
	}
	if c.ttl == 0 {
		c.ttl = DefaultTTL
	}
	if c.ttl < 10*time.Millisecond {
		return c, fmt.Errorf("lock: TTL %v is below 10ms", c.ttl)
	}
	c.ttl = c.ttl.Truncate(time.Millisecond)
	c.ttlMillis = c.ttl.Milliseconds()

	if c.nodeTimeout == 0 {
		c.nodeTimeout = min(max(c.ttl/100, minDefaultNodeTimeout), maxDefaultNodeTimeout, c.ttl/2)
	}
	if c.nodeTimeout <= 0 || c.nodeTimeout >= c.ttl {
		return c, fmt.Errorf("lock: NodeTimeout %v must be in (0, TTL %v)", c.nodeTimeout, c.ttl)
	}

	df := o.DriftFactor
	if df == 0 {
		df = DefaultDriftFactor
	}
	if df < 0 || df >= 0.5 {
		return c, fmt.Errorf("lock: DriftFactor %v must be in [0, 0.5)", df)
	}
	c.drift = time.Duration(float64(c.ttl)*df) + driftConstant
	if c.drift >= c.ttl {
		return c, fmt.Errorf("lock: TTL %v leaves no validity after drift %v", c.ttl, c.drift)
	}

	switch {
	case c.renewInterval == 0:
		c.renewInterval = c.ttl / 3
	case c.renewInterval < 0:
		c.renewInterval = 0
	case c.renewInterval >= c.ttl-c.drift:
		return c, fmt.Errorf("lock: RenewInterval %v must be below TTL minus drift (%v)", c.renewInterval, c.ttl-c.drift)
	}
	c.renewRetry = max(c.renewInterval/4, time.Millisecond)

	if c.prefix == "" {
		c.prefix = DefaultKeyPrefix
	}
	if c.pollMin == 0 {
		c.pollMin = DefaultPollMin
	}
	if c.pollMax == 0 {
		c.pollMax = max(DefaultPollMax, c.pollMin)
	}
	if c.pollMin < 0 || c.pollMax < c.pollMin {
		return c, fmt.Errorf("lock: PollMin %v and PollMax %v must satisfy 0 <= PollMin <= PollMax", c.pollMin, c.pollMax)
	}
	if c.observer == nil {
		c.observer = NopObserver{}
	}
	return c, nil
}
