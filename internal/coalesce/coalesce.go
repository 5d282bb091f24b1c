// Package coalesce merges concurrent point lookups into batch lookups: one
// round trip (one SQL query with = ANY, one Redis pipeline) for the keys that
// many goroutines ask for at about the same time.
//
// It batches while busy, not by a time window: a lookup that finds no batch
// in flight starts one at once, and the lookups that arrive while it runs go
// together into the next. So a lone request waits for nothing, and under
// load the batches grow with the load, as the worker's group commit does.
// Dataloader libraries (graph-gophers/dataloader, vikstrous/dataloadgen)
// wait a fixed window (16ms by default) to gather a batch, which would add
// that much to every order when traffic is light; hence this small package.
package coalesce

import (
	"context"
	"sync"
	"time"
)

// Fetch looks up keys in one call (keys are distinct). Keys absent from the
// result were not found. An error fails every lookup of the batch.
type Fetch[K comparable, V any] func(ctx context.Context, keys []K) (map[K]V, error)

// Loader coalesces lookups into calls of its Fetch, one at a time.
type Loader[K comparable, V any] struct {
	fetch   Fetch[K, V]
	max     int
	timeout time.Duration

	mu      sync.Mutex
	queue   []*call[K, V]
	running bool
}

type call[K comparable, V any] struct {
	key  K
	done chan struct{}
	v    V
	ok   bool
	err  error
	// gone: the caller stopped waiting (its context ended); a batch not
	// yet taken leaves it out. Guarded by Loader.mu.
	gone bool
	// in: the batch that took the call, nil before. Guarded by Loader.mu.
	in *flight
}

// flight is a Fetch in flight and how many of its calls' callers still
// wait for it (guarded by Loader.mu): when none does, it is cancelled.
type flight struct {
	waiting int
	cancel  context.CancelFunc
}

// New returns a Loader. max bounds the keys of one Fetch (0: 256); timeout
// bounds each Fetch (0: 5s), which runs under its own context so that one
// caller giving up does not fail the others. A Fetch whose callers have all
// given up is cancelled.
func New[K comparable, V any](fetch Fetch[K, V], max int, timeout time.Duration) *Loader[K, V] {
	if max <= 0 {
		max = 256
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Loader[K, V]{fetch: fetch, max: max, timeout: timeout}
}

// Load looks key up with the next batch. ok is false when it was not found;
// err is the batch's error, or ctx's when ctx ends first.
func (l *Loader[K, V]) Load(ctx context.Context, key K) (v V, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return v, false, err
	}
	c := &call[K, V]{key: key, done: make(chan struct{})}
	l.mu.Lock()
	l.queue = append(l.queue, c)
	if !l.running {
		l.running = true
		go l.run()
	}
	l.mu.Unlock()
	select {
	case <-c.done:
		return c.v, c.ok, c.err
	case <-ctx.Done():
		// Not fetched for nobody: with a slow database, lookups whose
		// callers gave up would otherwise pile up ahead of live ones. Nor
		// fetched on for nobody: a batch every caller left (a hung store:
		// a lost request, a partition) held the lookups behind it until
		// its timeout, though the store might answer them at once.
		l.mu.Lock()
		c.gone = true
		if b := c.in; b != nil {
			if b.waiting--; b.waiting == 0 {
				b.cancel()
			}
		}
		l.mu.Unlock()
		return v, false, ctx.Err()
	}
}

// Pending is how many lookups are queued for a next batch, those whose
// callers gave up included (a batch drops them).
func (l *Loader[K, V]) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

// run fetches batches until the queue is empty.
func (l *Loader[K, V]) run() {
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.running = false
			l.mu.Unlock()
			return
		}
		// Up to max calls whose callers still wait, from the head.
		batch := make([]*call[K, V], 0, min(len(l.queue), l.max))
		taken := 0
		for _, c := range l.queue {
			if len(batch) == l.max {
				break
			}
			taken++
			if !c.gone {
				batch = append(batch, c)
			}
		}
		rest := copy(l.queue, l.queue[taken:])
		clear(l.queue[rest:]) // drop references to the calls taken
		l.queue = l.queue[:rest]
		if len(batch) == 0 {
			l.mu.Unlock()
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		b := &flight{waiting: len(batch), cancel: cancel}
		for _, c := range batch {
			c.in = b
		}
		l.mu.Unlock()

		keys := make([]K, 0, len(batch))
		seen := make(map[K]bool, len(batch))
		for _, c := range batch {
			if !seen[c.key] {
				seen[c.key] = true
				keys = append(keys, c.key)
			}
		}
		found, err := l.fetch(ctx, keys)
		cancel()
		for _, c := range batch {
			if err != nil {
				c.err = err
			} else {
				c.v, c.ok = found[c.key]
			}
			close(c.done)
		}
	}
}
