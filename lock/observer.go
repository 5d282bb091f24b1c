package lock

import (
	"sync/atomic"
	"time"
)

// Observer receives the lock's metrics events, for example to update
// Prometheus collectors. Methods are called synchronously from the goroutine
// that did the work (the caller's, or a watchdog timer's), so they must be
// cheap and must not block or call back into the lock. Embed [NopObserver] to
// implement only some of them.
type Observer interface {
	// Acquired is called when a lock is acquired. latency is the duration
	// of the winning attempt (one round to the nodes); wait is the total
	// time spent in Acquire or TryAcquire.
	Acquired(key string, latency, wait time.Duration)
	// AcquireFailed is called when Acquire or TryAcquire returns an error,
	// with its [Cause] and the total time spent.
	AcquireFailed(key string, cause Cause, wait time.Duration)
	// Renewed is called after each successful extension (watchdog or
	// [Lock.Extend]) with the time it took.
	Renewed(key string, latency time.Duration)
	// RenewFailed is called when an extension fails; the lock may still be
	// valid (the watchdog retries until the validity runs out). err matches
	// ErrNoQuorum or ErrNotHeld.
	RenewFailed(key string, err error)
	// Lost is called once when a held lock is given up as lost: its context
	// is cancelled with ErrLost.
	Lost(key string)
	// Released is called when [Lock.Release] succeeds, with the time the
	// lock was held.
	Released(key string, held time.Duration)
}

// NopObserver implements [Observer] with methods that do nothing. Embed it in
// an observer to implement only the events of interest.
type NopObserver struct{}

// Acquired does nothing.
func (NopObserver) Acquired(string, time.Duration, time.Duration) {}

// AcquireFailed does nothing.
func (NopObserver) AcquireFailed(string, Cause, time.Duration) {}

// Renewed does nothing.
func (NopObserver) Renewed(string, time.Duration) {}

// RenewFailed does nothing.
func (NopObserver) RenewFailed(string, error) {}

// Lost does nothing.
func (NopObserver) Lost(string) {}

// Released does nothing.
func (NopObserver) Released(string, time.Duration) {}

// Stats is a snapshot of a [Client]'s counters since it was created.
type Stats struct {
	Attempts      uint64 // acquisition rounds sent to the nodes
	Acquired      uint64 // locks acquired
	AcquireFailed uint64 // Acquire/TryAcquire calls that returned an error
	Busy          uint64 // of which the lock was held elsewhere (TryAcquire)
	NoQuorum      uint64 // of which too few nodes answered
	Renewed       uint64 // successful extensions
	RenewFailed   uint64 // failed extensions
	Lost          uint64 // locks given up as lost
	Released      uint64 // successful releases
	Held          int64  // locks currently held through this client
	Waiting       int64  // goroutines currently blocked in Acquire
}

type counters struct {
	attempts, acquired, acquireFailed, busy, noQuorum atomic.Uint64
	renewed, renewFailed, lost, released              atomic.Uint64
	held, waiting                                     atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Attempts:      c.attempts.Load(),
		Acquired:      c.acquired.Load(),
		AcquireFailed: c.acquireFailed.Load(),
		Busy:          c.busy.Load(),
		NoQuorum:      c.noQuorum.Load(),
		Renewed:       c.renewed.Load(),
		RenewFailed:   c.renewFailed.Load(),
		Lost:          c.lost.Load(),
		Released:      c.released.Load(),
		Held:          c.held.Load(),
		Waiting:       c.waiting.Load(),
	}
}
