// Package soldout is the sold-out fast path: a per-product flag in Redis
// that lets the API refuse orders for a sold-out product at once, without
// queueing them.
//
// The flag may lag behind a sell-out (a few orders still get queued and end
// sold_out), but it must never refuse an order while stock remains. Three
// rules give that:
//
//   - Workers set the flag only after committing stock 0, tagged with the
//     product's restock generation, and only if no newer restock has been
//     announced ([Gate.Mark], mark.lua).
//   - A restock first announces itself and clears the flag ([Gate.Reopen],
//     reopen.lua), then waits [Gate.Settle], and only then adds the stock in
//     PostgreSQL.
//   - An API process trusts a flag it read for at most [Options.CacheTTL],
//     which is less than Settle. So by the time restocked units exist, no API
//     process still believes a flag read before the restock was announced.
//
// If Redis is unreachable the gate answers "not sold out": the fast path
// fails open, and the workers still decide every order correctly.
package soldout

import (
	"context"
	_ "embed"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

//go:embed mark.lua
var markLua string

//go:embed reopen.lua
var reopenLua string

var (
	markScript   = redis.NewScript(markLua)
	reopenScript = redis.NewScript(reopenLua)
)

// Options configures a Gate. Zero fields take the defaults.
type Options struct {
	// KeyPrefix prefixes the Redis keys; default "flashsale:".
	KeyPrefix string
	// CacheTTL is how long an API process trusts a flag it read; default
	// 200ms. Settle is twice this plus 100ms.
	CacheTTL time.Duration
	// FlagTTL bounds a flag's life in Redis, a safety net should Redis and
	// PostgreSQL ever disagree (the next order past it re-marks); default 10m.
	FlagTTL time.Duration
}

// Gate reads and writes sold-out flags. It is safe for concurrent use.
type Gate struct {
	rdb   redis.UniversalClient
	opts  Options
	sf    singleflight.Group
	mu    sync.Mutex
	cache map[string]entry
}

type entry struct {
	soldOut bool
	fetched time.Time // taken before the read was sent
}

// New returns a Gate on rdb, which the caller owns.
func New(rdb redis.UniversalClient, opts Options) *Gate {
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "flashsale:"
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 200 * time.Millisecond
	}
	if opts.FlagTTL <= 0 {
		opts.FlagTTL = 10 * time.Minute
	}
	return &Gate{rdb: rdb, opts: opts, cache: map[string]entry{}}
}

// keys are the product's flag and restock counter. The {product} hash tag
// keeps both in one slot of a Redis Cluster, where the scripts that touch
// both would otherwise fail (CROSSSLOT).
func (g *Gate) keys(product string) []string {
	tag := "{" + product + "}"
	return []string{g.opts.KeyPrefix + "soldout:" + tag, g.opts.KeyPrefix + "restock:" + tag}
}

// SoldOut reports whether product is flagged sold out. It reads Redis at
// most once per CacheTTL per product and process. On a Redis error it
// returns false with the error: callers let the order through.
func (g *Gate) SoldOut(ctx context.Context, product string) (bool, error) {
	g.mu.Lock()
	e, ok := g.cache[product]
	g.mu.Unlock()
	if ok && time.Since(e.fetched) < g.opts.CacheTTL {
		return e.soldOut, nil
	}
	v, err, _ := g.sf.Do(product, func() (any, error) {
		fetched := time.Now()
		n, err := g.rdb.Exists(ctx, g.keys(product)[0]).Result()
		if err != nil {
			return false, fmt.Errorf("soldout: read flag of %q: %w", product, err)
		}
		g.mu.Lock()
		g.cache[product] = entry{soldOut: n == 1, fetched: fetched}
		g.mu.Unlock()
		return n == 1, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// Mark flags product sold out as of restock generation gen, the generation
// read in the same transaction that left its stock at 0. It does nothing
// (and returns false) when a newer restock has been announced.
func (g *Gate) Mark(ctx context.Context, product string, gen int64) (bool, error) {
	n, err := markScript.Run(ctx, g.rdb, g.keys(product), gen, g.opts.FlagTTL.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("soldout: mark %q: %w", product, err)
	}
	return n == 1, nil
}

// Reopen announces a restock of product and clears its flag. floor is the
// restock generation stored in PostgreSQL. It returns the new generation,
// which the restock must store with the added stock, and the caller must
// wait [Gate.Settle] between Reopen and committing the stock.
func (g *Gate) Reopen(ctx context.Context, product string, floor int64) (int64, error) {
	gen, err := reopenScript.Run(ctx, g.rdb, g.keys(product), floor).Int64()
	if err != nil {
		return 0, fmt.Errorf("soldout: reopen %q: %w", product, err)
	}
	g.mu.Lock()
	delete(g.cache, product)
	g.mu.Unlock()
	return gen, nil
}

// Settle is how long a restock waits after Reopen before adding stock: longer
// than any API process trusts a flag.
func (g *Gate) Settle() time.Duration { return 2*g.opts.CacheTTL + 100*time.Millisecond }
