package worker

import (
	"context"
	_ "embed"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/notify"
	"github.com/flashsale/flashsale/queue"
)

// Crash recovery.
//
// asynq hands a crashed worker's task to another worker only after the
// task's 30s lease has expired and its recoverer has run (once a minute,
// taking leases expired at least 30s ago), then adds the retry delay: up to
// about two minutes. A task can also be stranded with no worker at all: the
// dequeue script moved it to the active list but its reply never reached
// the worker (a read timeout after a pause, a dropped connection), and
// go-redis, retrying the timed-out script, dequeued the next task instead.
//
// The rescuer shortens both. Every RescueInterval (2s) one worker of the
// fleet, the leader (the holder of the "rescuer:<queue>" lock, see below),
// lists the queue's active tasks and the tasks each live asynq server says
// it runs. A task is rescued when asynq reports its lease lapsed, or when
// it has been held by no live server in two of the leader's scans at least
// UnheldGrace (7s) apart: a live server lists its tasks every 5s (asynq's
// heartbeat), so a task unlisted for 7s has no holder. Rescuing means: if
// the order has no outcome recorded, enqueue a rescue task with the same
// order; asynq's own recovery of the stranded task later runs it once more,
// and that run finds the order decided and changes nothing. A rescue task
// stranded in turn is rescued too, up to queue.MaxRescueDepth (4) in a
// chain; one deeper is left to asynq's own recovery (about two minutes).
//
// One scanner for the fleet. A scan reads every active task of the fleet
// (workers × Concurrency) and a page of buried orders, so a scan by every
// worker every interval (as the lock once allowed: taken and released at
// each scan, it only kept two scans from overlapping) cost the fleet a
// number of reads growing with the square of its workers. Instead the
// worker that takes the lock keeps it, renewed by the lock's watchdog, and
// scans every interval; each other worker tries for the lock once an
// interval (one call to the lock nodes, jittered) and takes over when the
// leader stops: within an interval when it shuts down (Shutdown ends the
// scans, then releases the lock, before asynq stops taking tasks), within
// the lock's TTL (10s by default) and an interval when it dies or pauses,
// as its lock then expires. A leader whose lock's context ends (renewals
// failed until its validity ran out, or the key taken over) stops at once,
// its scan too, and tries again as the others do.
//
// Why a held lock, and not a schedule of the fleet's like the archive
// sweep's (below: one sweep per interval, on whichever worker comes
// first): the unheld grace needs two scans, UnheldGrace apart, by one
// worker, which remembers what it saw. Spread over N workers, each
// worker's own scans would be about N intervals apart, and a stranded
// task would wait about N intervals more (40s more with 20 workers); a
// leader's scans are an interval apart, and its map of unheld tasks is
// the fleet's latest. Keeping that map in Redis instead would cost every
// scan writes for nothing while the leader lives. A new leader starts with
// an empty map: it knows nothing of the old leader's scans, and a task it
// remembers from a tenure of its own long ago may have been held since.
// That delays the rescue of a task the old leader had already seen unheld
// by up to a grace period (it must be seen unheld twice again), never
// rescues one sooner; a task whose lease lapsed is rescued at the new
// leader's first scan. The buried orders' cursor and the tooDeep log are
// the worker's own and carry over from one of its tenures to the next
// (a new leader goes on from wherever its own last sweep of the buried
// orders stopped: at worst orders are read again, or a page waits for the
// next round of the hash).
//
// A leader that keeps failing must not keep the lock, renewed by its
// watchdog, while no scan succeeds: its own connections may be what fails
// (a pool stuck, a host cut off from the queue's Redis or from PostgreSQL
// but not from the lock nodes). Nor may it give the lock up at its first
// failed scan: an outage that fails every worker's scans (PostgreSQL down
// fails recording the buried orders that such an outage brings; the rescue
// itself goes on without it) would then hand the lock round at every scan,
// and with every leader starting over, no task would ever be seen unheld
// twice. So a leader gives the lock up after a failed scan that started at
// least UnheldGrace after the first of its failed scans in a row (a task it
// saw unheld at that first one has been rescued by then), and sits out its
// next try, so that another worker takes over: a leader whose every scan
// fails keeps the lock for about a grace period and an interval (about 9s),
// or for two scans when each hangs until RescueTimeout (about 22s). During
// an outage that fails every leader's scans, the lock goes round at that
// pace, and an unheld task may wait up to one such tenure more.
//
// The bound for a SIGKILLed worker: its server entry expires at most 10s
// after its last heartbeat, the leader's next scan sees its tasks unheld
// within 2s, a scan at least 7s later (within 9s) rescues them, and another
// worker decides them moments later: about 21s after the crash, well within
// the 60s promised. When the leader itself dies, its lock expires at most
// a TTL after its last renewal (renewals come every TTL/3, so as early as
// about 6.7s after the crash at the default TTL of 10s, possibly before its
// server entry has expired: the new leader's first scans may still see the
// dead worker's tasks held); a follower takes the lock within about 2.4s
// and scans at once, and sees the tasks unheld from when the entry expires
// (at most 10s after the crash), rescuing them within 9s more: about 22s
// after the crash, the entry's expiry setting the worst case; with a TTL
// above 10s, about TTL + 12s
// (a TTL over about 45s breaks the 60s promise, as the dead worker's
// product locks, held as long, already do). A stranded dequeue is rescued
// within about 11s, or a grace period later if the leader changed
// meanwhile.
//
// A paused worker (SIGSTOP) drops out of the server list 10s into its
// pause; its tasks may then be rescued. If it resumes, its run of the order
// is a replay or is refused by the fencing token. A paused leader loses the
// rescuer lock once its TTL has run out (another worker then leads), and
// on resuming, its lock's context ends and it scans no more.

// rescueLimit bounds the orphans handled per scan.
const rescueLimit = 5000

// Dead orders. A task whose last try failed is archived by asynq; its
// handler records the order failed first, so that the buyer's answer
// outlives the archive (which asynq trims to 10,000 tasks, deleting the
// oldest). When that record failed too (PostgreSQL down: often why the
// tries ran out), the handler buries the order (queue.Inspector.Bury) and
// every scan records the failure of up to archivePage buried orders that no
// task of theirs can still decide, then unburies them: archivePage orders
// per scan (2s) once PostgreSQL answers.
//
// As a backstop for an order archived without being buried (Redis failed as
// well), the whole archive is swept the same way, a page of archivePage
// tasks at a time (at most 20 pages: three queries each), once every
// archiveEvery rescue intervals for the whole fleet, however many workers
// it has: so an archived order is reached within about 30s. The sweep's
// schedule and cursor are the fleet's, in the queue's Redis (sweep.lua,
// keys <KeyPrefix>archive-sweep:{<queue>} and its ":page"): at a scan, the
// leader (the holder of the rescuer lock) sweeps if no sweep ran within the interval (a
// marker set for the interval as a sweep starts, SET NX PX, and again as it
// ends, so that a sweep longer than the interval is not followed by another
// at once, and so that Redis's clock times it), and starts from the page
// where the last sweep stopped, on whichever worker: a sweep that the
// scan's deadline (RescueTimeout) or an error cuts short goes on from its
// page at the next sweep. With no marker (a fleet starting), the first scan
// sweeps. When Redis cannot say (an error reading the marker or the
// cursor), the leader sweeps all the same, on its own schedule (once an
// interval) and from the last page it knows: an error must not skip a due
// sweep; at worst a new leader sweeps at its first such scan, although the
// last leader has just swept.
//
// The rescuer lock keeps two sweeps from running at once, except after the
// lock is lost: the scan's context ends with the lock, but a holder paused
// past the lock's TTL goes on until its watchdog notices, and another
// worker may sweep meanwhile once the marker has expired. At worst that is
// a duplicate sweep: the same orders looked at twice, which is harmless
// (recording an order failed again is a replay, and queuing the same rescue
// again is refused, queue.ErrDuplicate), and of the two cursors saved, the
// last wins: the next sweep may read pages again, or skip pages the other
// has just read; every page is still read within about two intervals.
const (
	archiveEvery = 15 // rescue intervals: about 30s at the default RescueInterval
	archivePage  = 500
	// sweepCursorTTL is how long the sweep's cursor outlives the last
	// sweep: a queue no longer served leaves no key behind.
	sweepCursorTTL = 24 * time.Hour
)

//go:embed sweep.lua
var sweepLua string

var sweepScript = redis.NewScript(sweepLua)

// archiveSweep is a worker's view of the fleet's archive sweeps.
type archiveSweep struct {
	page int       // where the next sweep starts, as last known here
	due  time.Time // the next sweep of this worker's own, when Redis cannot say
}

// sweepKey is the marker of a sweep run within the archive interval,
// and sweepPageKey the page the next sweep starts from (one cluster slot).
func (w *Worker) sweepKey() string     { return w.prefix + "archive-sweep:{" + w.cfg.Queue.Queue + "}" }
func (w *Worker) sweepPageKey() string { return w.sweepKey() + ":page" }

// rescuerKey is the key of the rescuer lock: its holder leads the rescue
// scans of the queue's fleet (see above).
func (w *Worker) rescuerKey() string { return "rescuer:" + w.cfg.Queue.Queue }

// rescuer is what a worker keeps of its rescue scans from one of its
// tenures as leader to the next.
type rescuer struct {
	in   *queue.Inspector
	prod *queue.Producer
	// tooDeep holds the orders whose stranded task was found at the end of
	// its rescue chain at the last scan, so each is logged once, not at
	// every scan until asynq's own recovery runs it.
	tooDeep map[string]bool
	archive archiveSweep
	buried  uint64 // where the next sweep of buried orders starts
}

// runRescuer leads the fleet's rescue scans while this worker holds the
// rescuer lock, and tries for the lock once an interval while another
// worker does (see "One scanner for the fleet" above), until ctx ends. It
// releases the lock as it returns.
func (w *Worker) runRescuer(ctx context.Context, in *queue.Inspector, prod *queue.Producer) {
	r := &rescuer{in: in, prod: prod, tooDeep: map[string]bool{}, archive: archiveSweep{page: 1}}
	sitOut := false
	for {
		// Jitter spreads the followers' attempts at the lock.
		d := time.Duration(float64(w.cfg.RescueInterval) * (0.8 + 0.4*rand.Float64()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		if sitOut {
			sitOut = false // another worker's turn to take the lock
			continue
		}
		l, err := w.locks.TryAcquire(ctx, w.rescuerKey())
		if err != nil {
			continue // another worker leads, or the lock nodes are down
		}
		w.metrics.rescueLeader.Set(1)
		sitOut = w.lead(ctx, l, r)
		w.metrics.rescueLeader.Set(0)
		w.release(l)
	}
}

// lead scans at once, then every RescueInterval, while l is held and ctx
// lasts. It returns true when it gives the lock up because its scans keep
// failing (see above); the caller releases l.
func (w *Worker) lead(ctx context.Context, l *lock.Lock, r *rescuer) (failing bool) {
	// unheld remembers when this tenure's scans first saw each task held
	// by no live server; a task later seen held, or no longer active, is
	// forgotten. It starts empty (see above). A wrong rescue (a holder's
	// heartbeat late by more than 2s) costs a replay, not an order.
	unheld := make(map[string]time.Time)
	lost := func() bool {
		w.cfg.Logger.Warn("lost the rescuer lock; another worker may lead the rescue scans", "cause", context.Cause(l.Context()))
		return false
	}
	var failedFrom time.Time // the start of the first failed scan in a row
	for {
		start := time.Now()
		err := w.scan(ctx, l, r, unheld)
		switch {
		case ctx.Err() != nil:
			return false // shutdown
		case l.Context().Err() != nil:
			return lost()
		case err == nil:
			failedFrom = time.Time{}
		case failedFrom.IsZero():
			failedFrom = start
		}
		if !failedFrom.IsZero() && start.Sub(failedFrom) >= w.cfg.UnheldGrace {
			w.cfg.Logger.Warn("rescue scans keep failing; giving the rescuer lock to another worker",
				"failing_for", time.Since(failedFrom).Round(time.Millisecond).String(), "err", err)
			return true
		}
		select { // no jitter: no other worker scans meanwhile
		case <-ctx.Done():
			return false
		case <-l.Done():
			return lost()
		case <-time.After(w.cfg.RescueInterval):
		}
	}
}

// scan runs one rescue scan under l, and returns its error.
func (w *Worker) scan(ctx context.Context, l *lock.Lock, r *rescuer, unheld map[string]time.Time) error {
	// The scan ends with the lock (lost), with the worker (shutdown,
	// which waits for it before asynq stops taking tasks), or after
	// RescueTimeout (a stuck call; the next scan starts with the stranded
	// tasks again).
	sctx, cancel := context.WithTimeout(l.Context(), w.cfg.RescueTimeout)
	stop := context.AfterFunc(ctx, cancel)
	var err error
	if w.onRescueScan != nil {
		err = w.onRescueScan()
	}
	var ids, deep, dead []string
	if err == nil {
		ids, deep, err = w.rescue(sctx, r.in, r.prod, unheld, time.Now())
	}
	if err == nil {
		dead, r.buried, err = w.recordBuried(sctx, r.in, r.buried)
	}
	if err == nil && w.claimSweep(sctx, &r.archive, time.Now()) {
		var archived []string
		archived, err = w.sweepArchive(sctx, r.in, r.prod, &r.archive)
		dead = append(dead, archived...)
		w.endSweep(r.archive)
	}
	stop()
	cancel()
	if err != nil && ctx.Err() == nil {
		w.cfg.Logger.Warn("rescue scan failed", "err", err)
	}
	if len(ids) > 0 {
		w.cfg.Logger.Warn("re-queued orders of a crashed worker", "orders", len(ids), "order_ids", ids[:min(len(ids), 20)])
	}
	var newlyDeep []string
	for _, id := range deep {
		if !r.tooDeep[id] {
			newlyDeep = append(newlyDeep, id)
		}
	}
	if err == nil {
		r.tooDeep = make(map[string]bool, len(deep))
	}
	for _, id := range deep {
		r.tooDeep[id] = true
	}
	if len(newlyDeep) > 0 {
		w.cfg.Logger.Warn("orders stranded at the end of their rescue chain, left to asynq's own recovery (about two minutes)",
			"orders", len(newlyDeep), "order_ids", newlyDeep[:min(len(newlyDeep), 20)], "max_depth", queue.MaxRescueDepth)
	}
	if len(dead) > 0 {
		w.cfg.Logger.Warn("recorded dead orders failed (buried or archived without an outcome)", "orders", len(dead), "order_ids", dead[:min(len(dead), 20)])
	}
	return err
}

// claimSweep reports whether the fleet's archive sweep is due at this scan;
// if so, it marks the sweep started and sets s.page to the page it starts
// from (see archiveEvery). When Redis cannot say, it answers from this
// worker's own schedule and keeps s.page.
func (w *Worker) claimSweep(ctx context.Context, s *archiveSweep, now time.Time) bool {
	every := archiveEvery * w.cfg.RescueInterval
	page, err := sweepScript.Run(ctx, w.rdb, []string{w.sweepKey(), w.sweepPageKey()}, every.Milliseconds(), w.id).Int()
	switch {
	case err == nil && page == 0:
		return false // swept within the interval
	case err == nil:
		s.page = page
	case ctx.Err() != nil:
		return false // the scan is over: lock lost, shutdown or RescueTimeout
	default:
		w.cfg.Logger.Warn("could not read the archive sweep's schedule; sweeping on this worker's own",
			"err", err, "due", !now.Before(s.due), "page", s.page)
		if now.Before(s.due) {
			return false
		}
	}
	s.due = now.Add(every)
	return true
}

// endSweep stores s.page as the page the fleet's next archive sweep starts
// from, and sets the marker again for an interval from now. It does so
// even when the scan's context has ended (a sweep cut short: saving its
// page is why), with a bound of its own: a failure costs pages read again,
// or a sweep an interval after this one started rather than ended.
func (w *Worker) endSweep(s archiveSweep) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, w.sweepPageKey(), s.page, sweepCursorTTL)
		p.Set(ctx, w.sweepKey(), w.id, archiveEvery*w.cfg.RescueInterval)
		return nil
	}); err != nil {
		w.cfg.Logger.Warn("could not save the archive sweep's page", "err", err, "page", s.page)
	}
}

// sweepArchive records failed the orders without an outcome or a live task
// in the archive's pages from s.page on, until the last page (then s.page
// goes back to 1) or an error (s.page is the page that failed), and returns
// their ids.
//
// A sweep whose first page is past the archive's end (the archive shrank
// since the cursor was saved: deleted by hand, or trimmed) goes on from page
// 1 at once: else the orders archived meanwhile waited for the next sweep,
// an interval later.
func (w *Worker) sweepArchive(ctx context.Context, in *queue.Inspector, prod *queue.Producer, s *archiveSweep) ([]string, error) {
	var dead []string
	for first := true; ; first = false {
		if w.onArchivePage != nil {
			if err := w.onArchivePage(s.page); err != nil {
				return dead, err
			}
		}
		archived, last, empty, err := w.recordArchived(ctx, in, prod, s.page)
		dead = append(dead, archived...)
		switch {
		case err != nil:
			return dead, err
		case last && empty && first && s.page > 1:
			s.page = 1 // past the end: the archive shrank
			continue
		case last:
			s.page = 1
			return dead, nil
		}
		s.page++
	}
}

// recordArchived records failed the orders of the archive's page page that
// have no outcome and no live task (see archiveEvery), and returns their
// ids, whether page was the last, and whether it held no order (past the
// archive's end, when last). An undecided order whose task asynq's
// recoverer archived (its last try cut short by a crash, not failed by a
// handler) is queued again as a rescue instead, as the rescue scan would
// have done had it seen the task first; it is recorded failed only if that
// rescue cannot be queued (its chain is at its end, or its rescue task
// exists and is dead too).
func (w *Worker) recordArchived(ctx context.Context, in *queue.Inspector, prod *queue.Producer, page int) (ids []string, last, empty bool, err error) {
	archived, last, err := in.Archived(ctx, page, archivePage)
	if err != nil || len(archived) == 0 {
		return nil, last, err == nil, err
	}
	orders := make([]queue.Order, len(archived))
	var cut []string
	for i, a := range archived {
		orders[i] = a.Order
		if a.LeaseExpired {
			cut = append(cut, a.Order.ID)
		}
	}
	if len(cut) > 0 {
		decided, err := w.store.Orders(ctx, cut)
		if err != nil {
			return nil, false, false, err
		}
		var rescued []string
		for _, a := range archived {
			if _, done := decided[a.Order.ID]; !a.LeaseExpired || done {
				continue
			}
			switch err := prod.Rescue(ctx, a.TaskID, a.Order); {
			case err == nil:
				rescued = append(rescued, a.Order.ID)
				w.metrics.rescued.Inc()
			case errors.Is(err, queue.ErrRescueDepth), errors.Is(err, queue.ErrDuplicate):
				// Recorded below unless a task of it is live.
			default:
				return nil, false, false, err
			}
		}
		if len(rescued) > 0 {
			w.cfg.Logger.Warn("re-queued orders whose last try a crash cut short (archived by asynq's recoverer)",
				"orders", len(rescued), "order_ids", rescued[:min(len(rescued), 20)])
		}
	}
	ids, _, err = w.recordDead(ctx, in, orders)
	return ids, last, false, err
}

// recordBuried records failed the buried orders from cursor on that have no
// outcome and no live task, unburies those that have one now, and returns
// the ids it recorded and the cursor of the next sweep.
func (w *Worker) recordBuried(ctx context.Context, in *queue.Inspector, cursor uint64) ([]string, uint64, error) {
	orders, next, err := in.Buried(ctx, cursor, archivePage)
	if err != nil || len(orders) == 0 {
		return nil, next, err
	}
	ids, settled, err := w.recordDead(ctx, in, orders)
	if err != nil {
		return nil, cursor, err
	}
	return ids, next, in.Unbury(ctx, settled...)
}

// recordDead records failed those of orders that have no outcome and no
// live task: neither their own (a buried order's task put back by a
// shutdown) nor a rescue task (queued or running, it will decide its
// order). It returns the ids it recorded, and those that have an outcome
// now (recorded here or before) or can have none (an unknown product's).
func (w *Worker) recordDead(ctx context.Context, in *queue.Inspector, orders []queue.Order) (ids, settled []string, err error) {
	orderIDs := make([]string, len(orders))
	var tasks []string
	for i, o := range orders {
		orderIDs[i] = o.ID
		tasks = append(tasks, queue.TaskIDs(o.ID)...)
	}
	decided, err := w.store.Orders(ctx, orderIDs)
	if err != nil {
		return nil, nil, err
	}
	states, err := in.States(ctx, tasks)
	if err != nil {
		return nil, nil, err
	}
	per := len(tasks) / len(orders)
	live := func(i int) bool {
		for _, s := range states[i*per : (i+1)*per] {
			if s == queue.Waiting || s == queue.Running {
				return true
			}
		}
		return false
	}
	var reqs []inventory.OrderRequest
	for i, o := range orders {
		_, done := decided[o.ID]
		switch {
		case done:
			settled = append(settled, o.ID)
		case live(i):
		default:
			reqs = append(reqs, inventory.OrderRequest{ID: o.ID, ProductID: o.ProductID, UserID: o.UserID,
				Quantity: o.Quantity, IdempotencyKey: o.IdempotencyKey, AcceptedAt: o.AcceptedAt})
		}
	}
	if len(reqs) == 0 {
		return nil, settled, nil
	}
	ds, err := w.store.RecordFailed(ctx, reqs, reasonGaveUp)
	if err != nil && refusedValue(err) {
		// PostgreSQL refused a value of one of them (an Idempotency-Key
		// another order id of the buyer holds: a task the API did not
		// make), which fails the whole
		// transaction: record them one at a time, so that the refused
		// one fails alone, and settle it, as it can have no outcome.
		// Else it failed every page it is on, at every scan, and the
		// buried orders' cursor and the archive sweep never passed it.
		ds, err = w.recordFailedOneByOne(ctx, reqs)
	}
	if err != nil {
		return nil, nil, err
	}
	var outcomes []notify.Outcome
	for i, d := range ds {
		settled = append(settled, reqs[i].ID)
		// Not an unknown product's order (nothing to record it against),
		// nor one decided meanwhile.
		if d.Err == nil && !d.Replay {
			ids = append(ids, reqs[i].ID)
			outcomes = append(outcomes, outcome(d.Order))
		}
	}
	w.metrics.orders.WithLabelValues(string(inventory.StatusFailed)).Add(float64(len(ids)))
	if len(outcomes) > 0 { // long polls may still wait on them
		w.announce(ctx, outcomes)
	}
	return ids, settled, nil
}

// recordFailedOneByOne records reqs failed one transaction each, after
// their batch failed with a value PostgreSQL refused; an order refused
// alone gets a Decision with that error (settled, not counted). Error
// paths only.
func (w *Worker) recordFailedOneByOne(ctx context.Context, reqs []inventory.OrderRequest) ([]inventory.Decision, error) {
	out := make([]inventory.Decision, len(reqs))
	for i, r := range reqs {
		ds, err := w.store.RecordFailed(ctx, []inventory.OrderRequest{r}, reasonGaveUp)
		switch {
		case err == nil:
			out[i] = ds[0]
		case refusedValue(err):
			w.cfg.Logger.Error("a dead order that PostgreSQL refuses to store is given up unrecorded",
				"order_id", r.ID, "product_id", r.ProductID, "err", err)
			out[i] = inventory.Decision{Err: err}
		default:
			return nil, err
		}
	}
	return out, nil
}

// rescue re-queues the undecided orders of stranded tasks (see above) and
// returns their ids, and those of undecided orders whose stranded task is
// the last rescue its chain allows (queue.ErrRescueDepth). unheld is
// updated to the tasks unheld at now.
func (w *Worker) rescue(ctx context.Context, in *queue.Inspector, prod *queue.Producer, unheld map[string]time.Time, now time.Time) (ids, deep []string, err error) {
	tasks, err := in.Active(ctx, rescueLimit)
	if err != nil {
		return nil, nil, err
	}
	var stranded []queue.ActiveTask
	seen := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		if !t.Held {
			seen[t.TaskID] = true
			if _, ok := unheld[t.TaskID]; !ok {
				unheld[t.TaskID] = now
			}
		}
		if t.Orphaned || (!t.Held && now.Sub(unheld[t.TaskID]) >= w.cfg.UnheldGrace) {
			stranded = append(stranded, t)
		}
	}
	for id := range unheld {
		if !seen[id] {
			delete(unheld, id)
		}
	}
	// Which of their orders are decided, in one query with a deadline of
	// its own: when PostgreSQL cannot say (an outage, often why a task was
	// on its last try; or a hung call), rescue them all anyway: a rescue
	// task decides its order, or finds it decided, which changes nothing.
	// Otherwise a crash during an outage left its tasks to asynq's
	// recoverer, which archives a last try with nothing buried, and a hung
	// lookup held every later scan at the same task.
	orderIDs := make([]string, len(stranded))
	for i, t := range stranded {
		orderIDs[i] = t.Order.ID
	}
	lctx, cancel := context.WithTimeout(ctx, min(time.Second, w.cfg.RescueTimeout/4))
	decided, err := w.store.Orders(lctx, orderIDs)
	cancel()
	if err != nil {
		if ctx.Err() != nil || !(errors.Is(err, inventory.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)) {
			return nil, nil, err
		}
		decided = nil
	}
	for _, t := range stranded {
		o := t.Order
		if _, ok := decided[o.ID]; ok {
			continue // decided; asynq will retire the stranded task
		}
		switch err := prod.Rescue(ctx, t.TaskID, o); {
		case err == nil:
			ids = append(ids, o.ID)
			w.metrics.rescued.Inc()
		case errors.Is(err, queue.ErrRescueDepth):
			deep = append(deep, o.ID)
		case errors.Is(err, queue.ErrDuplicate):
		default:
			return ids, deep, err
		}
	}
	return ids, deep, nil
}
