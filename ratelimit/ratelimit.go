// Package ratelimit limits how often something may happen per key, shared by
// every process that uses the same Redis. It is a thin wrapper around
// github.com/go-redis/redis_rate, which runs the generic cell rate algorithm
// (GCRA) in one Lua script: a key may spend Burst events at once, then one
// every Per/Rate.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// ErrBadOptions is returned by [New] for a rate that is not positive.
var ErrBadOptions = errors.New("ratelimit: bad options")

// Options configures a Limiter.
type Options struct {
	// Rate events are allowed per Per. Required: at least 1.
	Rate int
	// Per is the period of Rate. Required: positive.
	Per time.Duration
	// Burst is how many events a key may spend at once; default Rate.
	Burst int
	// KeyPrefix prefixes the keys; default "flashsale:ratelimit:". The
	// library puts "rate:" in front, so a key is stored as
	// "rate:<KeyPrefix><key>".
	KeyPrefix string
}

// Limiter counts events per key in Redis. It is safe for concurrent use.
type Limiter struct {
	rl     *redis_rate.Limiter
	limit  redis_rate.Limit
	prefix string
}

// New returns a Limiter on rdb, which the caller owns. It returns
// [ErrBadOptions] when Rate or Per is not positive.
func New(rdb redis.UniversalClient, opts Options) (*Limiter, error) {
	if opts.Rate < 1 || opts.Per <= 0 {
		return nil, fmt.Errorf("%w: rate %d per %v", ErrBadOptions, opts.Rate, opts.Per)
	}
	if opts.Burst < 1 {
		opts.Burst = opts.Rate
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "flashsale:ratelimit:"
	}
	return &Limiter{
		rl:     redis_rate.NewLimiter(rdb),
		limit:  redis_rate.Limit{Rate: opts.Rate, Period: opts.Per, Burst: opts.Burst},
		prefix: opts.KeyPrefix,
	}, nil
}

// Allow counts one event for key. It returns 0 when the event may happen
// now, or, when the key is over its rate, how long until the next event
// would be allowed (such a refused event is not counted). It returns an
// error, and counts nothing, when Redis cannot be reached; what to do then
// is the caller's choice.
func (l *Limiter) Allow(ctx context.Context, key string) (time.Duration, error) {
	res, err := l.rl.Allow(ctx, l.prefix+key, l.limit)
	if err != nil {
		return 0, fmt.Errorf("ratelimit: allow %q: %w", key, err)
	}
	if res.Allowed > 0 {
		return 0, nil
	}
	// RetryAfter is positive when refused; guard against rounding to zero
	// so a refusal never reads as "allowed".
	return max(res.RetryAfter, time.Millisecond), nil
}

// String describes the limit, such as "10 req/s (burst 10)".
func (l *Limiter) String() string { return l.limit.String() }
