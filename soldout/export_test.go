package soldout

import "time"

// SetMaxTracked sets how many products g keeps state for in each map.
func SetMaxTracked(g *Gate, n int) { g.maxTracked = n }

// Tracked returns how many products g keeps a cached answer and an epoch for.
func Tracked(g *Gate) (cache, epoch int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.cache), len(g.epoch)
}

// FreshFor is how long after a read of a flag began its "sold out" may
// still be given to a caller.
func FreshFor(g *Gate) time.Duration { return g.freshFor() }

// ReadTimeout bounds one shared read of a flag.
const ReadTimeout = readTimeout

// Opts returns the options g runs with, the defaults filled in.
func Opts(g *Gate) Options { return g.opts }
