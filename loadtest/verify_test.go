package loadtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// cleanSale is a correct sale: product p1 with 3 units and a per-user limit
// of 1, five single-unit orders from five buyers; o0..o2 succeeded, o3 and o4
// ended sold out.
func cleanSale() Observations {
	obs := Observations{
		Products: []ProductObservation{{
			ID: "p1", Stocked: 3, PerUserLimit: 1,
			Final: &Product{ID: "p1", Stock: 0, Sold: 3, PerUserLimit: 1},
		}},
		States: map[string]OrderState{},
	}
	for i := range 5 {
		id := fmt.Sprintf("o%d", i)
		obs.Orders = append(obs.Orders, OrderObservation{
			Key: fmt.Sprintf("k%d", i), UserID: fmt.Sprintf("u%d", i), ProductID: "p1", Quantity: 1,
			Responses: []SubmitResponse{{Status: 202, OrderID: id, OrderStatus: StatusQueued}},
		})
		status := StatusSucceeded
		if i >= 3 {
			status = StatusSoldOut
		}
		obs.States[id] = OrderState{OrderID: id, ProductID: "p1", UserID: fmt.Sprintf("u%d", i), Quantity: 1, Status: status}
	}
	return obs
}

// at is a point of cleanSale's timeline: order ki is first sent at at(i+1)
// once sentInTurn is applied.
func at(n int) time.Time {
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Millisecond)
}

// sentInTurn dates cleanSale's orders: ki first sent at at(i+1), answered
// 1µs later.
func sentInTurn(obs *Observations) {
	for i := range obs.Orders {
		obs.Orders[i].FirstSent = at(i + 1)
		for n := range obs.Orders[i].Responses {
			obs.Orders[i].Responses[n].At = at(i + 1).Add(time.Microsecond)
		}
	}
}

// refused is an order for p1 answered 409 sold_out at answered.
func refused(key, user string, quantity int, answered time.Time) OrderObservation {
	return OrderObservation{Key: key, UserID: user, ProductID: "p1", Quantity: quantity,
		FirstSent: answered.Add(-time.Microsecond),
		Responses: []SubmitResponse{{Status: 409, ErrorCode: ErrorCodeSoldOut, At: answered}}}
}

// decidedAt dates the decisions of cleanSale's orders: order id was
// decided by a transaction that began at at(n).
func decidedAt(obs *Observations, when map[string]int) {
	for id, n := range when {
		st := obs.States[id]
		st.UpdatedAt = at(n)
		obs.States[id] = st
	}
}

// setStatus sets the final status of order id.
func setStatus(obs *Observations, id, status string) {
	st := obs.States[id]
	st.Status = status
	obs.States[id] = st
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name  string
		plant func(*Observations)
		want  map[ViolationCode]int
	}{
		{
			name:  "clean sale",
			plant: func(*Observations) {},
			want:  map[ViolationCode]int{},
		},
		{
			name: "oversell: a fourth order succeeded and stock went negative",
			plant: func(o *Observations) {
				setStatus(o, "o3", StatusSucceeded)
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = -1, 4
			},
			want: map[ViolationCode]int{CodeOversell: 1, CodeNegativeStock: 1},
		},
		{
			// o3 decided sold out by a transaction before the one that sold
			// o2's unit: the unit was there (stock only falls).
			name: "a worker decided sold_out before a later transaction sold a unit",
			plant: func(o *Observations) {
				decidedAt(o, map[string]int{"o0": 1, "o1": 1, "o3": 2, "o2": 3, "o4": 4})
			},
			want: map[ViolationCode]int{CodeUndersell: 1},
		},
		{
			name: "sold_out decided in the transaction that sold the last unit, or after it",
			plant: func(o *Observations) {
				decidedAt(o, map[string]int{"o0": 1, "o1": 1, "o2": 2, "o3": 2, "o4": 3})
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "sold_out decision times unknown (no updated_at)",
			plant: func(o *Observations) {
				decidedAt(o, map[string]int{"o0": 1, "o1": 1, "o2": 3})
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "oversell seen only in the product: sold says 4 of 3 stocked, three orders succeeded",
			plant: func(o *Observations) {
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = -1, 4
			},
			want: map[ViolationCode]int{CodeOversell: 1, CodeNegativeStock: 1, CodeSoldMismatch: 1},
		},
		{
			name: "oversell hidden by the counters: four succeeded but sold says 3",
			plant: func(o *Observations) {
				setStatus(o, "o3", StatusSucceeded)
			},
			want: map[ViolationCode]int{CodeOversell: 1, CodeSoldMismatch: 1},
		},
		{
			// Succeeded orders count in units, not orders: two orders of
			// 2 units are 4 units, one above the 3 stocked.
			name: "oversell hidden by the counters, in units: two orders of 2 units succeeded of 3 stocked, sold says 3",
			plant: func(o *Observations) {
				o.Products[0].PerUserLimit, o.Products[0].Final.PerUserLimit = 0, 0
				for _, i := range []int{0, 1} {
					o.Orders[i].Quantity = 2
					st := o.States[o.Orders[i].Responses[0].OrderID]
					st.Quantity = 2
					o.States[st.OrderID] = st
				}
				setStatus(o, "o2", StatusSoldOut)
			},
			want: map[ViolationCode]int{CodeOversell: 1, CodeSoldMismatch: 1},
		},
		{
			name: "a success other than 202 to an order (from a review: counted as a rejection)",
			plant: func(o *Observations) {
				o.Orders[4].Responses = []SubmitResponse{{Status: 200}}
				delete(o.States, "o4")
			},
			want: map[ViolationCode]int{CodeUnexpectedAnswer: 1},
		},
		{
			name: "a redirect answered to an order",
			plant: func(o *Observations) {
				o.Orders[4].Responses = []SubmitResponse{{Status: 302}}
				delete(o.States, "o4")
			},
			want: map[ViolationCode]int{CodeUnexpectedAnswer: 1},
		},
		{
			name: "limit_exceeded for a buyer within the limit (from a review: not checked)",
			plant: func(o *Observations) {
				setStatus(o, "o3", StatusLimitExceeded)
			},
			want: map[ViolationCode]int{CodeLimitMisapplied: 1},
		},
		{
			name: "limit_exceeded on a product without a limit",
			plant: func(o *Observations) {
				o.Products[0].PerUserLimit, o.Products[0].Final.PerUserLimit = 0, 0
				setStatus(o, "o3", StatusLimitExceeded)
			},
			want: map[ViolationCode]int{CodeLimitMisapplied: 1},
		},
		{
			name: "limit_exceeded for a buyer at the limit is right",
			plant: func(o *Observations) {
				o.Orders = append(o.Orders, OrderObservation{Key: "k5", UserID: "u0", ProductID: "p1", Quantity: 1,
					Responses: []SubmitResponse{{Status: 202, OrderID: "o5", OrderStatus: StatusQueued}}})
				o.States["o5"] = OrderState{OrderID: "o5", ProductID: "p1", UserID: "u0", Quantity: 1, Status: StatusLimitExceeded}
			},
			want: map[ViolationCode]int{},
		},
		{
			// Demand for a single-unit product counts the orders that
			// wanted stock: a buyer refused by the limit wanted none.
			name: "limit_exceeded orders are no demand: stock left after them is no undersell",
			plant: func(o *Observations) {
				o.Orders = o.Orders[:2]
				o.Orders = append(o.Orders, OrderObservation{Key: "k5", UserID: "u0", ProductID: "p1", Quantity: 1,
					Responses: []SubmitResponse{{Status: 202, OrderID: "o5", OrderStatus: StatusQueued}}})
				o.States["o5"] = OrderState{OrderID: "o5", ProductID: "p1", UserID: "u0", Quantity: 1, Status: StatusLimitExceeded}
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = 1, 2
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "limit_exceeded explained by another order of the buyer of unknown fate",
			plant: func(o *Observations) {
				o.Orders = append(o.Orders, OrderObservation{Key: "k6", UserID: "u3", ProductID: "p1", Quantity: 1,
					Responses: []SubmitResponse{{Status: 0}}})
				setStatus(o, "o3", StatusLimitExceeded)
			},
			want: map[ViolationCode]int{CodeOrderUnanswered: 1},
		},
		{
			name: "lost order: accepted, never seen again",
			plant: func(o *Observations) {
				delete(o.States, "o1")
			},
			want: map[ViolationCode]int{CodeOrderNotFinal: 1},
		},
		{
			name: "lost order: accepted, then 404",
			plant: func(o *Observations) {
				o.States["o1"] = OrderState{OrderID: "o1", NotFound: true}
			},
			want: map[ViolationCode]int{CodeOrderLost: 1},
		},
		{
			name: "polling gave up on an order before it read any status (from an operator review: reported as status \"\")",
			plant: func(o *Observations) {
				o.States["o4"] = OrderState{OrderID: "o4", Err: "polling gave up: connection refused"}
			},
			want: map[ViolationCode]int{CodeOrderNotFinal: 1},
		},
		{
			name: "order stuck in processing",
			plant: func(o *Observations) {
				setStatus(o, "o4", StatusProcessing)
			},
			want: map[ViolationCode]int{CodeOrderNotFinal: 1},
		},
		{
			// The server may still sell it: its unit is of unknown fate,
			// and one sold is no sold_mismatch or over_limit on top.
			name: "an order stuck in processing that sold its unit",
			plant: func(o *Observations) {
				setStatus(o, "o2", StatusProcessing)
			},
			want: map[ViolationCode]int{CodeOrderNotFinal: 1},
		},
		{
			name: "duplicate order: a resend with the same key got a new order id",
			plant: func(o *Observations) {
				o.Orders[3].Responses = append(o.Orders[3].Responses, SubmitResponse{Status: 202, OrderID: "o3bis", OrderStatus: StatusQueued})
				o.States["o3bis"] = OrderState{OrderID: "o3bis", ProductID: "p1", UserID: "u3", Quantity: 1, Status: StatusSoldOut}
			},
			want: map[ViolationCode]int{CodeDuplicateOrder: 1},
		},
		{
			name: "duplicate order that also sold twice",
			plant: func(o *Observations) {
				o.Orders[0].Responses = append(o.Orders[0].Responses, SubmitResponse{Status: 202, OrderID: "o0bis"})
				o.States["o0bis"] = OrderState{OrderID: "o0bis", ProductID: "p1", UserID: "u0", Quantity: 1, Status: StatusSucceeded}
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = -1, 4
			},
			want: map[ViolationCode]int{CodeDuplicateOrder: 1, CodeOversell: 1, CodeNegativeStock: 1, CodeOverLimit: 1},
		},
		{
			name: "two keys share one order id",
			plant: func(o *Observations) {
				o.Orders[4].Responses[0].OrderID = "o0"
			},
			want: map[ViolationCode]int{CodeSharedOrderID: 1},
		},
		{
			name: "undersell: orders ended sold_out while a unit was left",
			plant: func(o *Observations) {
				setStatus(o, "o2", StatusSoldOut)
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = 1, 2
			},
			// o2, o3, o4 each, and the product: demand 5 ≥ 3 but 1 left.
			want: map[ViolationCode]int{CodeUndersell: 4},
		},
		{
			name: "undersell: 409 fast path while stock remained",
			plant: func(o *Observations) {
				delete(o.States, "o2")
				o.Orders[2].Responses = []SubmitResponse{{Status: 409, ErrorCode: ErrorCodeSoldOut}}
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = 1, 2
			},
			want: map[ViolationCode]int{CodeUndersell: 4},
		},
		{
			name: "undersell: 409 sold_out answered before orders that then bought the stock",
			plant: func(o *Observations) {
				sentInTurn(o)
				o.Orders = append(o.Orders, refused("k5", "u5", 1, at(0)))
			},
			want: map[ViolationCode]int{CodeUndersell: 1},
		},
		{
			name: "409 sold_out answered after the last order that succeeded was sent",
			plant: func(o *Observations) {
				sentInTurn(o)
				o.Orders = append(o.Orders, refused("k5", "u5", 1, at(3)))
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "409 sold_out of 2 units with 1 unit sold after it",
			plant: func(o *Observations) {
				sentInTurn(o)
				o.Orders = append(o.Orders, refused("k5", "u5", 2, at(2)))
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "undersell: 409 sold_out of 2 units with 2 units sold after it",
			plant: func(o *Observations) {
				sentInTurn(o)
				o.Orders = append(o.Orders, refused("k5", "u5", 2, at(1)))
			},
			want: map[ViolationCode]int{CodeUndersell: 1},
		},
		{
			name: "undersell: demand covered the stock but an order failed",
			plant: func(o *Observations) {
				o.Orders = o.Orders[:3]
				setStatus(o, "o2", StatusFailed)
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = 1, 2
			},
			want: map[ViolationCode]int{CodeUndersell: 1},
		},
		{
			name: "no undersell when demand is below stock",
			plant: func(o *Observations) {
				o.Orders = o.Orders[:2]
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = 1, 2
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "multi-unit: sold_out of 2 units with 1 left is fine",
			plant: func(o *Observations) {
				o.Orders[3].Quantity, o.Orders[4].Quantity = 2, 2
				o.States["o3"] = OrderState{OrderID: "o3", ProductID: "p1", UserID: "u3", Quantity: 2, Status: StatusSoldOut}
				o.States["o4"] = OrderState{OrderID: "o4", ProductID: "p1", UserID: "u4", Quantity: 2, Status: StatusSoldOut}
				setStatus(o, "o2", StatusFailed)
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = 1, 2
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "over limit: one buyer got two units with limit 1",
			plant: func(o *Observations) {
				o.Orders[1].UserID = "u0"
				st := o.States["o1"]
				st.UserID = "u0"
				o.States["o1"] = st
			},
			want: map[ViolationCode]int{CodeOverLimit: 1},
		},
		{
			name: "over limit against the limit the server reports",
			plant: func(o *Observations) {
				o.Products[0].PerUserLimit = 0
				o.Orders[1].UserID = "u0"
				st := o.States["o1"]
				st.UserID = "u0"
				o.States["o1"] = st
			},
			want: map[ViolationCode]int{CodeOverLimit: 1},
		},
		{
			// A server that dropped the per_user_limit it was created with
			// is judged by the limit the run asked for.
			name: "over limit against the configured limit, the server reporting none",
			plant: func(o *Observations) {
				o.Products[0].Final.PerUserLimit = 0
				o.Orders[1].UserID = "u0"
				st := o.States["o1"]
				st.UserID = "u0"
				o.States["o1"] = st
			},
			want: map[ViolationCode]int{CodeOverLimit: 1},
		},
		{
			name: "sold above the succeeded units by an order of unknown fate of a buyer with room",
			plant: func(o *Observations) {
				o.Orders[2].Responses = []SubmitResponse{{Status: 0, Err: "timeout"}, {Status: 0, Err: "timeout"}}
				delete(o.States, "o2")
			},
			want: map[ViolationCode]int{CodeOrderUnanswered: 1},
		},
		{
			name: "over limit: sold above the succeeded units by an order of unknown fate of a buyer at the limit",
			plant: func(o *Observations) {
				o.Orders[2].UserID = "u0"
				o.Orders[2].Responses = []SubmitResponse{{Status: 0, Err: "timeout"}, {Status: 0, Err: "timeout"}}
				delete(o.States, "o2")
			},
			want: map[ViolationCode]int{CodeOverLimit: 1, CodeOrderUnanswered: 1},
		},
		{
			// Limit 2: u0 holds 2 succeeded units, u5 none. Sold is 2
			// above the succeeded units, which only the unanswered orders
			// of u0 and u5 (one unit each) can hold; u0 has no room, u5's
			// one order holds at most 1.
			name: "over limit: a buyer's room under the limit is at most the units of their orders of unknown fate",
			plant: func(o *Observations) {
				o.Products[0].PerUserLimit, o.Products[0].Final.PerUserLimit = 2, 2
				o.Orders[1].UserID = "u0"
				st := o.States["o1"]
				st.UserID = "u0"
				o.States["o1"] = st
				o.Orders = append(o.Orders,
					OrderObservation{Key: "k5", UserID: "u0", ProductID: "p1", Quantity: 1, Responses: []SubmitResponse{{Err: "timeout"}}},
					OrderObservation{Key: "k6", UserID: "u5", ProductID: "p1", Quantity: 1, Responses: []SubmitResponse{{Err: "timeout"}}})
				o.Products[0].Stocked, o.Products[0].Final.Sold = 5, 5
			},
			want: map[ViolationCode]int{CodeOverLimit: 1, CodeOrderUnanswered: 2},
		},
		{
			name: "5xx on submit, then accepted on retry",
			plant: func(o *Observations) {
				o.Orders[0].Responses = append([]SubmitResponse{{Status: 503, ErrorCode: "unavailable"}}, o.Orders[0].Responses...)
			},
			want: map[ViolationCode]int{CodeServerError: 1},
		},
		{
			name: "4xx refusals on submit: 404 and 400 are violations, 429 is not",
			plant: func(o *Observations) {
				o.Orders[0].Responses = append([]SubmitResponse{{Status: 404, ErrorCode: "product_not_found"}}, o.Orders[0].Responses...)
				o.Orders[1].Responses = append([]SubmitResponse{{Status: 400, ErrorCode: "invalid_request"}}, o.Orders[1].Responses...)
				o.Orders[2].Responses = append([]SubmitResponse{{Status: 429, ErrorCode: "rate_limited"}}, o.Orders[2].Responses...)
			},
			want: map[ViolationCode]int{CodeUnexpectedRefusal: 2},
		},
		{
			name: "5xx on another endpoint",
			plant: func(o *Observations) {
				o.ServerErrors = append(o.ServerErrors, ServerError{Method: "GET", Path: "/v1/orders/{id}", Status: 500})
			},
			want: map[ViolationCode]int{CodeServerError: 1},
		},
		{
			name: "unknown order status",
			plant: func(o *Observations) {
				setStatus(o, "o0", "shipped")
			},
			want: map[ViolationCode]int{CodeUnknownStatus: 1},
		},
		{
			name: "unknown status in a 202 body",
			plant: func(o *Observations) {
				o.Orders[0].Responses[0].OrderStatus = "pending"
			},
			want: map[ViolationCode]int{CodeUnknownStatus: 1},
		},
		{
			name: "stock + sold does not add up",
			plant: func(o *Observations) {
				o.Products[0].Final.Sold = 2
			},
			want: map[ViolationCode]int{CodeStockMismatch: 1, CodeSoldMismatch: 1},
		},
		{
			name: "unknown fate widens sold, no false alarm but the buyer never answered",
			plant: func(o *Observations) {
				delete(o.States, "o0")
				o.Orders[0].Responses = []SubmitResponse{{Err: "connection reset"}}
			},
			want: map[ViolationCode]int{CodeOrderUnanswered: 1},
		},
		{
			name: "a 503 is an answer: no order_unanswered, a server_error",
			plant: func(o *Observations) {
				delete(o.States, "o0")
				o.Orders[0].Responses = []SubmitResponse{{Status: 503, ErrorCode: "unavailable"}, {Err: "timeout"}}
			},
			want: map[ViolationCode]int{CodeServerError: 1},
		},
		{
			name: "a run that did not finish judges no key unanswered",
			plant: func(o *Observations) {
				delete(o.States, "o0")
				o.Orders[0].Responses = []SubmitResponse{{Err: "timeout"}}
				o.Incomplete = "the overall timeout passed"
			},
			want: map[ViolationCode]int{CodeIncomplete: 1},
		},
		{
			name: "202 without an order id",
			plant: func(o *Observations) {
				delete(o.States, "o3")
				o.Orders[3].Responses[0].OrderID = ""
			},
			want: map[ViolationCode]int{CodeOrderLost: 1},
		},
		{
			name: "409 sold_out first, then a 202 whose order succeeded",
			plant: func(o *Observations) {
				o.Orders[0].Responses = append([]SubmitResponse{{Status: 409, ErrorCode: ErrorCodeSoldOut}}, o.Orders[0].Responses...)
			},
			want: map[ViolationCode]int{CodeIdempotencyConflict: 1},
		},
		{
			name: "sold above the succeeded units, every fate known",
			plant: func(o *Observations) {
				o.Products[0].Stocked = 4
				o.Products[0].Final.Sold = 4
			},
			want: map[ViolationCode]int{CodeSoldMismatch: 1},
		},
		{
			name: "sold above the succeeded units plus the units of unknown fate",
			plant: func(o *Observations) {
				delete(o.States, "o0")
				o.Orders[0].Responses = []SubmitResponse{{Err: "connection reset"}}
				o.Products[0].Stocked = 4
				o.Products[0].Final.Sold = 4
			},
			want: map[ViolationCode]int{CodeSoldMismatch: 1, CodeOrderUnanswered: 1},
		},
		{
			name: "409 sold_out to a resend of an accepted key",
			plant: func(o *Observations) {
				o.Orders[0].Responses = append(o.Orders[0].Responses, SubmitResponse{Status: 409, ErrorCode: ErrorCodeSoldOut})
			},
			want: map[ViolationCode]int{CodeIdempotencyConflict: 1},
		},
		{
			// The re-send decided it: no order of unknown fate can hold
			// the unit sold beyond the succeeded ones.
			name: "sold above the succeeded units, a key answered 409 sold_out after a send got no answer",
			plant: func(o *Observations) {
				o.Orders = append(o.Orders, OrderObservation{Key: "k5", UserID: "u5", ProductID: "p1", Quantity: 1,
					Responses: []SubmitResponse{{Err: "timeout"}, {Status: 409, ErrorCode: ErrorCodeSoldOut}}})
				o.Products[0].Stocked = 4
				o.Products[0].Final.Sold = 4
			},
			want: map[ViolationCode]int{CodeSoldMismatch: 1},
		},
		{
			name: "409 sold_out to a resend of a key accepted as an order that ended sold_out",
			plant: func(o *Observations) {
				o.Orders[3].Responses = append(o.Orders[3].Responses, SubmitResponse{Status: 409, ErrorCode: ErrorCodeSoldOut})
			},
			want: map[ViolationCode]int{CodeIdempotencyConflict: 1},
		},
		{
			// Sold out either way: one outcome, told twice.
			name: "409 sold_out first, then a 202 whose order ended sold_out",
			plant: func(o *Observations) {
				o.Orders[3].Responses = append([]SubmitResponse{{Status: 409, ErrorCode: ErrorCodeSoldOut}}, o.Orders[3].Responses...)
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "422 idempotency_mismatch for the same body",
			plant: func(o *Observations) {
				o.Orders[3].Responses = append(o.Orders[3].Responses, SubmitResponse{Status: 422, ErrorCode: ErrorCodeIdempotencyMismatch})
			},
			want: map[ViolationCode]int{CodeIdempotencyConflict: 1},
		},
		{
			name: "polled order differs from what was sent",
			plant: func(o *Observations) {
				st := o.States["o4"]
				st.Quantity = 7
				o.States["o4"] = st
			},
			want: map[ViolationCode]int{CodeOrderMismatch: 1},
		},
		{
			name: "polled order reads another product",
			plant: func(o *Observations) {
				st := o.States["o4"]
				st.ProductID = "p2"
				o.States["o4"] = st
			},
			want: map[ViolationCode]int{CodeOrderMismatch: 1},
		},
		{
			name: "final order view without user_id, product_id or quantity",
			plant: func(o *Observations) {
				st := o.States["o0"]
				st.UserID = ""
				o.States["o0"] = st
				st = o.States["o3"]
				st.ProductID, st.Quantity = "", 0
				o.States["o3"] = st
			},
			want: map[ViolationCode]int{CodeOrderMismatch: 2},
		},
		{
			name: "re-read after settling: the same order, no violation",
			plant: func(o *Observations) {
				o.Rereads = maps.Clone(o.States)
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "re-read after settling: a succeeded order reads sold_out",
			plant: func(o *Observations) {
				o.Rereads = maps.Clone(o.States)
				st := o.Rereads["o0"]
				st.Status = StatusSoldOut
				o.Rereads["o0"] = st
			},
			want: map[ViolationCode]int{CodeOrderChanged: 1},
		},
		{
			name: "re-read after settling: the quantity changed",
			plant: func(o *Observations) {
				o.Rereads = maps.Clone(o.States)
				st := o.Rereads["o3"]
				st.Quantity = 2
				o.Rereads["o3"] = st
			},
			want: map[ViolationCode]int{CodeOrderChanged: 1},
		},
		{
			name: "re-read after settling: the order id, product or user changed",
			plant: func(o *Observations) {
				o.Rereads = maps.Clone(o.States)
				for id, change := range map[string]func(*OrderState){
					"o0": func(st *OrderState) { st.OrderID = "o9" },
					"o1": func(st *OrderState) { st.ProductID = "p2" },
					"o3": func(st *OrderState) { st.UserID = "u9" },
				} {
					st := o.Rereads[id]
					change(&st)
					o.Rereads[id] = st
				}
			},
			want: map[ViolationCode]int{CodeOrderChanged: 3},
		},
		{
			name: "re-read after settling: 404, an error, and an order not re-read",
			plant: func(o *Observations) {
				o.Rereads = maps.Clone(o.States)
				o.Rereads["o0"] = OrderState{OrderID: "o0", NotFound: true}
				o.Rereads["o1"] = OrderState{OrderID: "o1", Err: "connection refused"}
				delete(o.Rereads, "o2")
			},
			want: map[ViolationCode]int{CodeOrderLost: 1, CodeOrderUnverified: 2},
		},
		{
			name: "a 202 replay says succeeded, polling saw sold_out",
			plant: func(o *Observations) {
				o.Orders[3].Responses = append(o.Orders[3].Responses, SubmitResponse{Status: 202, OrderID: "o3", OrderStatus: StatusSucceeded})
			},
			want: map[ViolationCode]int{CodeOrderChanged: 1},
		},
		{
			// Every final status of a replay is compared, not only succeeded.
			name: "a 202 replay says sold_out, polling saw succeeded",
			plant: func(o *Observations) {
				o.Orders[0].Responses = append(o.Orders[0].Responses, SubmitResponse{Status: 202, OrderID: "o0", OrderStatus: StatusSoldOut})
			},
			want: map[ViolationCode]int{CodeOrderChanged: 1},
		},
		{
			name: "a 202 replay with the polled final status, or not final yet",
			plant: func(o *Observations) {
				o.Orders[3].Responses = append(o.Orders[3].Responses, SubmitResponse{Status: 202, OrderID: "o3", OrderStatus: StatusSoldOut})
				o.Orders[0].Responses = append(o.Orders[0].Responses, SubmitResponse{Status: 202, OrderID: "o0", OrderStatus: StatusProcessing})
			},
			want: map[ViolationCode]int{},
		},
		{
			name: "product could not be read back",
			plant: func(o *Observations) {
				o.Products[0].Final, o.Products[0].ReadError = nil, "connection refused"
			},
			want: map[ViolationCode]int{CodeProductUnverified: 1},
		},
		{
			name: "every order turned away with 429",
			plant: func(o *Observations) {
				for i := range o.Orders {
					o.Orders[i].Responses = []SubmitResponse{{Status: 429, ErrorCode: "rate_limited"}}
				}
				o.States = map[string]OrderState{}
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = 3, 0
			},
			want: map[ViolationCode]int{CodeNothingDecided: 1},
		},
		{
			name: "the only order sent turned away with 429",
			plant: func(o *Observations) {
				o.Orders = o.Orders[:1]
				o.Orders[0].Responses = []SubmitResponse{{Status: 429, ErrorCode: "rate_limited"}}
				o.States = map[string]OrderState{}
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = 3, 0
			},
			want: map[ViolationCode]int{CodeNothingDecided: 1},
		},
		{
			// The lock-in-request baseline: a busy lock answers 429.
			name: "some orders decided, the rest turned away with 429",
			plant: func(o *Observations) {
				for i := 3; i < len(o.Orders); i++ {
					o.Orders[i].Responses = []SubmitResponse{{Status: 429, ErrorCode: "busy"}}
				}
				delete(o.States, "o3")
				delete(o.States, "o4")
			},
			want: map[ViolationCode]int{},
		},
		{
			// A 429 turns the order away without creating it: its units
			// cannot explain sold above the succeeded orders.
			name: "sold above the succeeded units, the other orders turned away with 429",
			plant: func(o *Observations) {
				for i := 3; i < len(o.Orders); i++ {
					o.Orders[i].Responses = []SubmitResponse{{Status: 429, ErrorCode: "rate_limited"}}
				}
				delete(o.States, "o3")
				delete(o.States, "o4")
				setStatus(o, "o2", StatusFailed)
			},
			want: map[ViolationCode]int{CodeSoldMismatch: 1},
		},
		{
			name: "a run that sent nothing is incomplete, not judged undecided",
			plant: func(o *Observations) {
				for i := range o.Orders {
					o.Orders[i].Responses = nil
				}
				o.States = map[string]OrderState{}
				o.Products[0].Final.Stock, o.Products[0].Final.Sold = 3, 0
				o.Incomplete = "the overall timeout passed"
			},
			want: map[ViolationCode]int{CodeIncomplete: 1},
		},
		{
			name: "run incomplete",
			plant: func(o *Observations) {
				o.Incomplete = "timeout"
			},
			want: map[ViolationCode]int{CodeIncomplete: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := cleanSale()
			tt.plant(&obs)
			vs := Verify(obs)
			got := map[ViolationCode]int{}
			for _, v := range vs {
				got[v.Code]++
				if v.Message == "" {
					t.Errorf("violation %s has no message", v.Code)
				}
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("Verify codes = %v, want %v\nviolations:\n%s", got, tt.want, list(vs))
			}
		})
	}
}

func list(vs []Violation) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString("  " + v.String() + "\n")
	}
	return b.String()
}

func TestVerifyLocatesViolations(t *testing.T) {
	obs := cleanSale()
	delete(obs.States, "o1")
	vs := Verify(obs)
	if len(vs) != 1 {
		t.Fatalf("got %d violations, want 1:\n%s", len(vs), list(vs))
	}
	v := vs[0]
	if v.ProductID != "p1" || v.OrderID != "o1" || v.Key != "k1" || v.UserID != "u1" {
		t.Fatalf("got violation at product %q order %q key %q user %q, want p1 o1 k1 u1", v.ProductID, v.OrderID, v.Key, v.UserID)
	}
}

func TestVerifyIsPureAndSorted(t *testing.T) {
	obs := cleanSale()
	setStatus(&obs, "o2", StatusSoldOut)
	obs.Products[0].Final.Stock, obs.Products[0].Final.Sold = 1, 2
	obs.Incomplete = "timeout"
	first := Verify(obs)
	second := Verify(obs)
	if !slices.Equal(first, second) {
		t.Fatalf("Verify is not deterministic:\n%s\nvs\n%s", list(first), list(second))
	}
	if !slices.IsSortedFunc(first, func(a, b Violation) int { return strings.Compare(string(a.Code), string(b.Code)) }) {
		t.Fatalf("violations not sorted by code:\n%s", list(first))
	}
	if got := obs.States["o2"].Status; got != StatusSoldOut {
		t.Fatalf("Verify changed its input: o2 status %q, want %q", got, StatusSoldOut)
	}
}

func TestOutcomes(t *testing.T) {
	obs := cleanSale()
	obs.Orders = append(obs.Orders,
		OrderObservation{Key: "k5", UserID: "u5", ProductID: "p1", Quantity: 1,
			Responses: []SubmitResponse{{Status: 409, ErrorCode: ErrorCodeSoldOut}}},
		OrderObservation{Key: "k6", UserID: "u6", ProductID: "p1", Quantity: 1,
			Responses: []SubmitResponse{{Status: 429, ErrorCode: "rate_limited"}}},
		OrderObservation{Key: "k7", UserID: "u7", ProductID: "p1", Quantity: 1},
		OrderObservation{Key: "k8", UserID: "u0", ProductID: "p1", Quantity: 1,
			Responses: []SubmitResponse{{Status: 202, OrderID: "o8", OrderStatus: StatusQueued}}},
	)
	obs.Orders = append(obs.Orders, OrderObservation{Key: "k9", UserID: "u9", ProductID: "p1", Quantity: 1,
		Responses: []SubmitResponse{{Status: 202, OrderID: "o9", OrderStatus: StatusQueued}}})
	obs.States["o8"] = OrderState{OrderID: "o8", ProductID: "p1", UserID: "u0", Quantity: 1, Status: StatusLimitExceeded}
	obs.States["o9"] = OrderState{OrderID: "o9", ProductID: "p1", UserID: "u9", Quantity: 1, Status: StatusFailed}
	a := analyze(obs)
	got := a.outcomes
	want := Outcomes{Succeeded: 3, SoldOut: 2, LimitExceeded: 1, Failed: 1, SoldOutFastPath: 1, Rejected: 1, Unsent: 1}
	if got != want {
		t.Fatalf("outcomes = %+v, want %+v", got, want)
	}
	// Demand: succeeded, sold out (polled or 409 fast path) and failed
	// orders; not limit_exceeded, turned away or unsent ones.
	if d := a.products[0].demandUnits; d != 7 {
		t.Fatalf("product demand = %d units, want 7 (3 succeeded, 2 sold_out, 1 answered 409 sold_out, 1 failed)", d)
	}
	if got.Final() != 8 {
		t.Fatalf("Final() = %d, want 8 (limit_exceeded is final)", got.Final())
	}
}

// The decision time that the sold-out check compares is read from the
// order's updated_at, as GET /v1/orders/{id} answers it (api/openapi.json).
func TestOrderViewReadsTheDecisionTime(t *testing.T) {
	body := `{"order_id":"o1","product_id":"p1","user_id":"u1","quantity":1,"status":"sold_out",` +
		`"created_at":"2026-11-26T16:00:00.000001Z","updated_at":"2026-11-26T16:00:00.123456Z"}`
	var v orderView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 11, 26, 16, 0, 0, 123456000, time.UTC)
	if st := v.state("o1"); !st.UpdatedAt.Equal(want) || st.Status != StatusSoldOut {
		t.Errorf("state = %+v, want sold_out decided at %v", st, want)
	}
}
