// Package inventory keeps products, stock and order outcomes in PostgreSQL.
//
// It is the system's source of truth. Its guarantees hold on their own,
// without the Redis lock the workers take:
//
//   - stock never goes below zero (a CHECK constraint and conditional
//     UPDATEs);
//   - an order id is decided exactly once: the stock decrement and the
//     order's outcome commit in one transaction, and a decided order is
//     never decided again ([Store.Apply] reports it as a replay);
//   - a buyer never holds more units of a limited product than its
//     per-user limit (a CHECK constraint on the purchases table);
//   - a writer whose lock fencing token is older than the last one that
//     wrote a product changes nothing ([ErrStaleFence]).
//
// The package does not log; it returns the documented errors below, with
// driver errors translated at its boundary.
package inventory

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrNotFound is returned when a product or an order does not exist.
	ErrNotFound = errors.New("inventory: not found")
	// ErrProductExists is returned by [Store.CreateProduct] for an id in use.
	ErrProductExists = errors.New("inventory: product exists")
	// ErrInvalid is returned for arguments the schema would refuse
	// (negative stock, empty id, non-positive quantity).
	ErrInvalid = errors.New("inventory: invalid argument")
	// ErrStaleFence is returned by [Store.Apply] when a product was already
	// written under a newer fencing token than the batch carries: the
	// caller's lock is no longer the latest, and nothing was written.
	// The error is a [*StaleFenceError].
	ErrStaleFence = errors.New("inventory: stale fencing token")
	// ErrRestockSuperseded is returned by [Store.Restock] when the product
	// already holds a restock generation at least as new as the one given:
	// a restock announced later committed first, and nothing was added.
	ErrRestockSuperseded = errors.New("inventory: restock superseded by a newer one")
	// ErrRestockReplayed is returned by [Store.Restock] when a restock with
	// the same idempotency key was already applied: nothing was added.
	ErrRestockReplayed = errors.New("inventory: restock already applied under this key")
	// ErrUnavailable wraps errors that are worth retrying: the database is
	// unreachable, restarting or refusing connections, or the transaction
	// was cancelled.
	ErrUnavailable = errors.New("inventory: database unavailable")
	// ErrSchemaOutdated is returned by [Store.CheckSchema] when the
	// database lacks migrations of this build, and by [Open] when the
	// database does not exist: run [Migrate] (`flashsale migrate`) first.
	ErrSchemaOutdated = errors.New("inventory: database schema outdated")
)

// StaleFenceError tells which product refused which token.
type StaleFenceError struct {
	ProductID string
	Token     int64 // the batch's token
	Fence     int64 // the newer token already stored
}

func (e *StaleFenceError) Error() string {
	return fmt.Sprintf("inventory: product %q: token %d is older than fence %d", e.ProductID, e.Token, e.Fence)
}

// Is makes errors.Is(err, ErrStaleFence) true.
func (e *StaleFenceError) Is(target error) bool { return target == ErrStaleFence }

// StaleFences returns every [*StaleFenceError] in err's tree: one per stale
// product of a batch [Store.Apply] refused.
func StaleFences(err error) []*StaleFenceError {
	switch e := err.(type) {
	case nil:
		return nil
	case *StaleFenceError:
		return []*StaleFenceError{e}
	case interface{ Unwrap() []error }:
		var out []*StaleFenceError
		for _, u := range e.Unwrap() {
			out = append(out, StaleFences(u)...)
		}
		return out
	default:
		return StaleFences(errors.Unwrap(err))
	}
}

// Status is an order's state as buyers see it.
type Status string

// Order statuses. The last four are final.
const (
	StatusQueued        Status = "queued"
	StatusProcessing    Status = "processing"
	StatusSucceeded     Status = "succeeded"
	StatusSoldOut       Status = "sold_out"
	StatusLimitExceeded Status = "limit_exceeded"
	StatusFailed        Status = "failed"
)

// Final reports whether s is an outcome that never changes.
func (s Status) Final() bool {
	switch s {
	case StatusSucceeded, StatusSoldOut, StatusLimitExceeded, StatusFailed:
		return true
	}
	return false
}

// Product is a row of the products table.
type Product struct {
	ID           string
	Name         string
	Stock        int64 // units left
	Sold         int64 // units in succeeded orders
	PerUserLimit int   // 0 = no limit
	Fence        int64 // newest fencing token that wrote the row
	RestockGen   int64 // generation of the last restock
	Orders       OrderCounts
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// OrderCounts counts a product's decided orders by outcome.
type OrderCounts struct {
	Succeeded     int64
	SoldOut       int64
	LimitExceeded int64
	Failed        int64
}

// NewProduct is the input of [Store.CreateProduct].
type NewProduct struct {
	ID           string
	Name         string
	Stock        int64
	PerUserLimit int
}

// Order is a decided order.
type Order struct {
	ID             string
	ProductID      string
	UserID         string
	Quantity       int
	IdempotencyKey string
	Status         Status
	Reason         string
	Fence          int64
	CreatedAt      time.Time // accepted by the API
	UpdatedAt      time.Time // outcome committed
}
