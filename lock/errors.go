package lock

import (
	"context"
	"errors"
)

var (
	// ErrNotObtained is in the chain of every error returned by
	// [Client.Acquire] and [Client.TryAcquire] when the lock was not
	// acquired, except [ErrInvalidKey] (an empty key), which is returned
	// alone. On its own (TryAcquire) it means another owner holds the lock.
	// It is joined with [ErrNoQuorum] when too few nodes answered, with
	// [ErrClosed] when the client is closed, and with the context's error
	// when the context ended first, so errors.Is matches each of them.
	ErrNotObtained = errors.New("lock: not obtained")

	// ErrNoQuorum means that too few nodes answered for a majority to be
	// possible (nodes down, paused, timing out or replying with errors), as
	// opposed to the lock being held by another owner. It is returned joined
	// with [ErrNotObtained] by acquisitions, and on its own (wrapped) by
	// [Lock.Extend], [Lock.Release] and [Client.AdvanceFence].
	ErrNoQuorum = errors.New("lock: no quorum of nodes answered")

	// ErrNotHeld is returned by [Lock.Extend] and [Lock.Release] when the lock
	// is no longer held: it expired, was deleted, was taken over, was already
	// released, or was given up as lost. Extend never re-acquires it.
	ErrNotHeld = errors.New("lock: not held")

	// ErrLost is the [context.Cause] of [Lock.Context] when the lock may have
	// been lost: the watchdog could not renew it before its validity ran out,
	// or the nodes reported the key gone or owned by someone else. Work
	// started under the lock must stop; only a fencing check in the storage
	// can reject writes that are already in flight.
	ErrLost = errors.New("lock: lost")

	// ErrReleased is the [context.Cause] of [Lock.Context] after
	// [Lock.Release].
	ErrReleased = errors.New("lock: released")

	// ErrClosed is returned by operations on a closed [Client]. When the
	// client is closed while a lock is held, the lock's context is cancelled
	// with a cause matching both ErrLost and ErrClosed: the lock is no longer
	// renewed and will expire.
	ErrClosed = errors.New("lock: client closed")

	// ErrInvalidKey is returned for an empty key.
	ErrInvalidKey = errors.New("lock: invalid key")
)

// Cause classifies why an acquisition failed, for metrics labels.
type Cause uint8

// Failure causes reported to [Observer.AcquireFailed] and by [CauseOf].
const (
	// CauseNone is the cause of a nil error.
	CauseNone Cause = iota
	// CauseBusy: another owner holds the lock.
	CauseBusy
	// CauseCanceled: the context was cancelled while waiting.
	CauseCanceled
	// CauseDeadline: the context's deadline passed while waiting.
	CauseDeadline
	// CauseNoQuorum: too few nodes answered (down, paused, erroring).
	CauseNoQuorum
	// CauseError: any other error, such as an invalid key.
	CauseError
	// CauseClosed: the client was closed.
	CauseClosed
)

// String returns the cause as a short label: "busy", "canceled", "deadline",
// "no_quorum", "error", "closed" (and "none").
func (c Cause) String() string {
	switch c {
	case CauseNone:
		return "none"
	case CauseBusy:
		return "busy"
	case CauseCanceled:
		return "canceled"
	case CauseDeadline:
		return "deadline"
	case CauseNoQuorum:
		return "no_quorum"
	case CauseClosed:
		return "closed"
	default:
		return "error"
	}
}

// CauseOf classifies an error returned by [Client.Acquire] or
// [Client.TryAcquire]. When several apply, the most telling wins: closed,
// then no_quorum (nodes unreachable is the root cause even if the context
// then ran out), then deadline, canceled, busy, error. Nodes count as
// unreachable when they failed or exceeded NodeTimeout on their own; an
// attempt that the caller's context cut short first says deadline (or
// canceled), unless an earlier attempt of the same Acquire met no quorum.
func CauseOf(err error) Cause {
	switch {
	case err == nil:
		return CauseNone
	case errors.Is(err, ErrClosed):
		return CauseClosed
	case errors.Is(err, ErrNoQuorum):
		return CauseNoQuorum
	case errors.Is(err, context.DeadlineExceeded):
		return CauseDeadline
	case errors.Is(err, context.Canceled):
		return CauseCanceled
	case errors.Is(err, ErrNotObtained):
		return CauseBusy
	default:
		return CauseError
	}
}
