package lock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

type lockState uint8

const (
	stateHeld lockState = iota
	stateReleased
	stateLost
	stateClosed
)

// Lock is an acquired lock. Its methods are safe for concurrent use. A Lock
// is renewed by a watchdog until [Lock.Release], loss, or [Client.Close];
// [Lock.Context] tells when it may no longer be held.
type Lock struct {
	c          *Client
	key        string
	ks         keyset
	value      string
	token      int64
	acquiredAt time.Time
	ctx        context.Context
	cancel     context.CancelCauseFunc

	mu         sync.Mutex
	state      lockState
	validUntil time.Time
	expiry     *time.Timer // fires at validUntil
	renew      *time.Timer // watchdog; nil when off
}

func newLock(c *Client, key string, ks keyset, value string, token int64, validUntil time.Time) *Lock {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Lock{
		c: c, key: key, ks: ks, value: value, token: token,
		acquiredAt: time.Now(), ctx: ctx, cancel: cancel, validUntil: validUntil,
	}
}

// start arms the validity timer and the watchdog.
func (l *Lock) start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != stateHeld {
		return
	}
	l.expiry = time.AfterFunc(time.Until(l.validUntil), l.expire)
	if iv := l.c.cfg.renewInterval; iv > 0 {
		l.renew = time.AfterFunc(iv, l.watchdog)
	}
}

// Key returns the key the lock was acquired for ("" for a nil Lock).
func (l *Lock) Key() string {
	if l == nil {
		return ""
	}
	return l.key
}

// Token returns the fencing token of this acquisition: strictly greater than
// the token of every earlier acquisition of the same key (see the package
// documentation for the exact guarantee). Pass it to the storage, which must
// reject writes carrying a token lower than one it has already seen. 0 for a
// nil Lock.
func (l *Lock) Token() int64 {
	if l == nil {
		return 0
	}
	return l.token
}

var cancelledCtx = func() context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(ErrNotHeld)
	return ctx
}()

// Context returns a context that is cancelled when the lock may no longer be
// held. Run the guarded work under it. [context.Cause] tells why: an error
// matching [ErrLost] (renewal failed until the validity ran out, or the nodes
// reported the key gone or taken over; also, joined with [ErrClosed], after
// [Client.Close]) or [ErrReleased]. The context does not derive from the
// context passed to Acquire. A nil Lock returns a cancelled context whose
// cause is [ErrNotHeld].
func (l *Lock) Context() context.Context {
	if l == nil {
		return cancelledCtx
	}
	return l.ctx
}

// Done is shorthand for l.Context().Done().
func (l *Lock) Done() <-chan struct{} {
	return l.Context().Done()
}

// ValidUntil returns the time until which the lock is known to be held, by
// this process's monotonic clock: the start of the last successful
// acquisition or extension plus TTL minus drift. The zero time for a nil Lock.
func (l *Lock) ValidUntil() time.Time {
	if l == nil {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.validUntil
}

// Extend resets the lock's TTL on the nodes now, as the watchdog does
// periodically. It returns [ErrNotHeld] (and cancels the lock's context with
// [ErrLost]) when the nodes report the key gone or owned by someone else, so
// that a majority is impossible; it never re-acquires an expired lock. It
// returns ErrNotHeld joined with the cause when the lock was already released
// or lost, and an error matching [ErrNoQuorum] (and ctx's error, if it ended)
// when too few nodes answered; the lock then stays valid until
// [Lock.ValidUntil].
func (l *Lock) Extend(ctx context.Context) error {
	if l == nil {
		return ErrNotHeld
	}
	if err := l.heldErr(); err != nil {
		return err
	}
	return l.extend(ctx)
}

// Release gives the lock up: it stops the watchdog, cancels the lock's
// context with [ErrReleased], deletes the key on the nodes where it still
// holds this lock's value, and wakes the waiters. It is attempted even when
// ctx is already done (each node call is bounded by NodeTimeout), so
// "defer l.Release(ctx)" is safe.
//
// It returns nil when a majority of nodes confirmed; [ErrNotHeld] when the
// lock was no longer held there (expired or taken over), or had been released
// or lost before (then joined with the cause, such as [ErrLost]: the guarded
// work may have run without the lock); an error matching [ErrNoQuorum] when
// too few nodes answered (the keys then expire within the TTL); a round in
// which no node answered is tried up to three times.
func (l *Lock) Release(ctx context.Context) error {
	prev, cause, err := l.beginRelease()
	if err != nil {
		return err
	}
	// A round in which no node answered at all (a busy or briefly
	// unreachable node) is tried again: a lock left behind blocks everyone
	// until its TTL runs out. A round with some answers is final, since a
	// second round could not tell its own deletions from a lost lock.
	rctx := context.WithoutCancel(ctx)
	t := l.c.releaseNodes(rctx, l.ks, l.value)
	for try := 1; try < releaseTries && t.ok == 0 && t.notHeld == 0; try++ {
		t = l.c.releaseNodes(rctx, l.ks, l.value)
	}
	return l.finishRelease(prev, cause, t)
}

// beginRelease moves the lock to the released state, stops its watchdog and
// cancels its context. It returns the state before and the context's cause
// before, or the error Release returns for a lock released before.
func (l *Lock) beginRelease() (lockState, error, error) {
	if l == nil {
		return 0, nil, ErrNotHeld
	}
	l.mu.Lock()
	prev := l.state
	if prev == stateReleased {
		l.mu.Unlock()
		return 0, nil, fmt.Errorf("%w: %w", ErrNotHeld, ErrReleased)
	}
	l.stopLocked(stateReleased)
	l.mu.Unlock()
	cause := context.Cause(l.ctx)
	l.cancel(ErrReleased)
	return prev, cause, nil
}

// finishRelease records what the nodes answered to the release (t) and
// returns Release's error.
func (l *Lock) finishRelease(prev lockState, cause error, t tally) error {
	l.c.unregister(l)
	l.c.hub.notify(l.ks.channel)
	if prev != stateHeld {
		return fmt.Errorf("%w: %w", ErrNotHeld, cause)
	}
	switch n, q := len(l.c.nodes), l.c.quorum; {
	case t.ok >= q:
		l.c.stats.released.Add(1)
		l.c.cfg.observer.Released(l.key, time.Since(l.acquiredAt))
		return nil
	case t.notHeld > n-q:
		return ErrNotHeld
	default:
		return fmt.Errorf("lock: release %q: %w: %d of %d nodes confirmed, %d needed: %v", l.key, ErrNoQuorum, t.ok, n, q, t.lastErr)
	}
}

// releaseTries bounds the release rounds of one Release.
const releaseTries = 3

// heldErr returns nil while the lock is held, or ErrNotHeld with the cause.
func (l *Lock) heldErr() error {
	l.mu.Lock()
	st := l.state
	l.mu.Unlock()
	if st == stateHeld {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrNotHeld, context.Cause(l.ctx))
}

// stopLocked moves a held lock to st and stops its timers. l.mu is held.
func (l *Lock) stopLocked(st lockState) {
	if l.state == stateHeld {
		if l.expiry != nil {
			l.expiry.Stop()
		}
		if l.renew != nil {
			l.renew.Stop()
		}
	}
	l.state = st
}

// abandon gives up a held lock without touching the nodes: lost or client
// closed. It reports whether the lock was held.
func (l *Lock) abandon(st lockState, cause error) bool {
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		return false
	}
	l.stopLocked(st)
	l.mu.Unlock()
	l.finishAbandon(st, cause)
	return true
}

func (l *Lock) finishAbandon(st lockState, cause error) {
	if st == stateLost {
		// Counted before the context is cancelled, so that whoever sees
		// Done also sees the metric.
		l.c.stats.lost.Add(1)
		l.c.cfg.observer.Lost(l.key)
	}
	l.cancel(cause)
	l.c.unregister(l)
	l.c.hub.notify(l.ks.channel)
	if st == stateLost {
		// A lost lock may still hold its value on some nodes (a minority
		// that kept it, or one where a late extension landed): remove it
		// there, so that others need not wait out its TTL. The release
		// script deletes only this lock's own value, and an extension
		// arriving after it finds nothing to extend.
		l.c.background(func() { l.c.releaseOn(context.Background(), l.ks, l.value, l.c.allNodes(), true) })
	}
}

// expire runs at validUntil: unless an extension moved it, the lock is lost.
func (l *Lock) expire() {
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		return
	}
	if d := time.Until(l.validUntil); d > 0 {
		l.expiry.Reset(d) // extended meanwhile; normally already re-armed
		l.mu.Unlock()
		return
	}
	l.stopLocked(stateLost)
	l.mu.Unlock()
	l.finishAbandon(stateLost, fmt.Errorf("%w: validity ran out without a successful renewal", ErrLost))
}

// watchdog runs every RenewInterval (RenewInterval/4 after a failure).
func (l *Lock) watchdog() {
	err := l.extend(l.ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != stateHeld {
		return
	}
	if err == nil {
		l.renew.Reset(l.c.cfg.renewInterval)
	} else {
		l.renew.Reset(l.c.cfg.renewRetry)
	}
}

// extend runs one extension round and applies its outcome.
func (l *Lock) extend(ctx context.Context) error {
	start := time.Now()
	t := l.c.extendNodes(ctx, l.ks, l.value)
	n, q := len(l.c.nodes), l.c.quorum
	obs := l.c.cfg.observer
	switch {
	case t.ok >= q:
		l.mu.Lock()
		if l.state != stateHeld {
			l.mu.Unlock()
			return fmt.Errorf("%w: %w", ErrNotHeld, context.Cause(l.ctx))
		}
		if v := start.Add(l.c.cfg.ttl - l.c.cfg.drift); v.After(l.validUntil) {
			l.validUntil = v
			l.expiry.Reset(time.Until(v))
		}
		l.mu.Unlock()
		l.c.stats.renewed.Add(1)
		obs.Renewed(l.key, time.Since(start))
		return nil
	case t.notHeld > n-q:
		err := fmt.Errorf("%w: key gone or owned by another on %d of %d nodes", ErrNotHeld, t.notHeld, n)
		l.c.stats.renewFailed.Add(1)
		obs.RenewFailed(l.key, err)
		l.abandon(stateLost, fmt.Errorf("%w: key gone or owned by another on %d of %d nodes", ErrLost, t.notHeld, n))
		return err
	default:
		var err error
		if cerr := ctx.Err(); cerr != nil {
			err = fmt.Errorf("lock: extend %q: %w: %w", l.key, ErrNoQuorum, cerr)
		} else {
			err = fmt.Errorf("lock: extend %q: %w: %d of %d nodes confirmed, %d needed: %v", l.key, ErrNoQuorum, t.ok, n, q, t.lastErr)
		}
		if l.heldErr() == nil {
			l.c.stats.renewFailed.Add(1)
			obs.RenewFailed(l.key, err)
		}
		return err
	}
}
