package lock

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Batch operations: a caller that works on many keys at once (the flash-sale
// worker locks every product of a batch transaction) would otherwise pay one
// round trip per key and operation. With a single node, TryAcquireMany and
// ReleaseMany send all keys in one pipelined round trip; with several nodes
// they run the per-key operations in parallel. Each key keeps the exact
// semantics of TryAcquire and Release: its own value, token, watchdog and
// context.

// TryAcquireMany tries each key once, as [Client.TryAcquire] does. locks[i]
// is the lock of keys[i], or nil with errs[i] saying why (the errors of
// TryAcquire). The keys must be distinct.
func (c *Client) TryAcquireMany(ctx context.Context, keys []string) (locks []*Lock, errs []error) {
	locks, errs = make([]*Lock, len(keys)), make([]error, len(keys))
	if len(c.nodes) != 1 || len(keys) < 2 {
		var wg sync.WaitGroup
		for i, k := range keys {
			wg.Go(func() { locks[i], errs[i] = c.TryAcquire(ctx, k) })
		}
		wg.Wait()
		return locks, errs
	}
	begin := time.Now()
	type try struct {
		i     int
		ks    keyset
		value string
		cmd   *redis.Cmd
	}
	tries := make([]try, 0, len(keys))
	for i, k := range keys {
		if err := c.precheck(k); err != nil {
			errs[i] = c.failed(k, err, begin)
			continue
		}
		c.stats.attempts.Add(1)
		tries = append(tries, try{i: i, ks: c.keys(k), value: rand.Text()})
	}
	if len(tries) == 0 {
		return locks, errs
	}
	n := c.nodes[0]
	start := time.Now()
	send := func() error {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.nodeTimeout)
		defer cancel()
		pipe := n.rdb.Pipeline()
		for j := range tries {
			tries[j].cmd = acquireScript.EvalSha(cctx, pipe, tries[j].ks.both, tries[j].value, c.cfg.ttlMillis)
		}
		_, err := pipe.Exec(cctx)
		return err
	}
	err := send()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// The node restarted or flushed its scripts: load and send again
		// (a NOSCRIPT reply ran nothing).
		lctx, cancel := context.WithTimeout(ctx, c.cfg.nodeTimeout)
		lerr := acquireScript.Load(lctx, n.rdb).Err()
		cancel()
		if lerr == nil {
			err = send()
		}
	}
	latency := time.Since(start)
	validUntil := start.Add(c.cfg.ttl - c.cfg.drift)
	var orphans []try // acquired too late, or maybe acquired: give back
	for _, t := range tries {
		key := keys[t.i]
		v, cerr := t.cmd.Int64Slice()
		switch {
		case cerr == nil && len(v) == 2 && v[0] == 1 && time.Now().Before(validUntil):
			locks[t.i], errs[t.i] = c.acquired(newLock(c, key, t.ks, t.value, v[1], validUntil), latency, begin)
		case cerr == nil && len(v) == 2 && v[0] == 0:
			errs[t.i] = c.failed(key, ErrNotObtained, begin)
		default:
			orphans = append(orphans, t)
			reason := cerr
			if reason == nil {
				reason = fmt.Errorf("acquired after its validity ran out (%v)", time.Since(start))
			}
			if ctx.Err() != nil {
				errs[t.i] = c.failed(key, fmt.Errorf("%w: %w", ErrNotObtained, ctx.Err()), begin)
			} else {
				errs[t.i] = c.failed(key, fmt.Errorf("%w: %w: node 0: %v", ErrNotObtained, ErrNoQuorum, reason), begin)
			}
		}
	}
	_ = err // per-command errors above carry what went wrong
	for _, t := range orphans {
		c.releaseOn(context.WithoutCancel(ctx), t.ks, t.value, []int{n.idx})
	}
	return locks, errs
}

// ReleaseMany releases each lock, as [Lock.Release] does, and returns its
// error in errs[i]. The locks must belong to c.
func (c *Client) ReleaseMany(ctx context.Context, locks []*Lock) []error {
	errs := make([]error, len(locks))
	if len(c.nodes) != 1 || len(locks) < 2 {
		var wg sync.WaitGroup
		for i, l := range locks {
			wg.Go(func() { errs[i] = l.Release(ctx) })
		}
		wg.Wait()
		return errs
	}
	type rel struct {
		i     int
		l     *Lock
		prev  lockState
		cause error
		cmd   *redis.Cmd
	}
	rels := make([]rel, 0, len(locks))
	for i, l := range locks {
		prev, cause, err := l.beginRelease()
		if err != nil {
			errs[i] = err
			continue
		}
		rels = append(rels, rel{i: i, l: l, prev: prev, cause: cause})
	}
	if len(rels) == 0 {
		return errs
	}
	n := c.nodes[0]
	rctx := context.WithoutCancel(ctx)
	send := func() error {
		cctx, cancel := context.WithTimeout(rctx, c.cfg.nodeTimeout)
		defer cancel()
		pipe := n.rdb.Pipeline()
		for j := range rels {
			r := &rels[j]
			r.cmd = releaseScript.EvalSha(cctx, pipe, []string{r.l.ks.lock}, r.l.value, r.l.ks.channel)
		}
		_, err := pipe.Exec(cctx)
		return err
	}
	// As in Release, a round in which the node did not answer is tried
	// again; NOSCRIPT (nothing ran) loads the script first.
	for try := 0; try < releaseTries; try++ {
		err := send()
		if err == nil {
			break
		}
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			lctx, cancel := context.WithTimeout(rctx, c.cfg.nodeTimeout)
			_ = releaseScript.Load(lctx, n.rdb).Err()
			cancel()
			continue
		}
		answered := false
		for _, r := range rels {
			if _, cerr := r.cmd.Int64(); cerr == nil {
				answered = true
				break
			}
		}
		if answered {
			break
		}
	}
	for _, r := range rels {
		var t tally
		v, cerr := r.cmd.Int64()
		switch {
		case cerr != nil:
			t.failed, t.lastErr = 1, fmt.Errorf("node 0: %w", cerr)
		case v == 1:
			t.ok = 1
		default:
			t.notHeld = 1
		}
		errs[r.i] = r.l.finishRelease(r.prev, r.cause, t)
	}
	return errs
}
