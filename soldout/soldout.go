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
//     PostgreSQL, storing its generation there, and only if no restock
//     announced after it has committed first; otherwise it announces itself
//     again (inventory.Store.Restock, sale.Service.Restock). A restock that
//     fails after announcing stores its generation without stock, or every
//     later mark would be refused. One that committed confirms itself
//     ([Gate.Confirm], confirm.lua): should Redis have lost the announcement
//     meanwhile, a mark from before the restock goes with it. Should Redis
//     go back later to a state from before the restock (a restart from an
//     older snapshot, a failover to a lagging replica), the old flag
//     returns with it; API processes check a flag they read against the
//     committed generation ([Options.Committed]) and remove a stale one,
//     within about CheckInterval (30s): the one window in which the fast
//     path may refuse orders while stock remains.
//   - An API process trusts a "sold out" it read for at most
//     [Options.CacheTTL], which is less than Settle, and gives one a read
//     brings back late to no caller past 50ms short of Settle after the read
//     began. So by the time restocked units exist, no API process still
//     believes a flag read before the restock was announced.
//
// Marks and reopens are also announced on a pub/sub channel: [Gate.Run]
// drops the process's cached answer for the product, so the fast path starts
// as soon as a product sells out, and a "not sold out" answer can be trusted
// longer ([Options.OpenTTL]): trusting it too long only queues orders that
// end sold_out. Safety never rests on the announcements, which may be lost.
//
// If Redis is unreachable the gate answers "not sold out": the fast path
// fails open, and the workers still decide every order correctly.
package soldout

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/flashsale/flashsale/internal/subscribe"
)

//go:embed mark.lua
var markLua string

//go:embed reopen.lua
var reopenLua string

//go:embed confirm.lua
var confirmLua string

var (
	markScript    = redis.NewScript(markLua)
	reopenScript  = redis.NewScript(reopenLua)
	confirmScript = redis.NewScript(confirmLua)
)

// Options configures a Gate. Zero fields take the defaults.
type Options struct {
	// KeyPrefix prefixes the Redis keys; default "flashsale:".
	KeyPrefix string
	// CacheTTL is how long an API process trusts a "sold out" it read;
	// default 1s. Settle, the wait of a restock, is twice this plus 100ms.
	CacheTTL time.Duration
	// OpenTTL is how long an API process trusts a "not sold out" it read
	// when no announcement says otherwise; default 5s.
	OpenTTL time.Duration
	// FlagTTL bounds a flag's life in Redis, a safety net should Redis and
	// PostgreSQL ever disagree (the next order past it re-marks); default 10m,
	// at least 1ms.
	FlagTTL time.Duration
	// Committed, when set, returns the restock generation the system of
	// record (PostgreSQL) holds for a product. A flag set at an older
	// generation is stale: Redis went back to a state from before a
	// restock that committed and confirmed (a restart from an older
	// snapshot, a failover to a lagging replica), and nothing else would
	// clear it before FlagTTL. A read of a set flag from Redis starts a
	// check of it in the background, which removes a stale flag
	// ([Gate.Confirm]; every process hears of it), when the product was
	// not checked for CheckInterval (counted from the gate's creation at
	// first), or not since [Gate.Run]'s subscription reconnected (a Redis
	// restart or failover usually drops it). A check that fails is tried
	// again at a read from Redis 5s later at the earliest (CheckInterval
	// later, when that is shorter). So after a
	// rollback the fast path may refuse a product's orders with stock in
	// PostgreSQL for up to about CheckInterval. Checking at every read cost spread
	// bursts 6% (`bench -only spread`, 3 pairs: 6,561-6,770 orders/s
	// against 7,063-7,213 without). The check is off the orders' path: a
	// slow or unreachable database delays the repair, and meanwhile the
	// flag is trusted, as it is without Committed.
	Committed func(ctx context.Context, product string) (int64, error)
	// CheckInterval is how often a product's flag is checked against
	// Committed at most, reconnects aside; default 30s: a rollback that no
	// reconnect revealed (another shard of a Redis Cluster, an old master
	// still reachable) refuses orders for at most about that long.
	CheckInterval time.Duration
}

// Gate reads and writes sold-out flags. It is safe for concurrent use.
type Gate struct {
	rdb   redis.UniversalClient
	opts  Options
	sf    singleflight.Group
	mu    sync.Mutex
	cache map[string]entry
	// epoch counts announcements per product: a read that raced one is
	// not cached.
	epoch map[string]uint64
	// resets counts the times every cached answer was forgotten, and any
	// read in flight: a re-subscription after a reconnect (announcements
	// may have been lost meanwhile), or epoch trimmed (see track).
	resets uint64
	// checking and checked limit the checks of flags against
	// Options.Committed to one at a time per product, and one per product
	// per CheckInterval or reconnect (see there).
	checking map[string]bool
	checked  map[string]checkMark
	created  time.Time
	// maxTracked bounds each of the maps above (see track).
	maxTracked int
}

// maxTracked is how many products a gate keeps state for in each of its
// maps: a long-running API process hears of every product announced and
// reads every product ordered, and would otherwise keep each for good.
const maxTracked = 100_000

// checkMark is a product's last successful check (the value of resets it
// saw, and when it started) and its last failed one.
type checkMark struct {
	resets uint64
	at     time.Time
	failed time.Time
}

// checkBackoff is the least time between a failed check of a product's flag
// and the next: a slow database is not asked about every flagged product at
// every read (once per CacheTTL).
const checkBackoff = 5 * time.Second

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
		opts.CacheTTL = time.Second
	}
	if opts.OpenTTL <= 0 {
		opts.OpenTTL = 5 * time.Second
	}
	if opts.FlagTTL <= 0 {
		opts.FlagTTL = 10 * time.Minute
	}
	// The mark sets it in whole milliseconds (PX), and PX 0 is an error.
	opts.FlagTTL = max(opts.FlagTTL, time.Millisecond)
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = 30 * time.Second
	}
	return &Gate{rdb: rdb, opts: opts, cache: map[string]entry{}, epoch: map[string]uint64{},
		checking: map[string]bool{}, checked: map[string]checkMark{}, created: time.Now(), maxTracked: maxTracked}
}

// forget drops the cached answer for product, and any read of it in flight,
// after a mark, reopen or confirm of it. Call it with g.mu held.
func (g *Gate) forget(product string) {
	delete(g.cache, product)
	if len(g.epoch) >= g.maxTracked {
		// A read in flight compares the epoch it began with: trimmed, an
		// epoch could come back to that value. Forgetting everything (as
		// after a reconnect) keeps such reads from being cached.
		clear(g.epoch)
		clear(g.cache)
		g.resets++
	}
	g.epoch[product]++
}

// track makes room in m for one more product: past maxTracked it is
// emptied. What it holds is only a saving (a cached answer, or when a
// product's flag was last checked), so the cost is a few reads.
func track[V any](g *Gate, m map[string]V) {
	if len(m) >= g.maxTracked {
		clear(m)
	}
}

// keys are the product's flag and restock counter. The {product} hash tag
// keeps both in one slot of a Redis Cluster, where the scripts that touch
// both would otherwise fail (CROSSSLOT).
func (g *Gate) keys(product string) []string {
	tag := "{" + product + "}"
	return []string{g.opts.KeyPrefix + "soldout:" + tag, g.opts.KeyPrefix + "restock:" + tag}
}

// SoldOut reports whether product is flagged sold out. It reads Redis at
// most once per CacheTTL (sold out) or OpenTTL (not sold out) per product
// and process, and again after an announcement. On a Redis error it returns
// false with the error: callers let the order through.
func (g *Gate) SoldOut(ctx context.Context, product string) (bool, error) {
	g.mu.Lock()
	e, ok := g.cache[product]
	g.mu.Unlock()
	if ok {
		ttl := g.opts.OpenTTL
		if e.soldOut {
			ttl = g.opts.CacheTTL
		}
		if time.Since(e.fetched) < ttl {
			return e.soldOut, nil
		}
	}
	// One read per product at a time, shared by the callers meanwhile: on
	// a context of its own, so that the first caller giving up does not
	// fail the others; each caller still stops waiting when its own ends.
	ch := g.sf.DoChan(product, func() (any, error) {
		g.mu.Lock()
		epoch, resets := g.epoch[product], g.resets
		g.mu.Unlock()
		fetched := time.Now()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
		defer cancel()
		sold, err := g.read(rctx, product)
		if err != nil {
			return false, err
		}
		g.mu.Lock()
		if g.epoch[product] == epoch && g.resets == resets {
			track(g, g.cache)
			g.cache[product] = entry{soldOut: sold, fetched: fetched}
		}
		g.mu.Unlock()
		return entry{soldOut: sold, fetched: fetched}, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return false, r.Err
		}
		e := r.Val.(entry)
		if e.soldOut && time.Since(e.fetched) >= g.freshFor() {
			// Read before a restock's Reopen, perhaps, and its stock may be
			// there by now: not known sold out.
			return false, nil
		}
		return e.soldOut, nil
	case <-ctx.Done():
		return false, fmt.Errorf("soldout: read flag of %q: %w", product, ctx.Err())
	}
}

// read reads product's flag from Redis; a set one is checked against
// Options.Committed in the background (see there).
func (g *Gate) read(ctx context.Context, product string) (bool, error) {
	v, err := g.rdb.Get(ctx, g.keys(product)[0]).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("soldout: read flag of %q: %w", product, err)
	}
	if gen, err := strconv.ParseInt(v, 10, 64); err == nil && g.opts.Committed != nil {
		g.check(product, gen)
	}
	return true, nil
}

// check removes product's flag, read at generation gen, if a newer restock
// committed, when a check is due; see Options.Committed. It returns at once.
func (g *Gate) check(product string, gen int64) {
	now := time.Now()
	g.mu.Lock()
	resets, last := g.resets, g.checked[product]
	since := last.at
	if since.IsZero() {
		since = g.created
	}
	retrying := now.Sub(last.failed) < min(checkBackoff, g.opts.CheckInterval)
	if g.checking[product] || retrying || (last.resets >= resets && now.Sub(since) < g.opts.CheckInterval) {
		g.mu.Unlock()
		return
	}
	g.checking[product] = true
	g.mu.Unlock()
	go func() {
		ok := false
		defer func() {
			g.mu.Lock()
			delete(g.checking, product)
			track(g, g.checked)
			if ok {
				g.checked[product] = checkMark{resets: resets, at: now}
			} else {
				m := g.checked[product]
				m.failed = time.Now()
				g.checked[product] = m
			}
			g.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		defer cancel()
		committed, err := g.opts.Committed(ctx, product)
		if err != nil {
			return // tried again at a read from Redis after checkBackoff
		}
		if committed > gen {
			if _, err := g.Confirm(ctx, product, committed); err != nil {
				return
			}
		}
		ok = true
	}()
}

// readTimeout bounds one shared read of a flag, on a client that honours
// context deadlines (ContextTimeoutEnabled); others bound it by their own
// read timeout. Either way a "sold out" it brings back later than freshFor
// after it began is not given to anyone.
const readTimeout = 2 * time.Second

// freshFor is how long after a read of a flag began its "sold out" may
// still be given to a caller: a margin short of Settle, so that a read
// from before a restock's Reopen refuses no order once the restock may
// have added its stock, however late its answer arrives (a slow reply, a
// client whose read timeout is longer than readTimeout, a loaded machine).
// With the default CacheTTL it is 2.05s, past readTimeout.
func (g *Gate) freshFor() time.Duration { return g.Settle() - 50*time.Millisecond }

// channel is the pub/sub channel of flag changes.
func (g *Gate) channel() string { return g.opts.KeyPrefix + "soldout:changes" }

// Run drops the cached answer for a product whenever a mark or a reopen of
// it is announced, until ctx ends; ready is called once subscribed. API
// processes run it; without it the gate is still correct, only slower to
// notice a sell-out. The subscription reconnects by itself.
func (g *Gate) Run(ctx context.Context, ready func()) error {
	err := subscribe.Run(ctx, g.rdb, g.channel(), ready, func(product string) {
		g.mu.Lock()
		g.forget(product)
		g.mu.Unlock()
	}, func() {
		// Announcements made while the subscription was down are lost:
		// forget every cached answer, and any read in flight.
		g.mu.Lock()
		clear(g.cache)
		g.resets++
		g.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("soldout: %w", err)
	}
	return nil
}

// Mark flags product sold out as of restock generation gen, the generation
// read in the same transaction that left its stock at 0. It does nothing
// (and returns false) when a newer restock has been announced.
func (g *Gate) Mark(ctx context.Context, product string, gen int64) (bool, error) {
	set, errs := g.MarkMany(ctx, []Sold{{Product: product, Gen: gen}})
	return set[0], errs[0]
}

// Sold names a product that sold out at restock generation Gen.
type Sold struct {
	Product string
	Gen     int64
}

// MarkMany is [Gate.Mark] for several products in one pipelined round trip:
// a worker's round can sell out dozens of products at once, and one round
// trip each held up its next round. BenchmarkMark, 24 products: 1.28-1.54
// ms one by one, 0.15-0.17 ms with MarkMany. set[i] and errs[i] are Mark's
// answers for sold[i].
func (g *Gate) MarkMany(ctx context.Context, sold []Sold) (set []bool, errs []error) {
	set, errs = make([]bool, len(sold)), make([]error, len(sold))
	if len(sold) == 0 {
		return set, errs
	}
	send := func() ([]*redis.Cmd, error) {
		pipe := g.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(sold))
		for i, s := range sold {
			cmds[i] = markScript.EvalSha(ctx, pipe, g.keys(s.Product), s.Gen, g.opts.FlagTTL.Milliseconds(), g.channel(), s.Product)
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := send()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") && markScript.Load(ctx, g.rdb).Err() == nil {
		// Redis restarted or flushed its scripts; a NOSCRIPT reply ran
		// nothing, so sending again marks each product once.
		cmds, _ = send()
	}
	for i, cmd := range cmds {
		n, err := cmd.Int()
		if err != nil {
			errs[i] = fmt.Errorf("soldout: mark %q: %w", sold[i].Product, err)
			continue
		}
		set[i] = n == 1
	}
	return set, errs
}

// Reopen announces a restock of product and clears its flag. floor is the
// restock generation stored in PostgreSQL. It returns the new generation,
// which the restock must store with the added stock, and the caller must
// wait [Gate.Settle] between Reopen and committing the stock.
func (g *Gate) Reopen(ctx context.Context, product string, floor int64) (int64, error) {
	gen, err := reopenScript.Run(ctx, g.rdb, g.keys(product), floor, g.channel(), product).Int64()
	if err != nil {
		return 0, fmt.Errorf("soldout: reopen %q: %w", product, err)
	}
	g.mu.Lock()
	g.forget(product)
	g.mu.Unlock()
	return gen, nil
}

// Confirm is told that a restock of product committed its stock at
// generation gen. Reopen's writes may have been lost since (Redis evicted or
// restarted without persistence, or failed over), and a worker's late mark
// from before the restock accepted: Confirm raises the announced generation
// to gen and removes a flag set at an older one. It reports whether it
// removed one. Best effort: the flag's own lifetime (FlagTTL) bounds what a
// failed Confirm leaves.
func (g *Gate) Confirm(ctx context.Context, product string, gen int64) (bool, error) {
	n, err := confirmScript.Run(ctx, g.rdb, g.keys(product), gen, g.channel(), product).Int()
	if err != nil {
		return false, fmt.Errorf("soldout: confirm restock of %q: %w", product, err)
	}
	if n == 1 {
		g.mu.Lock()
		g.forget(product)
		g.mu.Unlock()
	}
	return n == 1, nil
}

// Announced returns the newest restock generation announced for product (0
// if none), for a restock that cannot tell whether its Reopen ran.
func (g *Gate) Announced(ctx context.Context, product string) (int64, error) {
	n, err := g.rdb.Get(ctx, g.keys(product)[1]).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("soldout: read restock generation of %q: %w", product, err)
	}
	return n, nil
}

// Settle is how long a restock waits after Reopen before adding stock: longer
// than any API process trusts a flag, whether from its cache (CacheTTL) or
// from a read still in flight when Reopen ran (its "sold out" is given to no
// caller later than 50ms short of Settle after the read began).
func (g *Gate) Settle() time.Duration { return 2*g.opts.CacheTTL + 100*time.Millisecond }
