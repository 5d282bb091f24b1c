package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/queue/queuetest"
	"github.com/flashsale/flashsale/worker"
)

// fleetScans records the rescue scans of a fleet of workers: when each
// started, and on which worker (its index).
type fleetScans struct {
	mu sync.Mutex
	at []time.Time
	by []int
}

// watchScans records the rescue scans of ws; fail, if not nil, is called
// at each (with the worker's index) and fails the scan with its error. Call
// it before the workers start.
func watchScans(ws []*worker.Worker, fail func(i int) error) *fleetScans {
	s := &fleetScans{}
	for i, w := range ws {
		worker.OnRescueScan(w, func() error {
			s.mu.Lock()
			s.at, s.by = append(s.at, time.Now()), append(s.by, i)
			s.mu.Unlock()
			if fail != nil {
				return fail(i)
			}
			return nil
		})
	}
	return s
}

// snapshot returns the scans so far.
func (s *fleetScans) snapshot() ([]time.Time, []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.at), slices.Clone(s.by)
}

// wait waits, at most within, until cond holds of the scans so far, and
// returns them; cond says what has not happened yet.
func (s *fleetScans) wait(t *testing.T, within time.Duration, cond func(at []time.Time, by []int) error) ([]time.Time, []int) {
	t.Helper()
	var at []time.Time
	var by []int
	testenv.Eventually(t, within, func() error {
		at, by = s.snapshot()
		return cond(at, by)
	})
	return at, by
}

// startFleet starts n worker processes with cfg and lock TTL ttl on one
// queue, watching their rescue scans.
func startFleet(t *testing.T, cfg worker.Config, ttl time.Duration, n int) ([]*worker.Worker, *fleetScans) {
	t.Helper()
	e := newEnvWith(t, cfg, ttl)
	ws := []*worker.Worker{e.w}
	for range n - 1 {
		ws = append(ws, e.process(t, cfg, ttl))
	}
	scans := watchScans(ws, nil)
	e.start(t)
	for _, w := range ws[1:] {
		startProcess(t, w)
	}
	return ws, scans
}

// atLeast is a wait condition: n scans from the from-th on.
func atLeast(from, n int) func([]time.Time, []int) error {
	return func(at []time.Time, _ []int) error {
		if len(at)-from < n {
			return fmt.Errorf("%d rescue scans so far, want %d", len(at)-from, n)
		}
		return nil
	}
}

// The rescue scan is the fleet's: however many workers there are, about
// one scan runs per RescueInterval. Before, each worker scanned every
// interval (the rescuer lock only kept two scans from overlapping): here
// four workers scanned about four times an interval, and as each scan
// reads every active task of the fleet, the cost grew with the square of
// the workers.
func TestRescueScanIsTheFleets(t *testing.T) {
	t.Parallel()
	const interval = 100 * time.Millisecond
	cfg := worker.Config{RescueInterval: interval}
	ws, scans := startFleet(t, cfg, 5*time.Second, 4)
	const n = 12
	at, by := scans.wait(t, 30*time.Second, atLeast(0, n))
	per := make([]int, len(ws))
	for _, i := range by[:n] {
		per[i]++
	}
	t.Logf("scans per worker %v", per)
	wantOnePerInterval(t, "scans", at[:n], interval)
}

// wantOnePerInterval fails t unless the fleet's events (rescue scans,
// archive sweeps) at times at came about one per interval: on average at
// least 0.9 of it apart, and none closer than half of it.
func wantOnePerInterval(t *testing.T, what string, at []time.Time, interval time.Duration) {
	t.Helper()
	n := len(at)
	gaps := make([]time.Duration, n-1)
	for i := range gaps {
		gaps[i] = at[i+1].Sub(at[i]).Round(time.Millisecond)
	}
	t.Logf("%s %v apart (interval %v)", what, gaps, interval)
	if mean := at[n-1].Sub(at[0]) / time.Duration(n-1); mean < interval*9/10 {
		t.Errorf("%s %v apart on average, want about one per interval (%v) for the fleet; gaps %v", what, mean, interval, gaps)
	}
	if least := slices.Min(gaps); least < interval/2 {
		t.Errorf("two %s %v apart, want none closer than about an interval (%v); gaps %v", what, least, interval, gaps)
	}
}

// The worker that scans keeps scanning, and when it shuts down (releasing
// the rescuer lock), another one takes over within about an interval, not
// the lock's TTL; it then scans alone in turn.
func TestRescueScanIsTakenOverAtShutdown(t *testing.T) {
	t.Parallel()
	const interval = 50 * time.Millisecond
	const lockTTL = 5 * time.Second
	cfg := worker.Config{RescueInterval: interval}
	ws, scans := startFleet(t, cfg, lockTTL, 3)
	const n = 5
	_, by := scans.wait(t, 30*time.Second, atLeast(0, n))
	leader := by[0]
	if others := slices.IndexFunc(by, func(i int) bool { return i != leader }); others >= 0 {
		t.Fatalf("scans by workers %v, want all by one (the holder of the rescuer lock)", by)
	}
	stopping := time.Now()
	ws[leader].Shutdown() // its scans end with it, and it releases the lock
	at, by := scans.wait(t, 30*time.Second, func(_ []time.Time, by []int) error {
		first := slices.IndexFunc(by, func(i int) bool { return i != leader })
		if first < 0 || len(by)-first < n {
			return fmt.Errorf("rescue scans by %v, want %d by another worker than %d", by, n, leader)
		}
		return nil
	})
	first := slices.IndexFunc(by, func(i int) bool { return i != leader })
	took := at[first].Sub(stopping)
	t.Logf("worker %d scanned first %v after worker %d began to stop; scans since by %v", by[first], took.Round(time.Millisecond), leader, by[first:])
	// Not the lock's expiry (a TTL after its last renewal, at least two
	// thirds of a TTL from now): the leader released it as it stopped.
	if took > lockTTL/2 {
		t.Errorf("another worker took over the rescue scan %v after the leader began to stop, want within about an interval (%v)", took, interval)
	}
	for _, i := range by[first:] {
		if i != by[first] {
			t.Fatalf("scans after worker %d stopped by %v, want all by one other worker", leader, by[first:])
		}
	}
}

// A leader whose scans keep failing (here every scan, as if its Redis or
// PostgreSQL calls failed) gives the rescuer lock up, and another worker
// scans instead: it must not keep the lock, renewed by its watchdog,
// while no scan of the fleet succeeds. But not at its first failure: an
// outage that fails every worker's scans would hand the lock round at
// each scan (see TestRescuesGoOnWhileEveryScanFails).
func TestFailingRescueLeaderHandsOver(t *testing.T) {
	t.Parallel()
	const interval = 50 * time.Millisecond
	cfg := worker.Config{RescueInterval: interval, UnheldGrace: 300 * time.Millisecond}
	e := newEnvWith(t, cfg, 5*time.Second)
	ws := []*worker.Worker{e.w, e.process(t, cfg, 5*time.Second)}
	scans := watchScans(ws, func(i int) error {
		if i == 0 {
			return errors.New("injected: the scan's calls fail")
		}
		return nil
	})
	e.start(t)
	scans.wait(t, 30*time.Second, atLeast(0, 1)) // the first worker leads
	startProcess(t, ws[1])
	at, by := scans.wait(t, 30*time.Second, func(_ []time.Time, by []int) error {
		if !slices.Contains(by, 1) {
			return fmt.Errorf("only the failing worker scanned: %d scans", len(by))
		}
		return nil
	})
	first := slices.Index(by, 1)
	t.Logf("the second worker scanned first %v after the first worker's first failed scan, which failed %d scans",
		at[first].Sub(at[0]).Round(time.Millisecond), first)
	if first < 3 {
		t.Errorf("the failing leader gave the lock up after %d failed scans, want it kept for a few (a grace period)", first)
	}
	from := first + 1
	_, by = scans.wait(t, 30*time.Second, atLeast(from, 5))
	if slices.Contains(by[from:], 0) {
		t.Errorf("scans after the hand-over by %v, want all by the worker whose scans succeed", by[from:])
	}
}

// While PostgreSQL hangs (here the orders table is locked), every scan
// fails at RescueTimeout (recording a buried order waits on the table), but
// each still rescues the stranded tasks it finds first, rescuing them all
// when the database cannot say whether their orders were decided. A task
// held by no worker (its dequeue reply lost) is rescued once two scans of
// one leader UnheldGrace apart saw it unheld. Were the rescuer lock handed
// to another worker after each failed scan (or after the first failed scan
// longer than a grace period), every new leader would start over with what
// it saw, and with two workers no such task would be rescued during the
// outage.
func TestRescuesGoOnWhileEveryScanFails(t *testing.T) {
	t.Parallel()
	cfg := worker.Config{RescueInterval: 20 * time.Millisecond, UnheldGrace: 300 * time.Millisecond, RescueTimeout: time.Second}
	e := newEnvWith(t, cfg, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	ctx := context.Background()
	in := queue.NewInspector(e.rdb, e.queue)
	if err := in.Bury(ctx, queue.Order{ID: "b1", ProductID: "p", UserID: "u1", Quantity: 1, AcceptedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := e.producer(t).Enqueue(ctx, queue.Order{ID: "o1", ProductID: "p", UserID: "u2", Quantity: 1, AcceptedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	queuetest.Strand(t, e.rdb, e.queue.Queue, time.Now().Add(time.Minute))
	tx := e.lockTable(t, "orders")
	defer tx.Rollback(ctx)
	other := e.process(t, cfg, 5*time.Second)
	e.start(t)
	startProcess(t, other)
	e.waitRescued(t, in, "o1")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitSucceeded(t, "o1")
}

// The lock metrics are the product locks': a follower's try at the rescuer
// lock, once an interval, is no busy failure (before, every follower's try
// counted one, so flashsale_lock_failures_total{cause="busy"} rose all the
// time with no contention for any product), and the leader's hours-long
// hold no renewal or held-time sample. flashsale_worker_rescue_leader says
// which worker leads: 0 while another does, 1 once it has taken over.
func TestRescuerLockIsNoProductLockInTheMetrics(t *testing.T) {
	t.Parallel()
	const interval = 50 * time.Millisecond
	cfg := worker.Config{RescueInterval: interval}
	e := newEnvWith(t, cfg, 5*time.Second) // e's worker counts into e.reg
	other := e.process(t, cfg, 5*time.Second)
	scans := watchScans([]*worker.Worker{other, e.w}, nil)
	startProcess(t, other)
	scans.wait(t, 30*time.Second, atLeast(0, 1)) // other leads
	e.start(t)
	_, by := scans.wait(t, 30*time.Second, atLeast(0, 10))
	if slices.Contains(by, 1) {
		t.Fatalf("scans by %v, want all by the worker started first", by)
	}
	if busy := counter(t, e.reg, "flashsale_lock_failures_total", map[string]string{"cause": "busy"}); busy != 0 {
		t.Errorf("flashsale_lock_failures_total{cause=\"busy\"} = %v with no product locked, want 0: the follower's tries at the rescuer lock counted", busy)
	}
	if lead := counter(t, e.reg, "flashsale_worker_rescue_leader", nil); lead != 0 {
		t.Errorf("flashsale_worker_rescue_leader = %v on the follower, want 0", lead)
	}
	other.Shutdown()
	testenv.Eventually(t, 30*time.Second, func() error {
		if lead := counter(t, e.reg, "flashsale_worker_rescue_leader", nil); lead != 1 {
			return fmt.Errorf("flashsale_worker_rescue_leader = %v after the leader's shutdown, want 1", lead)
		}
		return nil
	})
	if n := counter(t, e.reg, "flashsale_lock_acquire_seconds", nil); n != 0 {
		t.Errorf("flashsale_lock_acquire_seconds counted %v acquisitions, want none: the rescuer lock's", n)
	}
}

// A leader gives the rescuer lock up only when its scans fail in a row for
// a grace period: one whose scans fail now and then (every other one here)
// keeps it. Were a success not to end a run of failures, it would hand the
// lock over a grace period after its first failure, and, with each new
// leader starting over with what it saw, a task held by no worker might
// never be seen unheld twice a grace period apart.
func TestRescueLeaderKeepsTheLockThroughOccasionalFailures(t *testing.T) {
	t.Parallel()
	const grace = 200 * time.Millisecond
	cfg := worker.Config{RescueInterval: 20 * time.Millisecond, UnheldGrace: grace}
	e := newEnvWith(t, cfg, 5*time.Second)
	ws := []*worker.Worker{e.w, e.process(t, cfg, 5*time.Second)}
	var n [2]int // scans per worker, each worker's scans one at a time
	scans := watchScans(ws, func(i int) error {
		n[i]++
		if n[i]%2 == 1 {
			return errors.New("injected: this scan's calls fail")
		}
		return nil
	})
	e.start(t)
	scans.wait(t, 30*time.Second, atLeast(0, 1)) // the first worker leads
	startProcess(t, ws[1])
	at, by := scans.wait(t, 30*time.Second, func(at []time.Time, _ []int) error {
		if d := at[len(at)-1].Sub(at[0]); d < 5*grace {
			return fmt.Errorf("scans over %v so far, want %v", d, 5*grace)
		}
		return nil
	})
	if i := slices.Index(by, 1); i >= 0 {
		t.Errorf("the second worker scanned %v after the first worker's first scan, whose every other scan fails; want the first to keep the lock (scans by %v)",
			at[i].Sub(at[0]).Round(time.Millisecond), by)
	}
}

// Shutdown ends a rescue scan in flight rather than waiting out its
// RescueTimeout: here the scan waits on a row held by another transaction
// (recording a buried order of that product), and the worker stops at
// once. A scan outliving Shutdown would hold the stop up by as much as
// RescueTimeout, past ShutdownBound when orders are in flight too, and meet
// clients the caller closes after Shutdown.
func TestShutdownEndsAStuckRescueScan(t *testing.T) {
	t.Parallel()
	const rescueTimeout = time.Minute
	e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond, RescueTimeout: rescueTimeout}, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	ctx := context.Background()
	in := queue.NewInspector(e.rdb, e.queue)
	if err := in.Bury(ctx, queue.Order{ID: "b1", ProductID: "p", UserID: "u1", Quantity: 1, AcceptedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	tx := e.holdRow(t, "p")
	e.start(t)
	e.waitBlockedBy(t, tx) // a scan waits for p's row
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		e.w.Shutdown()
	}()
	select {
	case <-done:
		t.Logf("Shutdown returned in %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(rescueTimeout / 4):
		t.Errorf("Shutdown still running %v into a stuck rescue scan, want it ended at once (RescueTimeout %v)", rescueTimeout/4, rescueTimeout)
		_ = tx.Rollback(ctx) // let the scan, and Shutdown, end
		<-done
	}
}

// A task held by no live server is rescued only once two scans an
// UnheldGrace apart saw it so: a live worker that has just dequeued a task
// lists it at its next heartbeat (5s), and rescuing it sooner runs its
// order twice. A task whose lease lapsed (its worker crashed) has no
// holder to wait for: it is rescued at once, however long the grace.
func TestRescueWaitsOutTheGraceUnlessTheLeaseLapsed(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond, UnheldGrace: time.Minute}, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	ctx := context.Background()
	prod := e.producer(t)
	for _, s := range []struct {
		id         string
		leaseUntil time.Time
	}{
		{"crashed", time.Now().Add(-time.Second)},
		{"unheld", time.Now().Add(time.Minute)},
	} {
		if err := prod.Enqueue(ctx, queue.Order{ID: s.id, ProductID: "p", UserID: "u-" + s.id, Quantity: 1, AcceptedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if got := queuetest.Strand(t, e.rdb, e.queue.Queue, s.leaseUntil); got != s.id {
			t.Fatalf("stranded %q, want %q", got, s.id)
		}
	}
	scans := e.countScans()
	e.start(t)
	e.waitSucceeded(t, "crashed")
	scans.waitScans(t, 3, 10*time.Second)
	in := queue.NewInspector(e.rdb, e.queue)
	if st, err := in.States(ctx, []string{"unheld" + queue.RescueSuffix}); err != nil || st[0] != 0 {
		t.Errorf("rescue task of the unheld task within its grace: state %v, %v; want none", st, err)
	}
	if got, err := e.store.Order(ctx, "unheld"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("order of the unheld task within its grace: %s, %v; want undecided", got.Status, err)
	}
}

// A leader that gives the rescuer lock up because its scans keep failing
// sits out its next try at the lock, so that another worker, whose tries
// come at the same pace, takes it: here, alone, it leads again only after
// two of its jittered waits (each at least 0.8 of an interval), not one.
// Else, with one other worker, it took the lock straight back about half
// the time, and went on failing for another grace period.
func TestFailingRescueLeaderSitsOutItsNextTry(t *testing.T) {
	t.Parallel()
	const interval = 500 * time.Millisecond
	const grace = 750 * time.Millisecond // its third scan, about 1s in, gives up
	e := newEnvWith(t, worker.Config{RescueInterval: interval, UnheldGrace: grace}, 5*time.Second)
	scans := watchScans([]*worker.Worker{e.w}, func(int) error { return errors.New("injected: the scan's calls fail") })
	e.start(t)
	at, _ := scans.wait(t, 30*time.Second, func(at []time.Time, _ []int) error {
		k := slices.IndexFunc(at, func(a time.Time) bool { return a.Sub(at[0]) >= grace })
		if k < 0 || len(at) < k+2 {
			return fmt.Errorf("%d scans so far", len(at))
		}
		return nil
	})
	k := slices.IndexFunc(at, func(a time.Time) bool { return a.Sub(at[0]) >= grace }) // the scan that gave up
	if gap := at[k+1].Sub(at[k]); gap < 2*interval*8/10 {
		t.Errorf("led again %v after the scan that gave the lock up, want at least %v (a try sat out); scans at %v after the first",
			gap.Round(time.Millisecond), 2*interval*8/10, sinceFirst(at))
	}
}

// sinceFirst is each of at as a time since the first.
func sinceFirst(at []time.Time) []time.Duration {
	out := make([]time.Duration, len(at))
	for i, a := range at {
		out[i] = a.Sub(at[0]).Round(time.Millisecond)
	}
	return out
}
