package loadtest

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Order statuses of the API (GET /v1/orders/{id}). The last four are final.
const (
	StatusQueued        = "queued"
	StatusProcessing    = "processing"
	StatusSucceeded     = "succeeded"
	StatusSoldOut       = "sold_out"
	StatusLimitExceeded = "limit_exceeded"
	StatusFailed        = "failed"
)

// API error codes the engine and the checker interpret.
const (
	ErrorCodeSoldOut             = "sold_out"
	ErrorCodeIdempotencyMismatch = "idempotency_mismatch"
	ErrorCodeProductExists       = "product_exists"
)

// IsFinal reports whether status is one of the final order statuses
// (succeeded, sold_out, limit_exceeded, failed).
func IsFinal(status string) bool {
	switch status {
	case StatusSucceeded, StatusSoldOut, StatusLimitExceeded, StatusFailed:
		return true
	}
	return false
}

// isKnownStatus reports whether status is one of the six API order statuses.
func isKnownStatus(status string) bool {
	return status == StatusQueued || status == StatusProcessing || IsFinal(status)
}

// Observations is everything a run collected that [Verify] judges. Run fills
// it; tests build it by hand to plant violations.
type Observations struct {
	// Products are the products the run created, with their state read back
	// after settling.
	Products []ProductObservation
	// Orders holds one entry per logical order (per Idempotency-Key).
	Orders []OrderObservation
	// States maps each order id that was ever answered in a 202 to the last
	// state polling saw for it. A missing entry means it was never polled
	// successfully.
	States map[string]OrderState
	// Rereads maps each order id that settled final to what one more GET
	// /v1/orders/{id}, in the verify phase, read for it: a final order must
	// not change. Nil when that re-read did not run.
	Rereads map[string]OrderState
	// ServerErrors are the 5xx answers of every endpoint other than
	// POST /v1/orders (whose answers are in OrderObservation.Responses).
	ServerErrors []ServerError
	// Incomplete, when not empty, says why the run did not finish (e.g. the
	// overall timeout passed).
	Incomplete string
}

// ProductObservation is one product of the run.
type ProductObservation struct {
	// ID is the product id.
	ID string
	// Stocked is the number of units the product was ever stocked with.
	Stocked int64
	// PerUserLimit is the limit the run asked for; 0 when it asked none.
	PerUserLimit int
	// Final is the product as read after settling; nil when it could not be
	// read (ReadError says why).
	Final *Product
	// ReadError says why Final is nil.
	ReadError string
}

// Product is the API's product representation.
type Product struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Stock        int64  `json:"stock"`
	Sold         int64  `json:"sold"`
	PerUserLimit int    `json:"per_user_limit"`
}

// OrderObservation is one logical order: one Idempotency-Key and one body,
// sent once or more (duplicates and retries).
type OrderObservation struct {
	Key       string
	UserID    string
	ProductID string
	Quantity  int
	// FirstSent is when the first send of this key started (zero when
	// unknown): every request of the order left after it.
	FirstSent time.Time
	// Responses holds every answer to POST /v1/orders with this key, in the
	// order they arrived (retries and duplicates included). Empty when the
	// order was never sent.
	Responses []SubmitResponse
}

// SubmitResponse is one answer to POST /v1/orders.
type SubmitResponse struct {
	// Status is the HTTP status code; 0 when there was no answer (connection
	// error or timeout).
	Status int
	// OrderID and OrderStatus are from a 202 body.
	OrderID     string
	OrderStatus string
	// ErrorCode is error.code of an error body.
	ErrorCode string
	// Err is the transport error, or why the body could not be read.
	Err string
	// At is when the answer (or the failure) was received; zero when
	// unknown.
	At time.Time
}

// OrderState is the last state polling saw for one order id.
type OrderState struct {
	OrderID   string
	ProductID string
	UserID    string
	Quantity  int
	Status    string
	Reason    string
	// UpdatedAt is the order's updated_at: for a final order, when the
	// transaction that decided it began (PostgreSQL's clock), zero if the
	// answer had none.
	UpdatedAt time.Time
	// NotFound is set when GET /v1/orders/{id} answered 404.
	NotFound bool
	// Err is set when polling gave up on the order, and says why.
	Err string
}

// ServerError is one 5xx answer outside POST /v1/orders.
type ServerError struct {
	Method string
	Path   string
	Status int
	// Code is error.code of the body, if any.
	Code string
}

// ViolationCode names a kind of invariant violation. The values are stable:
// scripts may match on them.
type ViolationCode string

// The invariants Verify checks.
const (
	// CodeNegativeStock: a product ended with stock < 0.
	CodeNegativeStock ViolationCode = "negative_stock"
	// CodeStockMismatch: stock + sold differs from the units stocked.
	CodeStockMismatch ViolationCode = "stock_mismatch"
	// CodeSoldMismatch: sold differs from the units of succeeded orders
	// (beyond what orders of unknown fate could explain).
	CodeSoldMismatch ViolationCode = "sold_mismatch"
	// CodeOversell: succeeded units (or sold) exceed the units stocked.
	CodeOversell ViolationCode = "oversell"
	// CodeUndersell: an order ended sold out (or was answered 409 sold_out)
	// while the product still had enough stock at the end; or it was
	// answered 409 sold_out, and orders first sent after that answer was
	// received then bought at least its quantity (stock only falls during a
	// run, so those units were there when it was refused); or it ended sold
	// out, and orders decided by later transactions (updated_at) bought at
	// least its quantity; or demand reached the stock of a single-unit
	// product and stock was left.
	CodeUndersell ViolationCode = "undersell"
	// CodeOverLimit: one buyer's succeeded units of a product exceed its
	// per-user limit; or sold exceeds the succeeded units by more than the
	// orders of unknown fate can hold with each buyer within the limit.
	CodeOverLimit ViolationCode = "over_limit"
	// CodeLimitMisapplied: an order ended limit_exceeded although its
	// buyer's succeeded units of the product plus its quantity stay within
	// the per-user limit, or the product has none.
	CodeLimitMisapplied ViolationCode = "limit_misapplied"
	// CodeDuplicateOrder: answers for one (user, Idempotency-Key) carried
	// different order ids.
	CodeDuplicateOrder ViolationCode = "duplicate_order"
	// CodeSharedOrderID: different Idempotency-Keys got the same order id.
	CodeSharedOrderID ViolationCode = "shared_order_id"
	// CodeIdempotencyConflict: one key was answered both 409 sold_out and 202
	// in a contradicting way, or 422 idempotency_mismatch although every send
	// of a key carries the same body.
	CodeIdempotencyConflict ViolationCode = "idempotency_conflict"
	// CodeOrderLost: an accepted order was unknown (404) to the API, or a
	// 202 (its whole body read) carried no order id. A 202 whose body could
	// not be read is no answer (see [CodeOrderUnanswered]).
	CodeOrderLost ViolationCode = "order_lost"
	// CodeOrderNotFinal: an accepted order never reached a final status.
	CodeOrderNotFinal ViolationCode = "order_not_final"
	// CodeOrderUnanswered: no send of a key, the re-send after settling
	// (to each API in turn) included, got any answer (an answer other than
	// a 5xx whose body could not be read counts as none): the buyer was
	// never told what became of the order. Not judged when the run did not finish
	// ([CodeIncomplete]), which may have cut the re-send.
	CodeOrderUnanswered ViolationCode = "order_unanswered"
	// CodeOrderMismatch: a polled final order's product, user or quantity
	// differs from what was sent, its order_id is not the one asked for,
	// or one of them is missing from the order view.
	CodeOrderMismatch ViolationCode = "order_mismatch"
	// CodeOrderChanged: an order that was seen final read differently
	// later: its status, product, user or quantity changed when it was read
	// again after settling, or a 202 replay for its key carried another
	// final status than polling saw.
	CodeOrderChanged ViolationCode = "order_changed"
	// CodeOrderUnverified: an order that settled final could not be read
	// again after settling (no answer, a 5xx or an unreadable body, after
	// retries).
	CodeOrderUnverified ViolationCode = "order_unverified"
	// CodeUnknownStatus: an order status outside the six known ones.
	CodeUnknownStatus ViolationCode = "unknown_status"
	// CodeServerError: a 5xx answer to a buyer's or the setup's request (orders,
	// products). GET /v1/queue is the operator's view: its failed samples
	// are counted in [QueueReport.Missed] instead.
	CodeServerError ViolationCode = "server_error"
	// CodeUnexpectedRefusal: POST /v1/orders answered a 4xx other than 409
	// sold_out, 422 idempotency_mismatch (its own violation) and 429 (a
	// rate limit). The load test sends well-formed orders for products it
	// created, so a 400 or 404 refused an order the API should have taken.
	CodeUnexpectedRefusal ViolationCode = "unexpected_refusal"
	// CodeUnexpectedAnswer: POST /v1/orders answered a success other than
	// 202, or a redirect: outside the contract.
	CodeUnexpectedAnswer ViolationCode = "unexpected_answer"
	// CodeProductUnverified: a product could not be read after settling.
	CodeProductUnverified ViolationCode = "product_unverified"
	// CodeIncomplete: the run did not finish (e.g. its timeout passed).
	CodeIncomplete ViolationCode = "incomplete"
	// CodeNothingDecided: orders were sent and none was accepted or
	// reached a final outcome (every one turned away with 429, say, or
	// never answered): the run checked no sale. Not judged when the run did
	// not finish
	// ([CodeIncomplete]). A run that decides some orders and turns the rest
	// away with 429 (a rate limit, or the lock-in-request baseline's busy
	// lock) is judged on the ones decided.
	CodeNothingDecided ViolationCode = "nothing_decided"
)

// Violation is one broken invariant, with enough detail to find it.
type Violation struct {
	Code ViolationCode `json:"code"`
	// ProductID, OrderID, Key and UserID locate the violation when they apply.
	ProductID string `json:"product_id,omitempty"`
	OrderID   string `json:"order_id,omitempty"`
	Key       string `json:"idempotency_key,omitempty"`
	UserID    string `json:"user_id,omitempty"`
	// Message says what was seen and what was expected.
	Message string `json:"message"`
}

// String returns "code: message".
func (v Violation) String() string { return string(v.Code) + ": " + v.Message }

// Verify checks obs against the sale's invariants and returns every
// violation found, sorted by code, product, key and order id; nil when there
// is none. It is a pure function of obs.
//
// Checked per product: stock ≥ 0; stock + sold = stocked; sold = units of
// succeeded orders (when some orders' fate is unknown — every send, the
// re-send after settling included, got no answer, a 5xx or a 202 without an
// order id — sold must lie
// between the known succeeded units and that plus the unknown units); succeeded units
// and sold ≤ stocked; no undersell (any order that ended sold_out, or was
// answered 409 sold_out, with quantity ≤ the final stock — stock only falls
// during a run —; any order answered 409 sold_out although orders first sent
// after that answer arrived then succeeded with at least its quantity; and,
// for single-unit products with every order's fate known,
// demand ≥ stocked implies final stock 0; demand counts orders that ended
// succeeded, sold_out or failed or were answered 409 sold_out); no buyer above
// the per-user limit (the configured one, else the one the API reports),
// counting that units of sold beyond the succeeded ones belong to orders of
// unknown fate, each buyer's holding at most their room under the limit.
// Checked per order: one order id per key and one key per order id; every
// accepted order final and known to the API; polled final orders carry the
// product, user and quantity that were sent; a final order reads the same
// when read again after settling, and a 202 replay's final status is the
// polled one; statuses from the known set; no 5xx anywhere; every key
// answered at least once (unless the run did not finish). And a run that
// finished accepted or decided some order it sent (not every one turned
// away).
func Verify(obs Observations) []Violation {
	return analyze(obs).violations
}

// fateUnknown reports whether the server may have created order o without
// the run learning its id: no 202 carried an order id, no 409 sold_out
// decided it, and some send got no answer, a 5xx or a 202 without an order
// id. Run re-sends each such
// key once after settling, so only the keys still unknown after that re-send
// widen the range Verify accepts for sold.
func fateUnknown(o OrderObservation) bool {
	unknown := false
	for _, r := range o.Responses {
		switch {
		case r.Status == http.StatusAccepted && r.OrderID != "":
			return false
		case r.Status == http.StatusConflict && r.ErrorCode == ErrorCodeSoldOut:
			return false
		case r.Status == 0 || r.Status >= 500 || r.Status == http.StatusAccepted: // a 202 without an order id
			unknown = true
		}
	}
	return unknown
}

// unanswered reports whether o was sent and no send got an answer (each a
// connection error or a timeout). A 5xx is an answer, and a violation of
// its own.
func unanswered(o OrderObservation) bool {
	for _, r := range o.Responses {
		if r.Status != 0 {
			return false
		}
	}
	return len(o.Responses) > 0
}

// outcome is the fate of one logical order.
type outcome int

const (
	outcomeUnsent outcome = iota
	outcomeRejected
	outcomeFastPath
	outcomeSucceeded
	outcomeSoldOut
	outcomeLimitExceeded
	outcomeFailed
	outcomeUnsettled
)

// productTally is what the orders say about one product.
type productTally struct {
	obs            ProductObservation
	orders         int
	succeededUnits int64
	uncertainUnits int64 // units of orders whose fate is unknown
	demandUnits    int64
	multiUnit      bool
	outcomes       Outcomes
}

// analysis is Verify's work, shared with the report.
type analysis struct {
	outcomes   Outcomes
	products   []*productTally
	violations []Violation
}

func analyze(obs Observations) *analysis {
	a := &analysis{}
	add := func(v Violation) { a.violations = append(a.violations, v) }

	byID := make(map[string]*productTally, len(obs.Products))
	for _, p := range obs.Products {
		t := &productTally{obs: p}
		a.products = append(a.products, t)
		byID[p.ID] = t
	}
	tally := func(id string) *productTally {
		t, ok := byID[id]
		if !ok { // an order for a product the run did not create
			t = &productTally{obs: ProductObservation{ID: id, ReadError: "not created by this run"}}
			a.products = append(a.products, t)
			byID[id] = t
		}
		return t
	}

	// Which key first got each order id, and every key that got it.
	type idOwner struct {
		order int
		keys  []string
	}
	owners := map[string]*idOwner{}
	var idOrder []string

	// For the 409 check against later sales: per product, the succeeded
	// orders (by first send) and the refused ones not already found
	// undersold.
	type refusal struct {
		order int
		at    time.Time // when the first 409 sold_out answer arrived
	}
	sales := map[string]*salesTimeline{}
	refusals := map[string][]refusal{}
	// For the same check of orders a worker decided sold out: per product,
	// when each succeeded and sold-out order was decided.
	type decision struct {
		id    string
		at    time.Time
		units int64
	}
	decidedSales := map[string]*salesTimeline{} // by decision time
	decidedSoldOut := map[string][]decision{}

	// For the per-user checks: a buyer's succeeded units of a product, the
	// units of their orders of unknown fate, and the orders refused
	// limit_exceeded.
	type userProduct struct{ user, product string }
	perUser := map[userProduct]int64{}
	uncertainPerUser := map[userProduct]int64{}
	type limitRefusal struct {
		up       userProduct
		id, key  string
		quantity int64
	}
	var limitRefusals []limitRefusal

	for i, o := range obs.Orders {
		t := tally(o.ProductID)
		t.orders++
		if o.Quantity > 1 {
			t.multiUnit = true
		}
		var ids []string
		accepted, fastPath := false, false
		conflictReported := false
		for n, r := range o.Responses {
			switch {
			case r.Status == http.StatusAccepted:
				accepted = true
				if r.OrderID == "" {
					why := ""
					if r.Err != "" {
						why = " (" + r.Err + ")"
					}
					add(Violation{Code: CodeOrderLost, ProductID: o.ProductID, Key: o.Key, UserID: o.UserID,
						Message: fmt.Sprintf("key %s send %d: 202 without an order_id%s: the buyer cannot find the order", o.Key, n+1, why)})
					continue
				}
				if r.OrderStatus != "" && !isKnownStatus(r.OrderStatus) {
					add(Violation{Code: CodeUnknownStatus, ProductID: o.ProductID, OrderID: r.OrderID, Key: o.Key,
						Message: fmt.Sprintf("order %s: 202 with status %q", r.OrderID, r.OrderStatus)})
				}
				if !slices.Contains(ids, r.OrderID) {
					ids = append(ids, r.OrderID)
				}
				ow, ok := owners[r.OrderID]
				if !ok {
					ow = &idOwner{order: i}
					owners[r.OrderID] = ow
					idOrder = append(idOrder, r.OrderID)
				}
				if !slices.Contains(ow.keys, o.Key) {
					ow.keys = append(ow.keys, o.Key)
				}
			case r.Status == http.StatusConflict && r.ErrorCode == ErrorCodeSoldOut:
				fastPath = true
				if accepted && !conflictReported {
					conflictReported = true
					add(Violation{Code: CodeIdempotencyConflict, ProductID: o.ProductID, Key: o.Key, UserID: o.UserID,
						Message: fmt.Sprintf("key %s: send %d answered 409 sold_out after an earlier send was accepted as order %s (want 202 with the same order_id)", o.Key, n+1, ids[0])})
				}
			case r.Status == http.StatusUnprocessableEntity && r.ErrorCode == ErrorCodeIdempotencyMismatch:
				add(Violation{Code: CodeIdempotencyConflict, ProductID: o.ProductID, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("key %s: send %d answered 422 idempotency_mismatch although every send carried the same body", o.Key, n+1)})
			case r.Status == 0:
				// No answer: see fateUnknown.
			case r.Status >= 500:
				add(Violation{Code: CodeServerError, ProductID: o.ProductID, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("POST /v1/orders key %s send %d: %d %s", o.Key, n+1, r.Status, r.ErrorCode)})
			case r.Status >= 400 && r.Status != http.StatusTooManyRequests:
				add(Violation{Code: CodeUnexpectedRefusal, ProductID: o.ProductID, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("POST /v1/orders key %s send %d: %d %s (a well-formed order for a product of the run)", o.Key, n+1, r.Status, r.ErrorCode)})
			case r.Status < 400:
				// A success other than 202 (or a redirect): outside the
				// contract, and its order, if any, was never followed.
				add(Violation{Code: CodeUnexpectedAnswer, ProductID: o.ProductID, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("POST /v1/orders key %s send %d: %d (the API answers an order 202, 409, 422, 429 or an error)", o.Key, n+1, r.Status)})
			}
		}
		if obs.Incomplete == "" && unanswered(o) {
			add(Violation{Code: CodeOrderUnanswered, ProductID: o.ProductID, Key: o.Key, UserID: o.UserID,
				Message: fmt.Sprintf("key %s: none of its %d sends, the re-send after settling included, was answered (last: %s)", o.Key, len(o.Responses), o.Responses[len(o.Responses)-1].Err)})
		}
		// A 202 replay that carries a final status must carry the one
		// polling saw.
		replayReported := map[string]bool{}
		for _, r := range o.Responses {
			st := obs.States[r.OrderID]
			if r.Status != http.StatusAccepted || r.OrderID == "" || replayReported[r.OrderID] ||
				!IsFinal(r.OrderStatus) || !IsFinal(st.Status) || r.OrderStatus == st.Status {
				continue
			}
			replayReported[r.OrderID] = true
			add(Violation{Code: CodeOrderChanged, ProductID: o.ProductID, OrderID: r.OrderID, Key: o.Key, UserID: o.UserID,
				Message: fmt.Sprintf("order %s (key %s): a 202 replay said %s, but polling saw it final as %s", r.OrderID, o.Key, r.OrderStatus, st.Status)})
		}
		if len(ids) > 1 {
			add(Violation{Code: CodeDuplicateOrder, ProductID: o.ProductID, Key: o.Key, UserID: o.UserID,
				Message: fmt.Sprintf("key %s of user %s got %d order ids: %s (want one)", o.Key, o.UserID, len(ids), strings.Join(ids, ", "))})
		}

		// The logical outcome.
		var out outcome
		switch {
		case len(o.Responses) == 0:
			out = outcomeUnsent
		case len(ids) > 0:
			st, ok := obs.States[ids[0]]
			switch {
			case !ok || st.NotFound || !IsFinal(st.Status):
				out = outcomeUnsettled
			case st.Status == StatusSucceeded:
				out = outcomeSucceeded
			case st.Status == StatusSoldOut:
				out = outcomeSoldOut
			case st.Status == StatusLimitExceeded:
				out = outcomeLimitExceeded
			default:
				out = outcomeFailed
			}
		case fastPath:
			out = outcomeFastPath
		default:
			out = outcomeRejected
		}
		a.outcomes.add(out)
		t.outcomes.add(out)
		switch out {
		case outcomeSucceeded, outcomeSoldOut, outcomeFastPath, outcomeFailed:
			t.demandUnits += int64(o.Quantity)
		}
		if fateUnknown(o) {
			// The server may have created it without us learning the id.
			t.uncertainUnits += int64(o.Quantity)
			uncertainPerUser[userProduct{o.UserID, o.ProductID}] += int64(o.Quantity)
		}

		// A 409 sold_out while stock remained: stock only falls during a
		// run, so final stock ≥ quantity means stock was there at the time.
		if fastPath && t.obs.Final != nil && int64(o.Quantity) <= t.obs.Final.Stock {
			add(Violation{Code: CodeUndersell, ProductID: o.ProductID, Key: o.Key, UserID: o.UserID,
				Message: fmt.Sprintf("key %s (quantity %d) was answered 409 sold_out but product %s still had %d units at the end", o.Key, o.Quantity, o.ProductID, t.obs.Final.Stock)})
		} else if fastPath {
			for _, r := range o.Responses {
				if r.Status == http.StatusConflict && r.ErrorCode == ErrorCodeSoldOut && !r.At.IsZero() {
					refusals[o.ProductID] = append(refusals[o.ProductID], refusal{order: i, at: r.At})
					break
				}
			}
		}
		if out == outcomeSucceeded && !o.FirstSent.IsZero() {
			timelineOf(sales, o.ProductID).add(o.FirstSent, int64(o.Quantity))
		}
		// 409 sold_out first, then accepted and sold on a later send.
		if fastPath && len(ids) > 0 && !conflictReported && obs.States[ids[0]].Status == StatusSucceeded {
			add(Violation{Code: CodeIdempotencyConflict, ProductID: o.ProductID, OrderID: ids[0], Key: o.Key, UserID: o.UserID,
				Message: fmt.Sprintf("key %s was answered 409 sold_out and also accepted as order %s, which succeeded (one request, two final outcomes)", o.Key, ids[0])})
		}
	}

	// A 409 sold_out answered while stock remained, sold later: orders first
	// sent after the answer arrived were decided after it, and stock only
	// falls, so the units they bought were there when it was refused.
	for pid, rs := range refusals {
		ss := timelineOf(sales, pid)
		for _, rf := range rs {
			o := obs.Orders[rf.order]
			if units := ss.unitsAfter(rf.at); units >= int64(o.Quantity) {
				add(Violation{Code: CodeUndersell, ProductID: pid, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("key %s (quantity %d) was answered 409 sold_out, but orders first sent after that answer then bought %d units of product %s (stock only falls: they were there)", o.Key, o.Quantity, units, pid)})
			}
		}
	}

	// Per order id: the server's view of every accepted order.
	for _, id := range idOrder {
		ow := owners[id]
		o := obs.Orders[ow.order]
		t := tally(o.ProductID)
		if len(ow.keys) > 1 {
			add(Violation{Code: CodeSharedOrderID, ProductID: o.ProductID, OrderID: id,
				Message: fmt.Sprintf("order id %s was returned for %d different keys: %s", id, len(ow.keys), strings.Join(ow.keys, ", "))})
		}
		st, ok := obs.States[id]
		q := int64(o.Quantity)
		switch {
		case !ok:
			t.uncertainUnits += q
			uncertainPerUser[userProduct{o.UserID, o.ProductID}] += q
			add(Violation{Code: CodeOrderNotFinal, ProductID: o.ProductID, OrderID: id, Key: o.Key, UserID: o.UserID,
				Message: fmt.Sprintf("order %s (key %s) was accepted but never polled successfully", id, o.Key)})
			continue
		case st.NotFound:
			t.uncertainUnits += q
			uncertainPerUser[userProduct{o.UserID, o.ProductID}] += q
			add(Violation{Code: CodeOrderLost, ProductID: o.ProductID, OrderID: id, Key: o.Key, UserID: o.UserID,
				Message: fmt.Sprintf("order %s (key %s) was accepted with 202 but GET /v1/orders/%s answers 404", id, o.Key, id)})
			continue
		case st.Status != "" && !isKnownStatus(st.Status): // none: polling gave up (below)
			t.uncertainUnits += q
			uncertainPerUser[userProduct{o.UserID, o.ProductID}] += q
			add(Violation{Code: CodeUnknownStatus, ProductID: o.ProductID, OrderID: id, Key: o.Key,
				Message: fmt.Sprintf("order %s has status %q, not one of queued, processing, succeeded, sold_out, limit_exceeded, failed", id, st.Status)})
			continue
		case !IsFinal(st.Status):
			t.uncertainUnits += q
			uncertainPerUser[userProduct{o.UserID, o.ProductID}] += q
			msg := fmt.Sprintf("order %s (key %s) was accepted but its last seen status is %s", id, o.Key, st.Status)
			if st.Err != "" {
				msg += " (" + st.Err + ")"
			}
			add(Violation{Code: CodeOrderNotFinal, ProductID: o.ProductID, OrderID: id, Key: o.Key, UserID: o.UserID, Message: msg})
			continue
		}
		// A final order view must carry what was ordered: a missing field
		// (empty, or quantity 0) is a mismatch, not a pass.
		if st.OrderID != id || st.ProductID != o.ProductID || st.UserID != o.UserID || st.Quantity != o.Quantity {
			add(Violation{Code: CodeOrderMismatch, ProductID: o.ProductID, OrderID: id, Key: o.Key, UserID: o.UserID,
				Message: fmt.Sprintf("order %s reads order_id %q product %q user %q quantity %d, but was sent as product %q user %q quantity %d",
					id, st.OrderID, st.ProductID, st.UserID, st.Quantity, o.ProductID, o.UserID, o.Quantity)})
		}
		if obs.Rereads != nil {
			rr, ok := obs.Rereads[id]
			switch {
			case !ok || rr.Err != "":
				why := "it was not read again"
				if ok {
					why = rr.Err
				}
				add(Violation{Code: CodeOrderUnverified, ProductID: o.ProductID, OrderID: id, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("order %s (key %s) settled %s but could not be read again after settling: %s", id, o.Key, st.Status, why)})
			case rr.NotFound:
				add(Violation{Code: CodeOrderLost, ProductID: o.ProductID, OrderID: id, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("order %s (key %s) settled %s, then GET /v1/orders/%s answered 404 after settling", id, o.Key, st.Status, id)})
			case rr.Status != st.Status || rr.OrderID != st.OrderID || rr.ProductID != st.ProductID || rr.UserID != st.UserID || rr.Quantity != st.Quantity:
				add(Violation{Code: CodeOrderChanged, ProductID: o.ProductID, OrderID: id, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("order %s (key %s) settled %s (product %q user %q quantity %d) but read %s (product %q user %q quantity %d) after settling (a final order must not change)",
						id, o.Key, st.Status, st.ProductID, st.UserID, st.Quantity, rr.Status, rr.ProductID, rr.UserID, rr.Quantity)})
			}
		}
		switch st.Status {
		case StatusSucceeded:
			t.succeededUnits += q
			perUser[userProduct{o.UserID, o.ProductID}] += q
		case StatusLimitExceeded:
			limitRefusals = append(limitRefusals, limitRefusal{userProduct{o.UserID, o.ProductID}, id, o.Key, q})
		case StatusSoldOut:
			if t.obs.Final != nil && q <= t.obs.Final.Stock {
				add(Violation{Code: CodeUndersell, ProductID: o.ProductID, OrderID: id, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("order %s (quantity %d) ended sold_out but product %s still had %d units at the end", id, q, o.ProductID, t.obs.Final.Stock)})
			} else if !st.UpdatedAt.IsZero() {
				decidedSoldOut[o.ProductID] = append(decidedSoldOut[o.ProductID], decision{id, st.UpdatedAt, q})
			}
		}
		if st.Status == StatusSucceeded && !st.UpdatedAt.IsZero() {
			timelineOf(decidedSales, o.ProductID).add(st.UpdatedAt, q)
		}
	}

	// An order decided sold out while stock remained: the transactions of
	// one product run one after another (under its lock), each with a later
	// start time, and stock only falls, so what orders decided by later
	// transactions bought was there when it was decided. (Orders of one
	// transaction share its time: within it, an order may be refused for a
	// quantity a later, smaller one fits.)
	for pid, sos := range decidedSoldOut {
		ss := timelineOf(decidedSales, pid)
		for _, so := range sos {
			if units := ss.unitsAfter(so.at); units >= so.units {
				o := obs.Orders[owners[so.id].order]
				add(Violation{Code: CodeUndersell, ProductID: pid, OrderID: so.id, Key: o.Key, UserID: o.UserID,
					Message: fmt.Sprintf("order %s (quantity %d) was decided sold_out at %s, but orders decided after it bought %d units of product %s (stock only falls: they were there)",
						so.id, so.units, so.at.Format(time.RFC3339Nano), units, pid)})
			}
		}
	}

	// Per product.
	for _, t := range a.products {
		p, f := t.obs, t.obs.Final
		if t.succeededUnits > p.Stocked || (f != nil && f.Sold > p.Stocked) {
			sold := "unknown"
			if f != nil {
				sold = fmt.Sprint(f.Sold)
			}
			add(Violation{Code: CodeOversell, ProductID: p.ID,
				Message: fmt.Sprintf("product %s: succeeded orders hold %d units and sold is %s, but only %d were stocked", p.ID, t.succeededUnits, sold, p.Stocked)})
		}
		if f == nil {
			add(Violation{Code: CodeProductUnverified, ProductID: p.ID,
				Message: fmt.Sprintf("product %s could not be read after settling: %s", p.ID, p.ReadError)})
		} else {
			if f.Stock < 0 {
				add(Violation{Code: CodeNegativeStock, ProductID: p.ID,
					Message: fmt.Sprintf("product %s ended with stock %d (want ≥ 0)", p.ID, f.Stock)})
			}
			if f.Stock+f.Sold != p.Stocked {
				add(Violation{Code: CodeStockMismatch, ProductID: p.ID,
					Message: fmt.Sprintf("product %s: stock %d + sold %d = %d, want %d stocked", p.ID, f.Stock, f.Sold, f.Stock+f.Sold, p.Stocked)})
			}
			if f.Sold < t.succeededUnits || f.Sold > t.succeededUnits+t.uncertainUnits {
				want := fmt.Sprint(t.succeededUnits)
				if t.uncertainUnits > 0 {
					want = fmt.Sprintf("%d..%d (%d units of orders of unknown fate)", t.succeededUnits, t.succeededUnits+t.uncertainUnits, t.uncertainUnits)
				}
				add(Violation{Code: CodeSoldMismatch, ProductID: p.ID,
					Message: fmt.Sprintf("product %s: sold %d, but succeeded orders hold %d units (want sold %s)", p.ID, f.Sold, t.succeededUnits, want)})
			}
			if !t.multiUnit && t.uncertainUnits == 0 && t.demandUnits >= p.Stocked && f.Stock > 0 {
				add(Violation{Code: CodeUndersell, ProductID: p.ID,
					Message: fmt.Sprintf("product %s: demand of %d units ≥ %d stocked, but %d units were left (succeeded %d, sold_out %d, 409 sold_out %d, failed %d orders)",
						p.ID, t.demandUnits, p.Stocked, f.Stock, t.outcomes.Succeeded, t.outcomes.SoldOut, t.outcomes.SoldOutFastPath, t.outcomes.Failed)})
			}
		}
	}

	// Per (buyer, product).
	limits := make(map[string]int, len(a.products))
	for _, t := range a.products {
		l := t.obs.PerUserLimit
		if l == 0 && t.obs.Final != nil {
			l = t.obs.Final.PerUserLimit
		}
		limits[t.obs.ID] = l
	}
	for up, units := range perUser {
		if l := limits[up.product]; l > 0 && units > int64(l) {
			add(Violation{Code: CodeOverLimit, ProductID: up.product, UserID: up.user,
				Message: fmt.Sprintf("user %s holds %d succeeded units of product %s, above its per-user limit %d", up.user, units, up.product, l)})
		}
	}
	// The units sold beyond the known succeeded ones are those of orders of
	// unknown fate, and within the limit a buyer's such orders can hold at
	// most the limit less the buyer's succeeded units. When sold needs more
	// than every buyer's room, some buyer is above the limit, although no
	// succeeded order shows it (sold beyond what the unknown units can
	// explain is a sold_mismatch).
	room := map[string]int64{}
	roomUsers := map[string][]string{}
	for up, units := range uncertainPerUser {
		if l := int64(limits[up.product]); l > 0 && units > 0 {
			room[up.product] += min(units, max(0, l-perUser[up]))
			roomUsers[up.product] = append(roomUsers[up.product], up.user)
		}
	}
	for _, t := range a.products {
		l, f := limits[t.obs.ID], t.obs.Final
		if l <= 0 || f == nil {
			continue
		}
		extra := f.Sold - t.succeededUnits
		if extra <= 0 || extra > t.uncertainUnits || extra <= room[t.obs.ID] {
			continue
		}
		users := roomUsers[t.obs.ID]
		slices.Sort(users)
		v := Violation{Code: CodeOverLimit, ProductID: t.obs.ID,
			Message: fmt.Sprintf("product %s: sold %d is %d units above its succeeded orders, which only orders of unknown fate of %s can hold, but within the per-user limit %d they can hold %d", t.obs.ID, f.Sold, extra, strings.Join(users, ", "), l, room[t.obs.ID])}
		if len(users) == 1 {
			v.UserID = users[0]
		}
		add(v)
	}
	// A limit_exceeded order is refused because the buyer's units bought
	// before it plus its quantity pass the limit. A buyer's units only grow
	// during a run, so if their final units plus its quantity stay within
	// the limit (or there is none), it was refused wrongly; orders of the
	// buyer of unknown fate may explain it.
	for _, r := range limitRefusals {
		l := int64(limits[r.up.product])
		if l > 0 && perUser[r.up]+uncertainPerUser[r.up]+r.quantity > l {
			continue
		}
		add(Violation{Code: CodeLimitMisapplied, ProductID: r.up.product, OrderID: r.id, Key: r.key, UserID: r.up.user,
			Message: fmt.Sprintf("order %s (key %s, quantity %d) ended limit_exceeded, but user %s holds %d succeeded units of product %s, limit %d", r.id, r.key, r.quantity, r.up.user, perUser[r.up], r.up.product, l)})
	}

	for _, e := range obs.ServerErrors {
		add(Violation{Code: CodeServerError,
			Message: fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, e.Code)})
	}
	if obs.Incomplete != "" {
		add(Violation{Code: CodeIncomplete, Message: "the run did not finish: " + obs.Incomplete})
	} else if o := a.outcomes; o.Rejected > 0 && o.Rejected+o.Unsent == int64(len(obs.Orders)) {
		add(Violation{Code: CodeNothingDecided,
			Message: fmt.Sprintf("none of the %d orders sent was accepted or decided (turned away, e.g. 429, or never answered): the run checked no sale", o.Rejected)})
	}

	slices.SortStableFunc(a.violations, func(x, y Violation) int {
		return cmp.Or(cmp.Compare(x.Code, y.Code), cmp.Compare(x.ProductID, y.ProductID),
			cmp.Compare(x.Key, y.Key), cmp.Compare(x.OrderID, y.OrderID), cmp.Compare(x.UserID, y.UserID),
			cmp.Compare(x.Message, y.Message))
	})
	return a
}

// Outcomes counts logical orders (one per Idempotency-Key) by their fate.
type Outcomes struct {
	// Succeeded, SoldOut, LimitExceeded and Failed: accepted (202) orders by
	// final status.
	Succeeded     int64 `json:"succeeded"`
	SoldOut       int64 `json:"sold_out"`
	LimitExceeded int64 `json:"limit_exceeded"`
	Failed        int64 `json:"failed"`
	// SoldOutFastPath: answered 409 sold_out without an order id (final).
	SoldOutFastPath int64 `json:"sold_out_fast_path"`
	// Unsettled: accepted but never seen final (lost, not final in time, or
	// an unknown status).
	Unsettled int64 `json:"unsettled"`
	// Rejected: never accepted (400, 404, 429, 503, connection errors, ...).
	Rejected int64 `json:"rejected"`
	// Unsent: never sent (the run stopped first).
	Unsent int64 `json:"unsent"`
}

func (o *Outcomes) add(out outcome) {
	switch out {
	case outcomeUnsent:
		o.Unsent++
	case outcomeRejected:
		o.Rejected++
	case outcomeFastPath:
		o.SoldOutFastPath++
	case outcomeSucceeded:
		o.Succeeded++
	case outcomeSoldOut:
		o.SoldOut++
	case outcomeLimitExceeded:
		o.LimitExceeded++
	case outcomeFailed:
		o.Failed++
	case outcomeUnsettled:
		o.Unsettled++
	}
}

// Final is the number of orders that reached a final outcome (including the
// 409 fast path).
func (o Outcomes) Final() int64 {
	return o.Succeeded + o.SoldOut + o.LimitExceeded + o.Failed + o.SoldOutFastPath
}

// salesTimeline holds one product's sales by a time of each (first send,
// or decision), for the undersell checks: stock only falls, so the units
// sold after a refusal were there when it was refused.
type salesTimeline struct {
	sales  []timedUnits
	after  []int64 // after[k]: units of sales[k:], once sorted
	sorted bool
}

type timedUnits struct {
	at    time.Time
	units int64
}

func timelineOf(m map[string]*salesTimeline, product string) *salesTimeline {
	if m[product] == nil {
		m[product] = &salesTimeline{}
	}
	return m[product]
}

func (s *salesTimeline) add(at time.Time, units int64) {
	s.sales, s.sorted = append(s.sales, timedUnits{at, units}), false
}

// unitsAfter returns the units sold strictly after t.
func (s *salesTimeline) unitsAfter(t time.Time) int64 {
	if !s.sorted {
		slices.SortFunc(s.sales, func(x, y timedUnits) int { return x.at.Compare(y.at) })
		s.after = make([]int64, len(s.sales)+1)
		for k := len(s.sales) - 1; k >= 0; k-- {
			s.after[k] = s.after[k+1] + s.sales[k].units
		}
		s.sorted = true
	}
	k, _ := slices.BinarySearchFunc(s.sales, t, func(x timedUnits, t time.Time) int {
		if x.at.After(t) {
			return 1
		}
		return -1
	})
	return s.after[k]
}
