package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
	"github.com/flashsale/flashsale/notify"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/soldout"
	"github.com/flashsale/flashsale/worker"
)

// otherProcess is a second worker process on e's database, queue Redis,
// key prefix and lock node, with a lock client (and process id) of its own,
// started until cleanup.
func (e *env) otherProcess(t *testing.T, lockTTL time.Duration) *worker.Worker {
	t.Helper()
	w := e.process(t, worker.Config{}, lockTTL)
	startProcess(t, w)
	return w
}

// process is another worker process on e's database, queue Redis, key
// prefix and lock node, with a lock client (and process id) of its own and
// cfg (its concurrency, queue, key prefix and logger set here, as for e's
// worker); it is not started (startProcess).
func (e *env) process(t *testing.T, cfg worker.Config, lockTTL time.Duration) *worker.Worker {
	t.Helper()
	connOpt, err := queue.ParseRedisURL(testenv.RedisURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	locks := locktest.Client(t, []*localsvc.Redis{e.lockRDB}, &lock.Options{TTL: lockTTL, KeyPrefix: e.prefix + "lock:"})
	cfg.Concurrency, cfg.Queue, cfg.KeyPrefix, cfg.Logger = 32, e.queue, e.prefix, slog.New(slog.DiscardHandler)
	w, err := worker.New(cfg, worker.Deps{
		Store: e.store, Locks: locks,
		Gate:      soldout.New(e.rdb, soldout.Options{KeyPrefix: e.prefix}),
		Publisher: notify.NewPublisher(e.rdb, e.prefix),
		Queue:     connOpt, Redis: e.rdb,
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// startProcess starts w until cleanup (Shutdown may be called before).
func startProcess(t *testing.T, w *worker.Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Shutdown(); cancel() })
}

// A lock a waiter hands to a runner stuck in a long round (a row of another
// product held by someone else) is handed over, once it has waited maxHold,
// to another process that announced it wants it. Before, it was kept and
// renewed, unused, for as long as that round lasted (up to roundTimeout,
// 30s), while the other process, which could decide its order at once,
// waited (from a review).
func TestIdleHeldLockIsHandedToAWaitingProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 2*time.Second)
	e.start(t)
	other := e.otherProcess(t, 2*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 50, 0)
	inventorytest.CreateProduct(t, e.store, "q", 50, 0)
	ctx := context.Background()

	rival := e.rival(t)
	held, err := rival.TryAcquire(ctx, "product:p")
	if err != nil {
		t.Fatal(err)
	}
	// This process waits for p's lock in the background...
	perr := make(chan error, 1)
	go func() { perr <- e.w.ProcessTask(ctx, task(t, "op", "p", "u1", 1, 1)) }()
	e.waitWanting(t, "p", 1, 10*time.Second)
	// ...while its runner gets stuck on q.
	tx := e.holdRow(t, "q")
	qerr := make(chan error, 1)
	go func() { qerr <- e.w.ProcessTask(ctx, task(t, "oq", "q", "u2", 1, 2)) }()
	e.waitBlockedBy(t, tx)
	// The rival lets go: the waiter takes p's lock and hands it to the
	// stuck runner.
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitWanting(t, "p", 0, 10*time.Second)

	// Another process has an order for p and says so. It gets p's lock
	// about maxHold after the hand-off (1-3s seen under load); 10s leaves
	// room on a loaded machine and is still a third of roundTimeout, the
	// round this process's runner would otherwise sit in.
	start := time.Now()
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	oerr := other.ProcessTask(octx, task(t, "op2", "p", "u3", 1, 3))
	waited := time.Since(start)

	_ = tx.Rollback(ctx)
	if err := <-qerr; err != nil {
		t.Errorf("oq: %v", err)
	}
	if err := <-perr; err != nil {
		t.Errorf("op: %v", err)
	}
	if oerr != nil {
		t.Fatalf("the other process's order waited %v for p's lock, which this process kept unused while its runner was stuck on q: %v", waited, oerr)
	}
}

// announcedWaiterOnContended starts e's worker on a product p (stock 10)
// that it saw contended a moment ago (its order o1 found p's lock busy: p
// counts as contended there for 2s, and o1 is decided), then announces, as
// want.lua does for another process, that this other process waits for
// p's lock, for lifetime; p's lock is free.
func (e *env) announcedWaiterOnContended(t *testing.T, lifetime time.Duration) {
	t.Helper()
	inventorytest.CreateProduct(t, e.store, "p", 10, 0)
	ctx := context.Background()
	held, err := e.rival(t).TryAcquire(ctx, "product:p")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- e.w.ProcessTask(ctx, task(t, "o1", "p", "u1", 1, 1)) }()
	e.waitWanting(t, "p", 1, 5*time.Second)
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	e.waitWanting(t, "p", 0, 5*time.Second)
	now, err := e.rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	e.rdb.ZAdd(ctx, e.prefix+"want:{p}", redis.Z{Score: float64(now.Add(lifetime).UnixMilli()), Member: "other-host:1:0badf00d"})
}

// A process that queues behind an announced waiter waits for it at most
// 2×wantTTL (0.4s): one that announced and never takes the lock (its
// process stuck, its announcement renewed for a minute here) must not
// keep the product's orders here waiting. Before this test, waiting with
// no bound (until no earlier announcement is live) passed every worker
// test.
func TestAnnouncedWaiterThatNeverTakesTheLockIsWaitedForBriefly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	e.start(t)
	e.announcedWaiterOnContended(t, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.w.ProcessTask(ctx, task(t, "o2", "p", "u2", 1, 2)); err != nil {
		t.Fatalf("o2 not decided after %v behind a waiter that never takes p's lock: %v", time.Since(start), err)
	}
}

// A process does not take a contended product's lock in front of another
// process that announced earlier that it waits for it. Here p was contended
// a moment ago, another process's announcement is live, and p's lock is
// free (that waiter has not been woken yet: pub/sub latency, a poll after a
// missed message, the gap between its 1s Acquires). A new order here must
// wait (from a review: it took the lock at once, its wait being no queue).
func TestNoBargeInFrontOfAnAnnouncedWaiter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	e.start(t)
	e.announcedWaiterOnContended(t, 10*time.Second)
	ctx := context.Background()

	start := time.Now()
	tctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	if err := e.w.ProcessTask(tctx, task(t, "o2", "p", "u2", 1, 2)); err == nil {
		t.Fatalf("o2 decided %v after it came, with p's lock taken in front of a process that announced it waits", time.Since(start))
	}
}

// A lock taken into a round that had no room for its product's orders
// (MaxBatch full) waits for the next round as an idle one: handed over, past
// maxHold, to another process that wants it while the round lasts. Here
// the round of p2 waits on an advisory lock the test holds, with q's lock
// taken into it and q1 left out. Before, q's lock stayed marked as in the
// round, and the other process waited for it until that round ended.
func TestLockLeftOutOfAFullRoundIsHandedOver(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{Mode: worker.ModeBatch, MaxBatch: 1}, 2*time.Second)
	e.start(t)
	other := e.otherProcess(t, 2*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 50, 0)
	inventorytest.CreateProduct(t, e.store, "q", 50, 0)
	e.exec(t, `CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM ins WHERE id = 'p2') THEN
    PERFORM pg_advisory_xact_lock_shared(4242);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER gate AFTER INSERT ON orders REFERENCING NEW TABLE AS ins
  FOR EACH STATEMENT EXECUTE FUNCTION gate();`)
	ctx := context.Background()
	gate := e.advisoryGate(t, 4242)
	errs := e.roundOfP2WithQ1LeftOut(t, gate)
	start := time.Now()
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	oerr := other.ProcessTask(octx, task(t, "q2", "q", "uq2", 1, 4))
	waited := time.Since(start)
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if oerr != nil {
		t.Fatalf("the other process's order waited %v for q's lock, kept unused while this process's round had no room for q: %v", waited, oerr)
	}
}

// A lock kept across rounds and taken into the next one is in that round
// until it ends: however long the round lasts, it is not handed over to
// another process that announced it waits (sweepIdle hands over idle
// locks only), which would end the round's transaction (its lock lost)
// and send its orders back. Here, with one order a round (MaxBatch 1), p1's
// round keeps p's lock for p2, whose round then waits on an advisory lock
// the test holds, past maxHold, while another process announces. Before
// this test, leaving a kept lock marked idle when the next round took it
// passed every worker test: about maxHold after p1's round, p's lock was
// handed over in the middle of p2's.
func TestLockInARoundIsNotHandedOver(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{Mode: worker.ModeBatch, MaxBatch: 1}, 2*time.Second)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 50, 0)
	e.exec(t, `CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(4244);
  RETURN NEW;
END $$;
CREATE TRIGGER gate BEFORE INSERT ON orders FOR EACH ROW WHEN (NEW.id = 'p2') EXECUTE FUNCTION gate();`)
	ctx := context.Background()
	gate := e.advisoryGate(t, 4244)
	// p1's round waits on p's row while p2 queues up behind it: p1's round
	// keeps p's lock for p2's.
	tx := e.holdRow(t, "p")
	errs := make(chan error, 2)
	process := func(id string, seq int) {
		go func() { errs <- e.w.ProcessTask(ctx, task(t, id, "p", "u"+id, 1, seq)) }()
	}
	process("p1", 1)
	e.waitBlockedBy(t, tx)
	process("p2", 2)
	e.waitPending(t, "p", 1)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitWaitsOn(t, gate, 10*time.Second, "p2's round does not wait on the advisory lock yet")
	// Another process announces that it waits for p's lock.
	now, err := e.rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	e.rdb.ZAdd(ctx, e.prefix+"want:{p}", redis.Z{Score: float64(now.Add(time.Minute).UnixMilli()), Member: "other-host:1:0badf00d"})
	// Past maxHold (1s) since p1's round, and sweepIdle's next look, p's
	// lock is still this process's.
	rival := e.rival(t)
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		l, err := rival.TryAcquire(ctx, "product:p")
		if err == nil {
			_ = l.Release(ctx)
			t.Fatal("p's lock was handed over while p2's round, which holds it, was in flight")
		}
		if !errors.Is(err, lock.ErrNotObtained) {
			t.Fatal(err)
		}
	}
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_unlock(4244)`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A process that holds a product's lock and has more orders of it hands
// the lock over after a round when another process announced that it waits
// for it, rather than keeping it for the next round (up to maxHold). With
// MaxBatch 1, a1's round waits on p's row while a2 queues up behind it
// and the other process, with b, announces; once a1 is decided this
// process gives the lock up and must take it again for a2: two
// acquisitions, not one. Before this test, keeping the lock regardless
// (afterRound not asking who waits) passed every worker test.
func TestLockIsHandedOverAfterARoundToAnAnnouncedWaiter(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{Mode: worker.ModeBatch, MaxBatch: 1}, 5*time.Second)
	e.start(t)
	other := e.otherProcess(t, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 10, 0)
	ctx := context.Background()
	tx := e.holdRow(t, "p")
	errs := make(chan error, 3)
	process := func(w *worker.Worker, id string, seq int) {
		go func() { errs <- w.ProcessTask(ctx, task(t, id, "p", "u"+id, 1, seq)) }()
	}
	process(e.w, "a1", 1)
	e.waitBlockedBy(t, tx) // a1's round, under p's lock
	process(e.w, "a2", 3)
	e.waitPending(t, "p", 1)
	process(other, "b", 2)
	e.waitWanting(t, "p", 1, 10*time.Second)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := counter(t, e.reg, "flashsale_lock_acquire_seconds", nil); got < 2 {
		t.Errorf("this process acquired p's lock %v times for a1 and a2; want 2: it kept the lock after a1's round although another process announced it waits", got)
	}
}

// announce makes e's worker announce that it waits for product's lock
// until cleanup, and returns its first announcement (its process id and
// time) once made.
func (e *env) announce(t *testing.T, product string) redis.Z {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); worker.Announce(ctx, e.w, product) }()
	t.Cleanup(func() { cancel(); <-done })
	var first redis.Z
	testenv.Eventually(t, 10*time.Second, func() error {
		zs, err := e.rdb.ZRangeWithScores(context.Background(), e.prefix+"want:{"+product+"}:since", 0, -1).Result()
		if err == nil && len(zs) != 1 {
			err = fmt.Errorf("%d announcements, want 1", len(zs))
		}
		if err == nil {
			first = zs[0]
		}
		return err
	})
	return first
}

// Two processes that first announced in the same millisecond are ordered
// by process id, so that exactly one of them goes first: neither waits
// for the other (each for 0.4 s) nor do both go at once. Before this
// test, counting a tie as earlier (ahead.lua's s <= mine) passed every
// worker test.
func TestAnnouncementsOfTheSameTimeAreOrderedByProcessID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	ctx := context.Background()
	first := e.announce(t, "p")
	me := first.Member.(string)
	now, err := e.rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		other string
		ahead bool
	}{
		{me + "~", false},      // an id after this process's
		{me[:len(me)-1], true}, // an id before it
	} {
		pipe := e.rdb.TxPipeline()
		pipe.ZAdd(ctx, e.prefix+"want:{p}", redis.Z{Score: float64(now.UnixMilli() + 60_000), Member: tc.other})
		pipe.ZAdd(ctx, e.prefix+"want:{p}:since", redis.Z{Score: first.Score, Member: tc.other})
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		ahead, err := worker.AnnouncedBefore(ctx, e.w, "p")
		if err != nil || ahead != tc.ahead {
			t.Errorf("%q announced in the same millisecond as %q: counts as before it %v (%v), want %v", tc.other, me, ahead, err, tc.ahead)
		}
		e.rdb.ZRem(ctx, e.prefix+"want:{p}", tc.other)
	}
}

// Only live announcements of other processes count, in wanted.lua (does a
// holder hand its lock over) and ahead.lua (does a waiter queue behind
// another): not this process's own, which its waiter leaves live for a
// moment after it took the lock, nor another's that expired (its process
// died, or its withdrawal failed; it lingers until a want.lua sweeps it).
// Here this process's announcement expires first, so that it comes first
// among the live ones. Before this test, counting its own announcement,
// counting expired ones, or wanted.lua looking at only the first live one
// (LIMIT 1: its own hid the other's) passed every worker test: a holder
// handed its lock over to itself or to nobody, a waiter queued behind a
// dead one for 0.4 s, or a holder kept its lock from a live waiter.
func TestOnlyLiveAnnouncementsOfOtherProcessesCount(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	ctx := context.Background()
	// The announcements are written as want.lua does, by the test only,
	// so that no renewal sweeps the expired one.
	wantKey, sinceKey, me, ms := e.announcements(t, "p")
	const other = "other-host:1:0badf00d"
	set := func(member string, expiry, since int64) {
		t.Helper()
		pipe := e.rdb.TxPipeline()
		pipe.ZAdd(ctx, wantKey, redis.Z{Score: float64(expiry), Member: member})
		pipe.ZAdd(ctx, sinceKey, redis.Z{Score: float64(since), Member: member})
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	set(me, ms+30_000, ms)
	for _, tc := range []struct {
		name          string
		otherExpiry   int64 // 0: the other process has not announced
		wanted, ahead bool
	}{
		{"only this process announced", 0, false, false},
		{"another announced earlier and expired", ms - 1, false, false},
		{"another announced earlier and waits", ms + 60_000, true, true},
	} {
		if tc.otherExpiry != 0 {
			set(other, tc.otherExpiry, ms-1_000)
		}
		got, err := worker.Wanted(ctx, e.w, []string{"p"})
		if err != nil || (len(got) == 1) != tc.wanted {
			t.Errorf("%s: p's lock wanted by another process %v (%v), want %v", tc.name, len(got) == 1, err, tc.wanted)
		}
		ahead, err := worker.AnnouncedBefore(ctx, e.w, "p")
		if err != nil || ahead != tc.ahead {
			t.Errorf("%s: another process counts as announced before this one %v (%v), want %v", tc.name, ahead, err, tc.ahead)
		}
	}
}

// A process that announces it waits for a lock keeps the time of its first
// announcement while it renews it, and goes after only those that
// announced before it: here another process announced a millisecond after
// this one, and this one's announcement has been renewed since. Before
// this test, renewing the first time with each announcement (want.lua
// writing each renewal's time as the first), or counting every other live announcement as earlier
// (ahead.lua), passed every worker test: the first waiter would queue
// behind a later one (up to 0.4 s), two would wait for each other.
func TestAnnouncementKeepsItsFirstTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	ctx := context.Background()
	wantKey, sinceKey := e.prefix+"want:{p}", e.prefix+"want:{p}:since"
	first := e.announce(t, "p")
	me := first.Member.(string)
	expiry := e.rdb.ZScore(ctx, wantKey, me).Val()

	// Another process announces (as want.lua does) a millisecond later.
	now, err := e.rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	const later = "other-host:1:0badf00d"
	if err := e.rdb.ZAdd(ctx, wantKey, redis.Z{Score: float64(now.UnixMilli() + 60_000), Member: later}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.ZAdd(ctx, sinceKey, redis.Z{Score: first.Score + 1, Member: later}).Err(); err != nil {
		t.Fatal(err)
	}
	// This process renews its announcement.
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := e.rdb.ZScore(ctx, wantKey, me).Val(); got <= expiry {
			return fmt.Errorf("announcement not renewed yet (expiry %v)", got)
		}
		return nil
	})
	if since := e.rdb.ZScore(ctx, sinceKey, me).Val(); since != first.Score {
		t.Errorf("first announcement at %.0f ms, %.0f ms after a renewal; want it kept", first.Score, since)
	}
	if ahead, err := worker.AnnouncedBefore(ctx, e.w, "p"); err != nil || ahead {
		t.Errorf("another process counts as announced before this one (%v, %v); want not: it announced after", ahead, err)
	}
	// One that announced before this one does.
	if err := e.rdb.ZAdd(ctx, wantKey, redis.Z{Score: float64(now.UnixMilli() + 60_000), Member: "other-host:2:0badcafe"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.ZAdd(ctx, sinceKey, redis.Z{Score: first.Score - 1, Member: "other-host:2:0badcafe"}).Err(); err != nil {
		t.Fatal(err)
	}
	if ahead, err := worker.AnnouncedBefore(ctx, e.w, "p"); err != nil || !ahead {
		t.Errorf("a process that announced first does not count as before this one (%v, %v)", ahead, err)
	}
}

// A process that waits for a lock keeps the time of its first
// announcement, and its place before those that announced after it, when
// a renewal comes after the announcement expired (wantTTL, 0.2s: the
// process paused, a reply was slow): the renewal, or another process's,
// swept it with its first time, or both keys expired (2×wantTTL). Before,
// the renewal took its own time as the first: on a loaded machine
// TestAnnouncementKeepsItsFirstTime failed so, and the first waiter
// queued behind a later one.
func TestAnnouncementKeepsItsFirstTimeAfterItExpired(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	ctx := context.Background()
	for _, tc := range []struct {
		name, product string
		lapse         func(wantKey, sinceKey, me string, now time.Time) error
	}{
		{"announcement expired", "p", func(wantKey, _, me string, now time.Time) error {
			return e.rdb.ZAddXX(ctx, wantKey, redis.Z{Score: float64(now.UnixMilli() - 1), Member: me}).Err()
		}},
		{"keys expired", "q", func(wantKey, sinceKey, _ string, _ time.Time) error {
			return e.rdb.Del(ctx, wantKey, sinceKey).Err()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantKey, sinceKey := e.prefix+"want:{"+tc.product+"}", e.prefix+"want:{"+tc.product+"}:since"
			first := e.announce(t, tc.product)
			me := first.Member.(string)
			now, err := e.rdb.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.lapse(wantKey, sinceKey, me, now); err != nil {
				t.Fatal(err)
			}
			// Another process announced a millisecond after this one, and
			// still waits.
			const later = "other-host:1:0badf00d"
			pipe := e.rdb.TxPipeline()
			pipe.ZAdd(ctx, wantKey, redis.Z{Score: float64(now.UnixMilli() + 60_000), Member: later})
			pipe.ZAdd(ctx, sinceKey, redis.Z{Score: first.Score + 1, Member: later})
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 10*time.Second, func() error {
				if got := e.rdb.ZScore(ctx, wantKey, me).Val(); got <= float64(now.UnixMilli()) {
					return fmt.Errorf("announcement not renewed since it expired (expiry %.0f ms)", got)
				}
				return nil
			})
			if since := e.rdb.ZScore(ctx, sinceKey, me).Val(); since != first.Score {
				t.Errorf("first announcement at %.0f ms, %.0f ms after a renewal that came once it had expired; want it kept", first.Score, since)
			}
			if ahead, err := worker.AnnouncedBefore(ctx, e.w, tc.product); err != nil || ahead {
				t.Errorf("a process that announced after this one counts as before it once its announcement was renewed late (%v, %v)", ahead, err)
			}
		})
	}
}

// A process that announces again, after its earlier announcement for the
// product expired without being withdrawn (the withdrawal failed: Redis
// did not answer within its second), takes the time of its new
// announcement as its first, not the expired one's: want.lua sweeps an
// expired announcement's first time with it. Here the keys stay (another
// process's announcement keeps them alive). Before this test, sweeping
// only the announcement and leaving its first time passed every worker
// test: the process would queue in front of those that announced while it
// did not wait.
func TestExpiredAnnouncementLeavesNoFirstTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	ctx := context.Background()
	wantKey, sinceKey, me, ms := e.announcements(t, "p")
	const other = "other-host:1:0badf00d"
	pipe := e.rdb.TxPipeline()
	pipe.ZAdd(ctx, wantKey, redis.Z{Score: float64(ms - 1), Member: me}, redis.Z{Score: float64(ms + 60_000), Member: other})
	pipe.ZAdd(ctx, sinceKey, redis.Z{Score: float64(ms - 10_000), Member: me}, redis.Z{Score: float64(ms - 5_000), Member: other})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); worker.Announce(actx, e.w, "p") }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := e.rdb.ZScore(ctx, wantKey, me).Val(); got <= float64(ms) {
			return fmt.Errorf("not announced again yet (expiry %.0f ms)", got)
		}
		return nil
	})
	if since := e.rdb.ZScore(ctx, sinceKey, me).Val(); since < float64(ms) {
		t.Errorf("first announcement at %.0f ms, the expired one's; want its own (at least %d ms)", since, ms)
	}
	if ahead, err := worker.AnnouncedBefore(ctx, e.w, "p"); err != nil || !ahead {
		t.Errorf("a process that announced while this one did not wait does not count as before it (%v, %v)", ahead, err)
	}
}

// A process keeps a product's lock across rounds while it has more orders
// of it, but for maxHold (1s) at most, even when no other process announced
// that it waits (a process whose announcement failed, or that does not
// announce): then it gives the lock up and takes it again. Here the rounds
// of 30 orders, one a round (MaxBatch 1), take 50ms each: about 1.5s under
// one lock. Before this test, keeping the lock for as long as orders came
// passed every worker test: one acquisition for the whole stream.
func TestLockIsGivenUpAfterMaxHold(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{Mode: worker.ModeBatch, MaxBatch: 1}, 5*time.Second)
	e.start(t)
	inventorytest.CreateProduct(t, e.store, "p", 100, 0)
	e.exec(t, `CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_sleep(0.05);
  RETURN NULL;
END $$;
CREATE TRIGGER slow AFTER INSERT ON orders FOR EACH STATEMENT EXECUTE FUNCTION slow();`)
	bg := context.Background()
	// The first round waits on the row until every order waits for a
	// round: the rounds then follow one another with orders pending.
	tx := e.holdRow(t, "p")
	const orders = 30
	errs := make(chan error, orders)
	for i := range orders {
		go func() {
			errs <- e.w.ProcessTask(bg, task(t, fmt.Sprintf("o%02d", i), "p", fmt.Sprintf("u%d", i), 1, i))
		}()
		if i == 0 {
			e.waitBlockedBy(t, tx)
		}
	}
	e.waitPending(t, "p", orders-1)
	start := time.Now()
	if err := tx.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	for range orders {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	if took < 1200*time.Millisecond {
		t.Fatalf("the rounds took %v; want them to outlast maxHold (1s)", took)
	}
	if got := counter(t, e.reg, "flashsale_lock_acquire_seconds", nil); got < 2 {
		t.Errorf("p's lock acquired %v times for %v of rounds with orders pending; want it given up after maxHold (1s) and taken again", got, took)
	}
}

// A process that stops waiting for a lock withdraws its announcement at
// once: when Announce returns, its announcement is gone, and another
// process that announced after it no longer waits behind it. Before this
// test, leaving the announcement to expire (wantTTL, 0.2s) passed every
// worker test: for that long the other process queued behind a waiter that
// was gone, and the holder kept handing the lock over to nobody. Nor did
// any test check that the first time goes with it: left (while the keys
// live), it was kept by this process's next announcement, which then
// queued in front of those that announced while it did not wait.
func TestAnnouncementIsWithdrawnAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, worker.ModeBatch, 5*time.Second)
	other := e.process(t, worker.Config{}, 5*time.Second)
	ctx := context.Background()
	mine, withdraw := context.WithCancel(ctx)
	defer withdraw()
	done := make(chan struct{})
	go func() { defer close(done); worker.Announce(mine, e.w, "p") }()
	e.waitWanting(t, "p", 1, 10*time.Second)
	theirs, stop := context.WithCancel(ctx)
	otherDone := make(chan struct{})
	t.Cleanup(func() { stop(); <-otherDone })
	go func() { defer close(otherDone); worker.Announce(theirs, other, "p") }()
	e.waitWanting(t, "p", 2, 10*time.Second)
	withdraw()
	<-done
	if n := e.rdb.ZCard(ctx, e.prefix+"want:{p}").Val(); n != 1 {
		t.Errorf("%d announcements once this process withdrew its own, want 1 (the other's)", n)
	}
	if err := e.rdb.ZScore(ctx, e.prefix+"want:{p}:since", worker.ProcessID(e.w)).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("this process's first time left once it withdrew (%v); want it gone: its next announcement would keep it", err)
	}
	if ahead, err := worker.AnnouncedBefore(ctx, other, "p"); err != nil || ahead {
		t.Errorf("the other process still waits behind this one, which withdrew (%v, %v)", ahead, err)
	}
}

// announcements returns the keys of product's lock announcements (want.lua's
// KEYS), this worker's process id as it announces, and Redis's clock now in
// Unix milliseconds, as want.lua reads it.
func (e *env) announcements(t *testing.T, product string) (wantKey, sinceKey, me string, ms int64) {
	t.Helper()
	now, err := e.rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	wantKey = e.prefix + "want:{" + product + "}"
	return wantKey, wantKey + ":since", worker.ProcessID(e.w), now.UnixMilli()
}
