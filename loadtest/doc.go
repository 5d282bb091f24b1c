// Package loadtest drives running flashsale API servers with a bounded burst
// (or an open arrival rate) of purchase orders, waits for every accepted order
// to reach a final status, checks the sale's invariants and reports how fast
// the system was and whether it stayed right.
//
// A run has five phases:
//
//  1. create: the products are created through the admin API, each with
//     [Config.Stock] units, under ids prefixed with the run id so that
//     repeated runs never collide;
//  2. submit: [Config.Orders] orders (plus the duplicates asked for by
//     [Config.DupRate]) are sent to POST /v1/orders, round robin over
//     [Config.APIs], each with an Idempotency-Key;
//  3. settle: every accepted order is long-polled with GET /v1/orders/{id}?wait=
//     until it is final; settling runs concurrently with submission, with its
//     own bounded pool. Then each key whose every send got no answer, a 5xx
//     or a 202 without an order id (its fate unknown: the server may have
//     created the order) is re-sent once with the same Idempotency-Key and
//     body (to the next API while one gives no answer), and the order it is
//     answered with is settled too; a key that no send got an answer for is
//     a violation (an answer whose body could not be read is none, unless a
//     5xx);
//  4. verify: the products are read back, every order that settled final is
//     read once more (a final order must not change), and [Verify] checks
//     the collected [Observations] (a pure function, so tests can plant
//     violations);
//  5. report: a [Report] with throughput, status and outcome mixes, HdrHistogram
//     latencies, queue depth and every [Violation].
//
// The package only talks to the URLs it is given, bounds every loop in count
// and time, and does not log: progress goes to [Config.Progress] when set.
package loadtest
