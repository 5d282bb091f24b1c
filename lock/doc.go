// Package lock is a distributed lock on Redis: one node, or a majority of N
// independent nodes (Redlock), with fencing tokens, a renewing watchdog, a
// lost-lock signal, pub/sub wake-ups and metrics hooks.
//
//	c, err := lock.NewFromURLs(urls, &lock.Options{TTL: 10 * time.Second})
//	...
//	l, err := c.Acquire(ctx, "sku:42")          // blocks until acquired or ctx ends
//	if err != nil { ... }
//	defer l.Release(ctx)
//	err = store.Update(l.Context(), l.Token(), ...) // aborted if the lock is lost
//
// # Acquisition
//
// An attempt runs acquire.lua on every node in parallel, each call bounded by
// [Options.NodeTimeout]. The script does SET key value NX PX ttl with a fresh
// random value (crypto/rand, 128 bits) and, only when the SET succeeded,
// INCR of the key's fence counter, atomically. The attempt succeeds once a
// majority (N/2+1) of nodes said yes: it does not wait for slow or paused
// nodes beyond that. The lock is then valid until start + TTL − drift, with
// drift = TTL*DriftFactor + 2ms and start the time the attempt began; that
// is TTL − elapsed − drift from when it is returned. A failed attempt runs
// release.lua (owner-checked DEL) on every node that may hold its value:
// before returning on the nodes that answered, and as soon as they answer on
// those that timed out.
//
// [Client.Acquire] waits: after a failed attempt it subscribes to the key's
// channel on every node (one shared PubSub connection per node per Client;
// release.lua publishes the released value there; a Client ignores its own
// values, whose releases wake its waiters locally, so that the clean-up of
// its own failed attempt does not wake it) and retries when woken, or after a jittered
// poll in [PollMin, PollMax], shortened to the holder's remaining TTL when
// that is known (the holder may have died without releasing). Goroutines of
// one Client waiting for the same key queue locally in FIFO order, so only
// one of them contends at the nodes, and while another goroutine of the
// same Client holds the key the queue waits for its release without asking
// the nodes. When contenders split the nodes so that none has a majority,
// each backs off a random few milliseconds; after three such rounds in a
// row (most likely a holder with just a majority, whose free node the
// waiter wins every time) it waits as for a busy lock. Waiting is not fair
// across clients. [Client.TryAcquire] makes one attempt.
//
// # Errors
//
// Every failed acquisition of a valid key matches [ErrNotObtained] (an
// empty key gives [ErrInvalidKey] alone). It also matches [ErrNoQuorum]
// when nodes were unreachable (as opposed to held by another owner), the
// context's error when the context ended, and [ErrClosed] after Close;
// [CauseOf] turns the error into a metrics label. [Lock.Extend] and
// [Lock.Release] return [ErrNotHeld] when the lock is no longer held. Extend
// runs extend.lua, which only resets the TTL of a key that still holds this
// lock's value: an expired lock is never silently re-acquired.
//
// # Watchdog and the lost-lock signal
//
// While a lock is held, a timer extends it every [Options.RenewInterval]
// (TTL/3), retrying every RenewInterval/4 after a failure. A second timer
// fires at the validity deadline: if no extension succeeded by then,
// [Lock.Context] is cancelled at once with cause [ErrLost]. It is also
// cancelled immediately when an extension finds the key gone or owned by
// someone else on enough nodes that a majority is impossible. Run the
// guarded work under Lock.Context so that it stops when the lock may be
// gone. Release, loss and [Client.Close] stop the timers. A lost lock's
// value is then removed, in the background, from the nodes that may still
// hold it, so that the key frees before its TTL. [Observer] and
// [Client.Stats] report acquisitions, wait time, failures by cause,
// renewals, losses and releases; the package never logs.
//
// # Fencing tokens
//
// [Lock.Token] is the fencing token. The storage must remember the highest
// token that wrote and refuse older ones, in the same statement as the
// write, for example
//
//	UPDATE stock SET n = n - 1, fence = $token
//	WHERE sku = $sku AND fence <= $token AND n > 0
//
// The fence counter lives in the key <prefix>{key}:fence on each node; it
// never expires and is never deleted, so tokens do not go back when the lock
// key expires or is deleted. With one node the token is that node's INCR. With
// N nodes the token T is the maximum INCR result over the majority that
// granted the lock; the nodes of that majority whose counter is below T are
// raised to T (fence.lua: counter = max(counter, T)) and the lock is returned
// only when a majority holds a counter >= T. So for every token issued, a
// majority of nodes holds a counter >= T, any later majority contains one of
// those nodes, and its INCR yields more than T. The other nodes (those that
// answered late, busy or with an error) are raised to T in the background,
// best effort.
//
// Guarantees when nodes lose their data (restart without persistence):
//
//   - N nodes, fewer than a majority of them restart empty: tokens keep
//     increasing, provided the last token had reached the nodes that did not
//     restart. A token reaches all reachable nodes shortly after it is issued
//     (a majority before Acquire returns), so this holds whenever every node
//     was reachable when the last token was issued; each node that was
//     unreachable then lowers the number of restarts tolerated by one.
//   - A majority of nodes (or the single node in 1-node mode) restarting
//     empty can make tokens go back. The storage then sees a token lower than
//     its fence and refuses the write; call [Client.AdvanceFence] with the
//     storage's fence to move the counters past it.
//
// Run the nodes with appendfsync always, or keep a restarted node out for at
// least the TTL, to avoid both this and the mutual exclusion hazard below.
//
// # Hazards
//
// No lease-based lock can guarantee mutual exclusion on its own. A holder
// that stalls after acquiring (a GC pause, SIGSTOP, a slow disk, a delayed
// network packet) may resume after its lock expired and another client took
// it; its context is cancelled, but a write already on its way can still
// reach the storage. Only the storage's fencing check rejects that write.
// Validity is measured with this process's monotonic clock while Redis
// expires keys by its own wall clock: a node whose clock jumps forward
// expires keys early. With N nodes, a node that restarts empty while it held
// a lock can let a rival reach a majority (redsync #186) unless restarts are
// delayed by the TTL or writes are fsynced. In all these cases the fencing
// token still lets the storage keep the data right, except when a majority
// of nodes lost their counters too (see above).
//
// # Redis keys
//
// With the default prefix "lock:", the lock for key k uses
// "lock:{k}" (owner value with TTL), "lock:{k}:fence" (counter) and the
// pub/sub channel "lock:{k}:released". The braces make both keys hash to one
// Redis Cluster slot.
package lock
