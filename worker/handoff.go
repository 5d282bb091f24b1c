package worker

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// A process that holds a product's lock keeps it across rounds while it has
// more orders of that product, unless another process announced that it is
// waiting for the lock: then it hands the lock over after the round. This
// gives a single busy process one lock round trip per burst instead of two
// per round, and several processes a round-robin on a hot product, which
// keeps the order of service close to the queue's order.

//go:embed want.lua
var wantLua string

//go:embed wanted.lua
var wantedLua string

//go:embed ahead.lua
var aheadLua string

var (
	wantScript   = redis.NewScript(wantLua)
	wantedScript = redis.NewScript(wantedLua)
	aheadScript  = redis.NewScript(aheadLua)
)

// wantKey holds the live announcements for product's lock, and sinceKey
// when each process first made its current one (in one cluster slot).
func (w *Worker) wantKey(product string) string  { return w.prefix + "want:{" + product + "}" }
func (w *Worker) sinceKey(product string) string { return w.wantKey(product) + ":since" }

// ahead reports whether another process announced before this one that it
// waits for product's lock, and still does.
func (w *Worker) ahead(ctx context.Context, product string) (bool, error) {
	n, err := aheadScript.Run(ctx, w.rdb, []string{w.wantKey(product), w.sinceKey(product)}, w.id).Int()
	return n == 1, err
}

// want announces, until ctx ends, that this process waits for product's
// lock, then withdraws the announcement. Its place among the waiters is
// the time of its first announcement, kept here: a renewal that comes
// after the announcement expired restores it.
func (w *Worker) want(ctx context.Context, product string) {
	key := w.wantKey(product)
	t := time.NewTicker(wantTTL / 2)
	defer t.Stop()
	var first int64 // server ms; 0 until a call tells it
	for {
		// Errors only weaken fairness, never correctness: ignore them.
		since, err := wantScript.Run(ctx, w.rdb, []string{key, w.sinceKey(product)}, w.id, wantTTL.Milliseconds(), first).Int64()
		if err == nil && first == 0 {
			first = since
		}
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = w.rdb.Pipelined(cctx, func(p redis.Pipeliner) error {
				p.ZRem(cctx, key, w.id)
				p.ZRem(cctx, w.sinceKey(product), w.id)
				return nil
			})
			cancel()
			return
		case <-t.C:
		}
	}
}

// wanted returns the products among ps whose lock another process waits for.
func (w *Worker) wanted(ctx context.Context, ps []string) ([]string, error) {
	run := func() ([]*redis.Cmd, error) {
		pipe := w.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(ps))
		for i, p := range ps {
			cmds[i] = wantedScript.EvalSha(ctx, pipe, []string{w.wantKey(p)}, w.id)
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted or flushed its script cache: load and retry once.
		if err = wantedScript.Load(ctx, w.rdb).Err(); err == nil {
			cmds, err = run()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ask who waits: %w", err)
	}
	var out []string
	for i, c := range cmds {
		if n, _ := c.Int(); n == 1 {
			out = append(out, ps[i])
		}
	}
	return out, nil
}
