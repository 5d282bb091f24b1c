// Package bench is `make bench`: it measures the product end to end on this
// machine, next to baselines built for the comparison, and renders the
// tables of BENCHMARKS.md.
//
// One [Run] claims a Redis database of its own (flushed between parts and at
// the end) and creates a PostgreSQL database per part (dropped after it),
// then measures, each with the same number of orders:
//
//   - the queue ceiling: no-op tasks through asynq, enqueued by as many
//     producer processes as there are API servers and consumed by as many
//     consumer processes as there are workers, with the worker's asynq
//     settings (helper programs of this package, not the product);
//   - the HTTP front: each order a POST to a gin server (a helper program)
//     that enqueues it with the API's enqueue call for the same no-op
//     consumers, then a GET answered from memory, sent by this package: a
//     floor for an accepted order over gin and asynq;
//   - hot, spread, backlog and one-by-one: the flashsale binary's API and
//     worker processes ([cluster]), driven and verified by [loadtest];
//   - lock-in-request: the design the system grew from, an HTTP handler that
//     takes the product lock, decrements stock and releases it, answering
//     429 when the lock is busy (a helper program of this package, using
//     the lock package), driven by the same load test.
//
// The helper programs run from Config.Helper: a binary whose main (or
// TestMain) hands its arguments to [HelperMain] when [IsHelper] says so.
// Everything talks to 127.0.0.1 only, is bounded in time, and is stopped
// and cleaned up when Run returns.
package bench
