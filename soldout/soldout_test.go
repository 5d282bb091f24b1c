package soldout_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/soldout"
)

// sharedRedis returns the shared Redis and a key prefix of the test's own,
// whose keys are removed at cleanup.
func sharedRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	rdb := testenv.Redis(t)
	prefix := "t:" + testenv.Namespace(t) + ":"
	testenv.DeleteKeys(t, rdb, prefix)
	return rdb, prefix
}

// newGate returns a gate on the shared Redis with a prefix of the test's own.
func newGate(t *testing.T, cacheTTL time.Duration) (*soldout.Gate, string) {
	t.Helper()
	rdb, prefix := sharedRedis(t)
	return soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: cacheTTL, OpenTTL: cacheTTL}), prefix
}

func TestMarkAndReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g, _ := newGate(t, time.Nanosecond) // every read goes to Redis
	soldOut := func(want bool) {
		t.Helper()
		got, err := g.SoldOut(ctx, "p")
		if err != nil || got != want {
			t.Fatalf("SoldOut = %v, %v; want %v, nil", got, err, want)
		}
	}

	soldOut(false)
	// No restock announced yet: generation 0, not an error (a restock that
	// cannot tell whether its Reopen ran asks).
	if n, err := g.Announced(ctx, "p"); err != nil || n != 0 {
		t.Fatalf("Announced before any Reopen = %d, %v; want 0, nil", n, err)
	}
	if ok, err := g.Mark(ctx, "p", 0); err != nil || !ok {
		t.Fatalf("Mark(gen 0) = %v, %v; want true, nil", ok, err)
	}
	soldOut(true)

	gen, err := g.Reopen(ctx, "p", 0)
	if err != nil || gen != 1 {
		t.Fatalf("Reopen(floor 0) = %d, %v; want 1, nil", gen, err)
	}
	if n, err := g.Announced(ctx, "p"); err != nil || n != 1 {
		t.Fatalf("Announced after Reopen = %d, %v; want 1, nil", n, err)
	}
	soldOut(false)

	// A worker that read stock 0 before the restock was announced must not
	// flag the product again.
	if ok, err := g.Mark(ctx, "p", 0); err != nil || ok {
		t.Fatalf("Mark(gen 0) after Reopen to gen 1 = %v, %v; want false, nil", ok, err)
	}
	soldOut(false)
	// Selling out again at the new generation flags it.
	if ok, err := g.Mark(ctx, "p", 1); err != nil || !ok {
		t.Fatalf("Mark(gen 1) = %v, %v; want true, nil", ok, err)
	}
	soldOut(true)

	// The floor from PostgreSQL wins over a counter Redis lost or never had.
	if gen, err := g.Reopen(ctx, "p", 10); err != nil || gen != 11 {
		t.Fatalf("Reopen(floor 10) = %d, %v; want 11, nil", gen, err)
	}
	if ok, err := g.Mark(ctx, "p", 10); err != nil || ok {
		t.Fatalf("Mark(gen 10) after Reopen to 11 = %v, %v; want false, nil", ok, err)
	}
	// Products are independent.
	if ok, err := g.Mark(ctx, "other", 0); err != nil || !ok {
		t.Fatalf("Mark(other) = %v, %v; want true, nil", ok, err)
	}
	soldOut(false)
}

func TestSoldOutTrustsItsCacheForCacheTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A gate that caches for an hour does not see a flag set after its
	// read (another process marks through its own gate)...
	stale, prefix := newGate(t, time.Hour)
	if got, err := stale.SoldOut(ctx, "p"); err != nil || got {
		t.Fatalf("SoldOut = %v, %v; want false, nil", got, err)
	}
	marker := soldout.New(testenv.Redis(t), soldout.Options{KeyPrefix: prefix})
	if ok, err := marker.Mark(ctx, "p", 0); err != nil || !ok {
		t.Fatalf("Mark = %v, %v; want true, nil", ok, err)
	}
	if got, err := stale.SoldOut(ctx, "p"); err != nil || got {
		t.Fatalf("SoldOut within the cache TTL = %v, %v; want the cached false", got, err)
	}
	// ...but its own Reopen drops its cache entry.
	if _, err := stale.Reopen(ctx, "p", 0); err != nil {
		t.Fatal(err)
	}
	if ok, err := marker.Mark(ctx, "p", 1); err != nil || !ok {
		t.Fatalf("Mark(gen 1) = %v, %v; want true, nil", ok, err)
	}
	if got, err := stale.SoldOut(ctx, "p"); err != nil || !got {
		t.Fatalf("SoldOut after own Reopen = %v, %v; want a fresh read: true", got, err)
	}

	// A gate with a short TTL sees the flag once its entry expires.
	fresh := soldout.New(testenv.Redis(t), soldout.Options{KeyPrefix: prefix, CacheTTL: 20 * time.Millisecond, OpenTTL: 20 * time.Millisecond})
	if got, err := fresh.SoldOut(ctx, "q"); err != nil || got {
		t.Fatalf("SoldOut(q) = %v, %v; want false, nil", got, err)
	}
	if ok, err := marker.Mark(ctx, "q", 0); err != nil || !ok {
		t.Fatalf("Mark(q) = %v, %v; want true, nil", ok, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if got, err := fresh.SoldOut(ctx, "q"); err != nil || !got {
			return errors.New("q not seen sold out")
		}
		return nil
	})
}

// A gate that runs its subscription drops a cached "not sold out" as soon
// as another process marks the product, however long it would trust it.
func TestAnnouncedMarkDropsTheCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g, prefix := newGate(t, time.Hour)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := run(runCtx, t, g)
	if got, err := g.SoldOut(ctx, "p"); err != nil || got {
		t.Fatalf("SoldOut = %v, %v; want false, nil", got, err)
	}
	marker := soldout.New(testenv.Redis(t), soldout.Options{KeyPrefix: prefix})
	if ok, err := marker.Mark(ctx, "p", 0); err != nil || !ok {
		t.Fatalf("Mark = %v, %v; want true, nil", ok, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if got, err := g.SoldOut(ctx, "p"); err != nil || !got {
			return errors.New("mark not seen despite the announcement")
		}
		return nil
	})
	// And a reopen announced by another process drops the cached "sold out".
	if _, err := marker.Reopen(ctx, "p", 0); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if got, err := g.SoldOut(ctx, "p"); err != nil || got {
			return errors.New("reopen not seen despite the announcement")
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

func TestSettleOutlastsTheCache(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{0, 10 * time.Millisecond, time.Second} {
		g := soldout.New(nil, soldout.Options{CacheTTL: ttl})
		effective := ttl
		if ttl == 0 {
			effective = time.Second
		}
		if got := g.Settle(); got <= effective {
			t.Errorf("CacheTTL %v: Settle() = %v; want more than %v", ttl, got, effective)
		}
	}
}

func TestFailsOpenWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := soldout.New(testenv.UnreachableRedis(t), soldout.Options{})
	got, err := g.SoldOut(ctx, "p")
	if got || err == nil {
		t.Fatalf("SoldOut with Redis down = %v, %v; want false and an error", got, err)
	}
	if ok, err := g.Mark(ctx, "p", 0); ok || err == nil {
		t.Fatalf("Mark with Redis down = %v, %v; want false and an error", ok, err)
	}
	if _, err := g.Reopen(ctx, "p", 0); err == nil {
		t.Fatalf("Reopen with Redis down: got nil error, want one")
	}
}

// MarkMany marks several products in one round trip, each as Mark would:
// not one whose newer restock was announced. A Redis that lost its scripts
// (restart, SCRIPT FLUSH; a private one here) gets them loaded again.
func TestMarkMany(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, flush := range []bool{false, true} {
		rdb := testenv.Redis(t)
		if flush {
			r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
			rdb = redis.NewClient(&redis.Options{Addr: r.Addr()})
			t.Cleanup(func() { _ = rdb.Close() })
		}
		prefix := "t:" + testenv.Namespace(t) + fmt.Sprintf(":%v:", flush)
		testenv.DeleteKeys(t, rdb, prefix)
		// Each product is read once, after the marks: a long CacheTTL, so
		// that a slow read still counts (see freshFor).
		g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Hour, OpenTTL: time.Hour})
		if _, err := g.Reopen(ctx, "b", 0); err != nil { // b's generation is 1 from now on
			t.Fatal(err)
		}
		if flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		set, errs := g.MarkMany(ctx, []soldout.Sold{{Product: "a", Gen: 0}, {Product: "b", Gen: 0}, {Product: "c", Gen: 3}})
		if want := []bool{true, false, true}; !slices.Equal(set, want) || errors.Join(errs...) != nil {
			t.Fatalf("flush=%v: MarkMany = %v, %v; want %v and no errors", flush, set, errs, want)
		}
		for p, want := range map[string]bool{"a": true, "b": false, "c": true, "d": false} {
			if got, err := g.SoldOut(ctx, p); err != nil || got != want {
				t.Errorf("flush=%v: SoldOut(%s) = %v, %v; want %v", flush, p, got, err, want)
			}
		}
	}
}

// getCounter is a go-redis hook that counts GET commands and signals each
// one before it is sent.
type getCounter struct {
	n    atomic.Int64
	sent chan struct{}
}

func (h *getCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *getCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "get" {
			h.n.Add(1)
			select {
			case h.sent <- struct{}{}:
			default:
			}
		}
		return next(ctx, cmd)
	}
}

func (h *getCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Concurrent callers share one read of a flag; the first caller giving up
// (its request's deadline passes while Redis is slow) does not fail the
// others. The read is started by the first caller (its GET is seen before
// the second caller starts), and the second must share it: one GET in all.
// Were the read bounded by the first caller's deadline, the second would
// either fail with it or, coming later, read again (a second GET): both
// orders of events fail the test.
func TestSharedReadOutlivesTheFirstCaller(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	gets := &getCounter{sent: make(chan struct{}, 1)}
	rdb.AddHook(gets)
	// Cached for an hour: a second caller that comes after the shared read
	// ended is answered from it, not by a read of its own.
	g := soldout.New(rdb, soldout.Options{CacheTTL: time.Hour, OpenTTL: time.Hour})
	ctx := context.Background()
	if ok, err := g.Mark(ctx, "p", 0); !ok || err != nil {
		t.Fatalf("Mark = %v, %v", ok, err)
	}
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Resume() })
	first, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	type answer struct {
		sold bool
		err  error
	}
	firstDone := make(chan answer, 1)
	go func() {
		sold, err := g.SoldOut(first, "p")
		firstDone <- answer{sold, err}
	}()
	select {
	case <-gets.sent: // the first caller's read is in flight
	case <-time.After(10 * time.Second):
		t.Fatal("the first caller sent no GET within 10s")
	}
	second := make(chan answer, 1)
	go func() {
		sold, err := g.SoldOut(ctx, "p")
		second <- answer{sold, err}
	}()
	// Like any error, giving up answers "not sold out": the order goes
	// through rather than be refused on a read that never ended.
	if a := <-firstDone; a.sold || !errors.Is(a.err, context.DeadlineExceeded) {
		t.Fatalf("the caller that gave up: %v, %v; want false, context.DeadlineExceeded", a.sold, a.err)
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-second:
		if a.err != nil || !a.sold {
			t.Fatalf("the caller still waiting: %v, %v; want sold out", a.sold, a.err)
		}
		if n := gets.n.Load(); n != 1 {
			t.Fatalf("%d GETs of the flag, want 1: the second caller did not share the first one's read", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the caller still waiting got no answer")
	}
}

// Confirm removes a flag set at a generation older than the committed
// restock's, keeps one set at it (the product sold out again since), and
// raises a lost announcement to the committed generation.
func TestConfirm(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g, prefix := newGate(t, time.Nanosecond)
	rdb := testenv.Redis(t)
	for _, tc := range []struct {
		name        string
		flagGen     int64 // -1: no flag
		confirm     int64
		wantRemoved bool
	}{
		{"flag from before the restock", 0, 1, true},
		{"flag at the restock's generation", 1, 1, false},
		{"no flag", -1, 2, false},
	} {
		product := "p-" + strings.ReplaceAll(tc.name, " ", "-")
		if tc.flagGen >= 0 {
			if ok, err := g.Mark(ctx, product, tc.flagGen); err != nil || !ok {
				t.Fatalf("%s: Mark = %v, %v", tc.name, ok, err)
			}
		}
		// The announcement is lost: Redis holds no generation.
		if err := rdb.Del(ctx, prefix+"restock:{"+product+"}").Err(); err != nil {
			t.Fatal(err)
		}
		removed, err := g.Confirm(ctx, product, tc.confirm)
		if err != nil || removed != tc.wantRemoved {
			t.Errorf("%s: Confirm = %v, %v; want %v", tc.name, removed, err, tc.wantRemoved)
		}
		if got, err := g.SoldOut(ctx, product); err != nil || got != (tc.flagGen >= 0 && !tc.wantRemoved) {
			t.Errorf("%s: SoldOut after Confirm = %v, %v", tc.name, got, err)
		}
		if n, err := g.Announced(ctx, product); err != nil || n != tc.confirm {
			t.Errorf("%s: Announced = %d, %v; want %d", tc.name, n, err, tc.confirm)
		}
		// A mark from before the committed restock is refused again.
		if ok, err := g.Mark(ctx, product, tc.confirm-1); err != nil || ok {
			t.Errorf("%s: a mark at generation %d after Confirm(%d) = %v, %v; want refused", tc.name, tc.confirm-1, tc.confirm, ok, err)
		}
	}
}

// A restock that confirms after a later one was announced (two restocks
// overlapping) leaves the newer announcement in place: lowered, it would
// let a worker that read stock 0 before the later restock committed flag
// the product over that restock's stock.
func TestConfirmKeepsANewerAnnouncement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g, _ := newGate(t, time.Nanosecond)
	for want := int64(1); want <= 2; want++ { // two restocks announced: 1, 2
		if gen, err := g.Reopen(ctx, "p", 0); err != nil || gen != want {
			t.Fatalf("Reopen = %d, %v; want %d", gen, err, want)
		}
	}
	if removed, err := g.Confirm(ctx, "p", 1); err != nil || removed {
		t.Fatalf("Confirm(1) = %v, %v; want false, nil", removed, err)
	}
	if n, err := g.Announced(ctx, "p"); err != nil || n != 2 {
		t.Errorf("Announced after Confirm(1) = %d, %v; want 2", n, err)
	}
	if ok, err := g.Mark(ctx, "p", 1); err != nil || ok {
		t.Errorf("a mark at generation 1 with restock 2 announced = %v, %v; want refused", ok, err)
	}
}

// A Confirm that removed a stale flag drops the gate's own cached "sold
// out" at once: the restock's stock is committed by then (and a background
// check of Options.Committed repairs a flag through Confirm), so the gate
// must not keep refusing orders from its cache, with or without Run.
func TestConfirmDropsTheCachedAnswer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g, prefix := newGate(t, time.Hour) // no Run: only Confirm itself can drop the cache
	if ok, err := g.Mark(ctx, "p", 0); err != nil || !ok {
		t.Fatalf("Mark = %v, %v; want true, nil", ok, err)
	}
	if got, err := g.SoldOut(ctx, "p"); err != nil || !got {
		t.Fatalf("SoldOut = %v, %v; want true, nil (now cached)", got, err)
	}
	// The restock's announcement was lost; the restock committed at 1.
	if err := testenv.Redis(t).Del(ctx, prefix+"restock:{p}").Err(); err != nil {
		t.Fatal(err)
	}
	if removed, err := g.Confirm(ctx, "p", 1); err != nil || !removed {
		t.Fatalf("Confirm(1) = %v, %v; want true, nil", removed, err)
	}
	if got, err := g.SoldOut(ctx, "p"); err != nil || got {
		t.Errorf("SoldOut after Confirm removed the flag = %v, %v; want false, nil", got, err)
	}
}

// A Confirm that removed a flag announces it: every other process drops its
// cached "sold out" at once (a background check of Options.Committed
// repairs a flag rolled back with Redis through Confirm, and only the
// process that checked would otherwise know), here a gate that would trust
// it for an hour.
func TestConfirmIsAnnounced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	listener, prefix := newGate(t, time.Hour)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	run(runCtx, t, listener)
	other := soldout.New(testenv.Redis(t), soldout.Options{KeyPrefix: prefix})
	// s, read open and cached for an hour, is marked after p: once the
	// listener sees s sold out, it has heard p's mark too (one channel, in
	// order), and p's answer read from here on stays cached.
	if got, err := listener.SoldOut(ctx, "s"); err != nil || got {
		t.Fatalf("SoldOut(s) = %v, %v; want false, nil", got, err)
	}
	for _, product := range []string{"p", "s"} {
		if ok, err := other.Mark(ctx, product, 0); err != nil || !ok {
			t.Fatalf("Mark(%s) = %v, %v; want true, nil", product, ok, err)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if got, err := listener.SoldOut(ctx, "s"); err != nil || !got {
			return fmt.Errorf("SoldOut(s) = %v, %v; want true (its mark announced)", got, err)
		}
		return nil
	})
	if got, err := listener.SoldOut(ctx, "p"); err != nil || !got {
		t.Fatalf("SoldOut(p) = %v, %v; want true, nil (now cached for an hour)", got, err)
	}
	// A restock committed at 1 whose announcement Redis lost.
	if removed, err := other.Confirm(ctx, "p", 1); err != nil || !removed {
		t.Fatalf("Confirm(1) = %v, %v; want true, nil", removed, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if got, err := listener.SoldOut(ctx, "p"); err != nil || got {
			return fmt.Errorf("SoldOut = %v, %v after another process's Confirm removed the flag; want false (the removal announced)", got, err)
		}
		return nil
	})
}

// After the subscription reconnects, announcements made meanwhile may be
// lost: the gate forgets every cached answer. Here a flag set while no
// announcement could arrive is seen at once, not after OpenTTL (an hour).
// run runs g's subscription until ctx ends and returns once it is
// subscribed, with the channel that gets Run's error.
func run(ctx context.Context, t *testing.T, g *soldout.Gate) <-chan error {
	t.Helper()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run: not subscribed within 10s")
	}
	return done
}

func TestReconnectForgetsCachedAnswers(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	g := soldout.New(rdb, soldout.Options{KeyPrefix: "t:", CacheTTL: time.Hour, OpenTTL: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run(ctx, t, g)
	if got, err := g.SoldOut(ctx, "p"); err != nil || got {
		t.Fatalf("SoldOut before = %v, %v; want false (now cached for an hour)", got, err)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	// The flag, set with no announcement (as if it were lost).
	if err := rdb.Set(ctx, "t:soldout:{p}", "0", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		got, err := g.SoldOut(ctx, "p")
		if err != nil {
			return err
		}
		if !got {
			return errors.New("still the cached 'not sold out'")
		}
		return nil
	})
}

// With Options.Committed, after a reconnect (a Redis restart here, which
// could have brought back flags from before a restock) or once
// CheckInterval has passed, a flag set at a generation older than the
// committed one is removed by a check in the background, after which the
// product reads open; a flag at the committed generation stands, and so
// does one whose check fails (it is trusted, as without Committed). Before
// either, nothing is checked.
func TestStaleFlagIsCheckedAgainstTheCommittedGeneration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		reconnect bool
		interval  time.Duration
		flagGen   int64
		committed int64
		err       error
		errOnce   bool // only the first check fails
		flagStays bool
	}{
		{"after a reconnect, flag at the committed generation", true, time.Hour, 2, 2, nil, false, true},
		{"after a reconnect, flag from before a committed restock", true, time.Hour, 1, 2, nil, false, false},
		{"after a reconnect, committed generation unreadable", true, time.Hour, 1, 0, errors.New("database down"), false, true},
		// A failed check is tried again after checkBackoff (5s), not only
		// after CheckInterval (an hour): the flag goes once the database answers.
		{"after a reconnect, committed generation unreadable at first", true, time.Hour, 1, 2, errors.New("database down"), true, false},
		{"no reconnect, within CheckInterval: no check", false, time.Hour, 1, 2, nil, false, true},
		{"no reconnect, past CheckInterval: flag from before a committed restock", false, 200 * time.Millisecond, 1, 2, nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
			rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
			t.Cleanup(func() { _ = rdb.Close() })
			var calls atomic.Int64
			g := soldout.New(rdb, soldout.Options{KeyPrefix: "t:", CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond,
				CheckInterval: tc.interval,
				Committed: func(_ context.Context, product string) (int64, error) {
					n := calls.Add(1)
					if product != "p" {
						t.Errorf("Committed asked for %q, want p", product)
					}
					if tc.errOnce && n > 1 {
						return tc.committed, nil
					}
					return tc.committed, tc.err
				}})
			run(ctx, t, g)
			if tc.reconnect {
				if err := r.Kill(); err != nil {
					t.Fatal(err)
				}
				if err := r.Start(); err != nil {
					t.Fatal(err)
				}
			}
			if set, err := g.Mark(ctx, "p", tc.flagGen); err != nil || !set {
				t.Fatalf("Mark = %v, %v", set, err)
			}
			// Reads answer from Redis; a check, once due, runs behind them.
			testenv.Eventually(t, 20*time.Second, func() error {
				got, err := g.SoldOut(ctx, "p")
				if err != nil {
					return err
				}
				if !tc.reconnect && tc.interval == time.Hour {
					if !got {
						return errors.New("SoldOut = false with no check due")
					}
					return nil
				}
				if calls.Load() == 0 {
					return errors.New("flag not checked yet")
				}
				if got != tc.flagStays {
					return fmt.Errorf("SoldOut = %v, want %v", got, tc.flagStays)
				}
				return nil
			})
			if !tc.reconnect && tc.interval == time.Hour && calls.Load() != 0 {
				t.Errorf("Committed called %d times with no check due, want 0", calls.Load())
			}
			n, err := rdb.Exists(ctx, "t:soldout:{p}").Result()
			if err != nil || (n == 1) != tc.flagStays {
				t.Errorf("flag in Redis: %d (%v); want it there: %v", n, err, tc.flagStays)
			}
		})
	}
}

// A product's flag is checked again each CheckInterval, not once for good:
// a flag that comes back stale after a first check removed one (another
// rollback of Redis) goes too.
func TestStaleFlagIsCheckedAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	var committed atomic.Int64
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond,
		CheckInterval: 100 * time.Millisecond,
		Committed: func(context.Context, string) (int64, error) {
			return committed.Load(), nil
		}})
	for round, flagGen := range []int64{1, 2} {
		committed.Store(flagGen + 1) // a restock committed after the flag was set
		if set, err := g.Mark(ctx, "p", flagGen); err != nil || !set {
			t.Fatalf("round %d: Mark(%d) = %v, %v", round, flagGen, set, err)
		}
		testenv.Eventually(t, 10*time.Second, func() error {
			if got, err := g.SoldOut(ctx, "p"); err != nil || got {
				return fmt.Errorf("round %d: SoldOut = %v, %v; want the stale flag removed", round, got, err)
			}
			return nil
		})
	}
}

// Checks of a flag against Options.Committed are rationed, a slow or failing
// database not asked at every read (once per CacheTTL per product and
// process): one check of a product at a time, and one that failed is tried
// again only after checkBackoff (5s), far longer than this test's reads.
func TestChecksOfAFlagAreRationed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	var calls atomic.Int64
	release := make(chan struct{})
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond,
		CheckInterval: time.Hour,
		Committed: func(context.Context, string) (int64, error) {
			if calls.Add(1) == 1 {
				<-release // a slow database
			}
			return 0, errors.New("database down")
		}})
	markWithACheckDue(ctx, t, g, "p")
	read := readUntilChecked(ctx, t, g, "p", &calls, "the flag is trusted while it cannot be checked")
	for range 20 { // while the check is in flight
		read()
	}
	close(release)
	for range 100 { // after it failed
		read()
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("Committed called %d times, want 1: one check in flight at a time, and none again before checkBackoff", n)
	}
}

// A flag whose check succeeded (it stands: set at the committed generation)
// is not checked again before CheckInterval: a check that found nothing to
// remove is recorded as well as one that failed, or the database is asked
// at every read of a sold-out product (once per CacheTTL per product and
// process).
func TestCheckedFlagIsNotCheckedAgainWithinCheckInterval(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	var calls atomic.Int64
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond,
		CheckInterval: time.Hour,
		Committed: func(context.Context, string) (int64, error) {
			calls.Add(1)
			return 0, nil // the flag's own generation: it stands
		}})
	markWithACheckDue(ctx, t, g, "p")
	read := readUntilChecked(ctx, t, g, "p", &calls, "the flag is current")
	// Reads for a while after it: each would start a check were the
	// first one not recorded.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		read()
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("Committed called %d times, want 1: a flag checked and found current is not checked again within CheckInterval", n)
	}
}

// A reset while a check of a flag is in flight (a reconnect: Redis may have
// gone back to a state from before a restock; here the epochs trimmed) makes
// a new check due, even though that one then succeeds: it read the committed
// generation against the flag from before the reset, and is recorded as of
// the reset count it began with, not the one it ended with.
func TestResetDuringACheckMakesAnotherDue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	var calls atomic.Int64
	release := make(chan struct{})
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond,
		CheckInterval: time.Hour,
		Committed: func(context.Context, string) (int64, error) {
			if calls.Add(1) == 1 {
				<-release
				return 0, nil // the flag's own generation: it stands
			}
			return 1, nil // a restock committed since: the flag is stale
		}})
	markWithACheckDue(ctx, t, g, "p")
	readUntilChecked(ctx, t, g, "p", &calls, "not checked yet")
	// While the check waits on the database, another reset.
	if _, err := g.Reopen(ctx, "q3", 0); err != nil {
		t.Fatal(err)
	}
	close(release)
	testenv.Eventually(t, 10*time.Second, func() error {
		if got, err := g.SoldOut(ctx, "p"); err != nil || got {
			return fmt.Errorf("SoldOut = %v, %v; want the stale flag removed by a check after the reset (Committed called %d times)", got, err, calls.Load())
		}
		return nil
	})
}

// failScript is a go-redis hook that fails the first script call
// (EVALSHA or EVAL) once armed, before it is sent.
type failScript struct{ armed atomic.Bool }

func (h *failScript) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if (cmd.Name() == "evalsha" || cmd.Name() == "eval") && h.armed.CompareAndSwap(true, false) {
			cmd.SetErr(errors.New("injected: script call failed"))
			return cmd.Err()
		}
		return next(ctx, cmd)
	}
}

func (h *failScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A check that found a stale flag but failed to remove it (its Confirm
// failed) counts as a failed check, tried again after checkBackoff (5s),
// not as a done one, which leaves the stale flag refusing orders until
// CheckInterval (an hour here).
func TestCheckWhoseRemovalFailedIsTriedAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	client := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr, DB: rdb.Options().DB})
	t.Cleanup(func() { _ = client.Close() })
	fail := &failScript{}
	client.AddHook(fail)
	var calls atomic.Int64
	g := soldout.New(client, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond,
		CheckInterval: time.Hour,
		Committed: func(context.Context, string) (int64, error) {
			calls.Add(1)
			return 1, nil // a restock committed after the flag was set
		}})
	markWithACheckDue(ctx, t, g, "p")
	fail.armed.Store(true) // the check's Confirm fails
	testenv.Eventually(t, 15*time.Second, func() error {
		if got, err := g.SoldOut(ctx, "p"); err != nil || got {
			return fmt.Errorf("SoldOut = %v, %v; want the stale flag removed by a check tried again (Committed called %d times)", got, err, calls.Load())
		}
		return nil
	})
	if fail.armed.Load() {
		t.Fatal("no script call failed: the test did not test a failed removal")
	}
	if n := calls.Load(); n < 2 {
		t.Fatalf("Committed called %d times, want 2 or more (the failed removal's check, then another)", n)
	}
}

// A failed check of a flag is tried again after checkBackoff (5s) or after
// CheckInterval, whichever is shorter: with a CheckInterval under 5s, a
// failure does not hold the repair back longer than a success would.
func TestFailedCheckIsTriedAgainAfterAShortCheckInterval(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	var calls atomic.Int64
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond,
		CheckInterval: 100 * time.Millisecond,
		Committed: func(context.Context, string) (int64, error) {
			if calls.Add(1) == 1 {
				return 0, errors.New("database down")
			}
			return 1, nil // a restock committed after the flag was set
		}})
	if set, err := g.Mark(ctx, "p", 0); err != nil || !set {
		t.Fatalf("Mark = %v, %v", set, err)
	}
	// Well under checkBackoff: the retry is due 100ms after the failure.
	testenv.Eventually(t, 3*time.Second, func() error {
		if got, err := g.SoldOut(ctx, "p"); err != nil || got {
			return fmt.Errorf("SoldOut = %v, %v; want the stale flag removed by the check tried again (Committed called %d times)", got, err, calls.Load())
		}
		return nil
	})
}

// A check of a flag is bounded (readTimeout): against a database that hangs
// (Committed waits until its context ends), it fails in time and is tried
// again after checkBackoff. Unbounded, it would hang for good, and as one
// check of a product runs at a time, no later check would ever remove the
// product's stale flag.
func TestCheckOnAHungDatabaseIsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	var calls atomic.Int64
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Nanosecond, OpenTTL: time.Nanosecond,
		CheckInterval: time.Hour,
		Committed: func(ctx context.Context, _ string) (int64, error) {
			if calls.Add(1) == 1 { // hung until its context ends
				select {
				case <-ctx.Done():
					return 0, ctx.Err()
				case <-done:
					return 0, errors.New("test over")
				}
			}
			return 1, nil // a restock committed after the flag was set
		}})
	markWithACheckDue(ctx, t, g, "p")
	// About readTimeout (2s) plus checkBackoff (5s).
	testenv.Eventually(t, 20*time.Second, func() error {
		if got, err := g.SoldOut(ctx, "p"); err != nil || got {
			return fmt.Errorf("SoldOut = %v, %v; want the stale flag removed once the hung check gave up (Committed called %d times)", got, err, calls.Load())
		}
		return nil
	})
}

// A "sold out" is answered from the cache for CacheTTL, as a "not sold out"
// is for OpenTTL: a sold-out product is the one every buyer keeps ordering,
// and a read of Redis for each of its orders is the load the fast path
// saves.
func TestSoldOutIsAnsweredFromTheCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	client := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr, DB: rdb.Options().DB})
	t.Cleanup(func() { _ = client.Close() })
	gets := &getCounter{sent: make(chan struct{}, 1)}
	client.AddHook(gets)
	g := soldout.New(client, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Hour, OpenTTL: time.Hour})
	if ok, err := g.Mark(ctx, "p", 0); err != nil || !ok {
		t.Fatalf("Mark = %v, %v; want true, nil", ok, err)
	}
	for range 10 {
		if got, err := g.SoldOut(ctx, "p"); err != nil || !got {
			t.Fatalf("SoldOut = %v, %v; want true, nil", got, err)
		}
	}
	if n := gets.n.Load(); n != 1 {
		t.Fatalf("%d GETs of the flag for 10 reads within CacheTTL, want 1", n)
	}
}

// heldClient is a client of rdb's Redis whose first GET's answer is held
// back (heldReply) until release is called, as it is at cleanup at the
// latest; contextTimeout sets its ContextTimeoutEnabled.
func heldClient(t *testing.T, rdb *redis.Client, contextTimeout bool) (slow *redis.Client, held *heldReply, release func()) {
	t.Helper()
	slow = redis.NewClient(&redis.Options{Addr: rdb.Options().Addr, DB: rdb.Options().DB, ContextTimeoutEnabled: contextTimeout})
	t.Cleanup(func() { _ = slow.Close() })
	held = &heldReply{answered: make(chan struct{}), release: make(chan struct{})}
	slow.AddHook(held)
	released := false
	release = func() {
		if !released {
			released = true
			close(held.release)
		}
	}
	t.Cleanup(release)
	return slow, held, release
}

// heldReply is a go-redis hook that holds back the answer of the first GET
// until released, once Redis has answered it: a reply slow to reach its
// caller (a loaded machine, a client whose own read timeout is longer than
// the gate's bound).
type heldReply struct {
	once     atomic.Bool
	answered chan struct{}
	release  chan struct{}
}

func (h *heldReply) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *heldReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "get" && h.once.CompareAndSwap(false, true) {
			close(h.answered)
			<-h.release
		}
		return err
	}
}

func (h *heldReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A "sold out" read before a restock was announced must not reach a caller
// once the restock may have added its stock (Settle after its Reopen): the
// read's answer is slow to arrive here, and the gate trusted whatever a
// shared read brought back, however late, for as long as readTimeout (2s)
// or the client's own read timeout, while Settle is 2*CacheTTL+100ms.
func TestLateReadDoesNotRefuseAfterARestock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	slow, held, release := heldClient(t, rdb, true)

	api := soldout.New(slow, soldout.Options{KeyPrefix: prefix, CacheTTL: 50 * time.Millisecond, OpenTTL: time.Hour})
	other := soldout.New(rdb, soldout.Options{KeyPrefix: prefix, CacheTTL: 50 * time.Millisecond})
	if ok, err := other.Mark(ctx, "p", 0); err != nil || !ok {
		t.Fatalf("Mark = %v, %v; want true, nil", ok, err)
	}
	type answer struct {
		sold bool
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		sold, err := api.SoldOut(ctx, "p")
		got <- answer{sold, err}
	}()
	select {
	case <-held.answered: // Redis said "sold out", before the restock
	case <-time.After(10 * time.Second):
		t.Fatal("no GET answered within 10s")
	}
	// A restock: announced, then its wait (as sale's restock waits), after
	// which its stock is there.
	if _, err := other.Reopen(ctx, "p", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(api.Settle())
	release()
	select {
	case a := <-got:
		if a.sold {
			t.Fatalf("SoldOut answered %v, %v a Settle after the restock's Reopen; want false (stock may be there)", a.sold, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SoldOut did not answer within 10s of the reply's release")
	}
}

// A "sold out" a read brings back late is cached as of when the read began,
// not when its answer arrived: counted from its arrival, a read from before
// a restock's Reopen, answered within freshFor, would be trusted for up to
// CacheTTL more, past the Settle after which the restock adds its stock. The
// gate runs no subscription here (or missed the Reopen's announcement), so
// nothing else drops the cached answer.
func TestLateReadIsCachedFromWhenItBegan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := sharedRedis(t)
	slow, held, release := heldClient(t, rdb, true)

	// CacheTTL 1s: Settle 2.1s, and a read's answer is given to callers for
	// 2.05s after it began.
	api := soldout.New(slow, soldout.Options{KeyPrefix: prefix, CacheTTL: time.Second, OpenTTL: time.Hour})
	other := soldout.New(rdb, soldout.Options{KeyPrefix: prefix})
	if ok, err := other.Mark(ctx, "p", 0); err != nil || !ok {
		t.Fatalf("Mark = %v, %v; want true, nil", ok, err)
	}
	began := time.Now()
	got := make(chan bool, 1)
	go func() {
		sold, _ := api.SoldOut(ctx, "p")
		got <- sold
	}()
	select {
	case <-held.answered: // Redis said "sold out", before the restock
	case <-time.After(10 * time.Second):
		t.Fatal("no GET answered within 10s")
	}
	if _, err := other.Reopen(ctx, "p", 0); err != nil {
		t.Fatal(err)
	}
	reopened := time.Now()
	// The answer arrives 1.5s after the read began: still given to its
	// caller (it raced the Reopen), and cached.
	time.Sleep(time.Until(began.Add(1500 * time.Millisecond)))
	release()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("SoldOut did not answer within 10s of the reply's release")
	}
	// The restock's wait (as sale's restock waits): its stock is there now.
	time.Sleep(time.Until(reopened.Add(api.Settle())))
	if sold, err := api.SoldOut(ctx, "p"); err != nil || sold {
		t.Fatalf("SoldOut a Settle after the restock's Reopen = %v, %v; want false, nil (the late answer was trusted past CacheTTL from its read)", sold, err)
	}
}

// markWithACheckDue marks product sold out on g with a check of its flag
// due at the next read from Redis, as after a reconnect: two reopens of
// other products with room for one make the gate trim its epochs, which
// counts a reset.
func markWithACheckDue(ctx context.Context, t *testing.T, g *soldout.Gate, product string) {
	t.Helper()
	soldout.SetMaxTracked(g, 1)
	for _, q := range []string{"q1", "q2"} {
		if _, err := g.Reopen(ctx, q, 0); err != nil {
			t.Fatal(err)
		}
	}
	if set, err := g.Mark(ctx, product, 0); err != nil || !set {
		t.Fatalf("Mark = %v, %v", set, err)
	}
}

// readUntilChecked reads product on g, wanting it sold out (why says why),
// until a check of its flag has called Committed (counted by calls), and
// returns that read for the test to repeat.
func readUntilChecked(ctx context.Context, t *testing.T, g *soldout.Gate, product string, calls *atomic.Int64, why string) (read func()) {
	t.Helper()
	read = func() {
		t.Helper()
		if got, err := g.SoldOut(ctx, product); err != nil || !got {
			t.Fatalf("SoldOut = %v, %v; want true (%s)", got, err, why)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		read()
		if calls.Load() == 0 {
			return errors.New("no check started")
		}
		return nil
	})
	return read
}
