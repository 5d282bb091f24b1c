package notify_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/notify"
)

// run starts hub and waits for its subscription; the returned function
// stops it and returns what Run returned.
// runningHub returns a running hub on the shared Redis, under a prefix of
// the test's own, and a publisher to it.
func runningHub(t *testing.T) (*notify.Hub, *notify.Publisher) {
	t.Helper()
	rdb := testenv.Redis(t)
	prefix := "t:" + testenv.Namespace(t) + ":"
	hub := notify.NewHub(rdb, prefix)
	run(t, hub)
	return hub, notify.NewPublisher(rdb, prefix)
}

func run(t *testing.T, hub *notify.Hub) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("Run did not subscribe within 10s")
	}
	stopped := false
	var err error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// ids makes id-only announcements.
func ids(ids ...string) []notify.Outcome {
	out := make([]notify.Outcome, len(ids))
	for i, id := range ids {
		out[i] = notify.Outcome{OrderID: id}
	}
	return out
}

func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestPublishWakesTheWatchersOfThoseIDs(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t)
	prefix := "t:" + testenv.Namespace(t) + ":"
	hub := notify.NewHub(rdb, prefix)
	run(t, hub)
	pub := notify.NewPublisher(rdb, prefix)
	ctx := context.Background()

	wa1 := hub.Watch("A")
	defer wa1.Stop()
	wa2 := hub.Watch("A")
	defer wa2.Stop()
	wb := hub.Watch("B")
	defer wb.Stop()
	wc := hub.Watch("C")
	a1, a2, b, c := wa1.C, wa2.C, wb.C, wc.C
	if got := hub.Waiting(); got != 4 {
		t.Fatalf("Waiting() = %d, want 4", got)
	}
	wc.Stop() // stopped watching: never woken, not counted
	if got := hub.Waiting(); got != 3 {
		t.Fatalf("Waiting() after a stop = %d, want 3", got)
	}

	// Another prefix is another channel.
	other := notify.NewPublisher(rdb, prefix+"other:")
	if err := other.Publish(ctx, ids("A", "B", "C")...); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, notify.Outcome{OrderID: "A", Status: "succeeded", Quantity: 2}, notify.Outcome{OrderID: "X"}, notify.Outcome{OrderID: "C"}); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(a1, 10*time.Second) || !closedWithin(a2, 10*time.Second) {
		t.Fatal("watchers of A were not woken")
	}
	// The watchers get the announced outcome.
	if o, ok := wa1.Outcome(); !ok || o.Status != "succeeded" || o.Quantity != 2 {
		t.Errorf("A's outcome = %+v, %v; want the announced one", o, ok)
	}
	if _, ok := wb.Outcome(); ok {
		t.Error("B has an outcome before its announcement")
	}
	// The other channel's message and this one were sent before A's wake;
	// B and C stay asleep.
	if isClosed(b) || isClosed(c) {
		t.Fatalf("woken: B %v, C %v; want neither", isClosed(b), isClosed(c))
	}
	if got := hub.Waiting(); got != 1 {
		t.Fatalf("Waiting() after A was announced = %d, want 1 (B)", got)
	}
	// A woken id is forgotten: a new watch waits for the next announcement.
	wa3 := hub.Watch("A")
	defer wa3.Stop()
	a3 := wa3.C
	if isClosed(a3) {
		t.Fatal("a new watcher of A is woken by an old announcement")
	}
	if err := pub.Publish(ctx, ids("B")...); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(b, 10*time.Second) {
		t.Fatal("watcher of B was not woken")
	}
	// An announcement with the id only: woken, but no outcome to answer from.
	if _, ok := wb.Outcome(); ok {
		t.Error("B's id-only announcement gave an outcome")
	}
	if isClosed(a3) {
		t.Fatal("announcing B woke a watcher of A")
	}
	// Nothing to announce sends nothing: a worker's empty batch costs no
	// message to every API process. The next message on the channel is the
	// one published after it.
	sub := rdb.Subscribe(ctx, notify.Channel(prefix))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	if err := pub.Publish(ctx); err != nil {
		t.Fatalf("Publish(nil) = %v, want nil", err)
	}
	if err := pub.Publish(ctx, ids("Z")...); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := sub.ReceiveMessage(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"order_id":"Z"}]`; msg.Payload != want {
		t.Fatalf("first message after Publish(nil) = %s, want %s (Publish(nil) sent a message)", msg.Payload, want)
	}
}

func TestRunStopsWithItsContext(t *testing.T) {
	t.Parallel()
	hub := notify.NewHub(testenv.Redis(t), "t:"+testenv.Namespace(t)+":")
	stop := run(t, hub)
	w := hub.Watch("A")
	defer w.Stop()
	ch := w.C
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if isClosed(ch) {
		t.Fatal("stopping the hub woke a watcher")
	}
}

func TestRunFailsWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	hub := notify.NewHub(testenv.UnreachableRedis(t), "x:")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hub.Run(ctx, func() { t.Error("ready called without a subscription") }); err == nil {
		t.Fatal("Run with Redis down = nil, want an error")
	}
	pub := notify.NewPublisher(testenv.UnreachableRedis(t), "x:")
	if err := pub.Publish(ctx, ids("A")...); err == nil {
		t.Fatal("Publish with Redis down = nil, want an error")
	}
}

func TestWatchStopIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	hub := notify.NewHub(nil, "x:") // never run: no Redis needed
	done := make(chan struct{})
	for i := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 100 {
				w := hub.Watch(fmt.Sprint("id", (i+j)%5))
				w.Stop()
				w.Stop()
			}
		}()
	}
	for range 8 {
		<-done
	}
	if got := hub.Waiting(); got != 0 {
		t.Fatalf("Waiting() = %d, want 0", got)
	}
}

// After the subscription reconnects (here: Redis restarted), announcements
// made meanwhile may be lost: every waiter is woken, with no outcome, to
// read its order again rather than wait for its next re-check.
func TestReconnectWakesWaiters(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	hub := notify.NewHub(rdb, "x:")
	run(t, hub)
	w := hub.Watch("A")
	defer w.Stop()
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if isClosed(w.C) {
		t.Fatal("woken by the outage alone")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(w.C, 20*time.Second) {
		t.Fatal("waiter not woken within 20s of Redis coming back")
	}
	if o, ok := w.Outcome(); ok {
		t.Fatalf("woken with outcome %+v, want none (read the order again)", o)
	}
}

// A subscription connection that Redis drops (CLIENT KILL, a proxy's idle
// cut) while Redis stays up wakes every waiter, with no outcome (each reads
// its order again: an announcement may have been missed), and
// announcements arrive again after the hub has subscribed anew; three
// rounds. TestReconnectWakesWaiters covers a Redis restart.
func TestKilledSubscriptionWakesWaiters(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	admin := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	hub := notify.NewHub(rdb, "x:")
	run(t, hub)
	pub := notify.NewPublisher(admin, "x:")
	ctx := context.Background()
	for i := range 3 {
		// Several orders, one of them long-polled twice: the wake reaches
		// the waiters of every order, not only those of one.
		ws := []*notify.Watch{hub.Watch("A"), hub.Watch("A"), hub.Watch("C"), hub.Watch("D")}
		if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		for k, w := range ws {
			if !closedWithin(w.C, 10*time.Second) {
				t.Fatalf("round %d: waiter %d not woken within 10s of its subscription's loss", i, k)
			}
			if o, ok := w.Outcome(); ok {
				t.Fatalf("round %d: waiter %d woken with outcome %+v, want none", i, k, o)
			}
		}
		if n := hub.Waiting(); n != 0 {
			t.Fatalf("round %d: Waiting() after the wake = %d, want 0 (a woken watch is forgotten: a later announcement or wake must not close its channel again)", i, n)
		}
		for _, w := range ws {
			w.Stop()
		}
		w2 := hub.Watch("B")
		testenv.Eventually(t, 10*time.Second, func() error {
			_ = pub.Publish(ctx, notify.Outcome{OrderID: "B", Status: "succeeded"})
			select {
			case <-w2.C:
				return nil
			case <-time.After(100 * time.Millisecond):
				return fmt.Errorf("round %d: no announcement through the new subscription yet", i)
			}
		})
		w2.Stop()
	}
}

// Every outcome of an announcement reaches its watchers, whatever comes
// before it, and each watcher gets its own order's outcome: a worker
// announces a whole batch, most of whose orders nobody watches.
func TestEveryOutcomeOfAnAnnouncementIsDispatched(t *testing.T) {
	t.Parallel()
	hub, pub := runningHub(t)
	tests := []struct {
		name      string
		announced []string
	}{
		{"watched first", []string{"W1", "X1", "Y1"}},
		{"watched after unwatched ones", []string{"X2", "Y2", "W2"}},
		{"watched between unwatched ones", []string{"X3", "W3", "Y3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id := tt.announced[slices.IndexFunc(tt.announced, func(s string) bool { return s[0] == 'W' })]
			w := hub.Watch(id)
			defer w.Stop()
			// Each outcome its own, so that a watcher handed another
			// order's outcome of the batch tells.
			outcomes := make([]notify.Outcome, len(tt.announced))
			for i, a := range tt.announced {
				outcomes[i] = notify.Outcome{OrderID: a, Status: "succeeded", Quantity: i + 1}
			}
			if err := pub.Publish(context.Background(), outcomes...); err != nil {
				t.Fatal(err)
			}
			if !closedWithin(w.C, 10*time.Second) {
				t.Fatalf("watcher of %s not woken by the announcement of %v", id, tt.announced)
			}
			want := outcomes[slices.Index(tt.announced, id)]
			if o, ok := w.Outcome(); !ok || o != want {
				t.Fatalf("watcher of %s got outcome %+v, %v; want its own, %+v", id, o, ok, want)
			}
		})
	}
}

// Stopping one watch of an order leaves its other watches (another long
// poll of the same order) registered and woken by its announcement.
func TestStopLeavesTheOtherWatchesOfAnOrder(t *testing.T) {
	t.Parallel()
	hub, pub := runningHub(t)
	stopped, kept := hub.Watch("A"), hub.Watch("A")
	defer kept.Stop()
	stopped.Stop()
	if got := hub.Waiting(); got != 1 {
		t.Fatalf("Waiting() after stopping one of two watches = %d, want 1", got)
	}
	if err := pub.Publish(context.Background(), notify.Outcome{OrderID: "A", Status: "succeeded"}); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(kept.C, 10*time.Second) {
		t.Fatal("the remaining watch of A was not woken")
	}
	if isClosed(stopped.C) {
		t.Error("a stopped watch was woken")
	}
}

// A watch's outcome is there only once C is closed: a waiter that reads it
// while the announcement is being dispatched gets nothing (ok false), never
// an outcome C does not yet vouch for, half written.
func TestOutcomeWaitsForTheWake(t *testing.T) {
	t.Parallel()
	hub, pub := runningHub(t)
	w := hub.Watch("A")
	defer w.Stop()
	seen := make(chan bool, 1) // whether C was closed when ok was first true
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			if _, ok := w.Outcome(); ok {
				seen <- isClosed(w.C)
				return
			}
			select {
			case <-stop:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	if err := pub.Publish(context.Background(), notify.Outcome{OrderID: "A", Status: "succeeded", Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case closed := <-seen:
		if !closed {
			t.Fatal("Outcome() ok before C was closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome within 10s of the announcement")
	}
}

// The announcement's wire format is fixed: workers and API processes of
// different builds share the channel during a rolling deploy, so a field
// renamed on one side would reach the other as a missing one (an outcome
// without its status: a long poll answered from nothing, or not at all).
func TestAnnouncementWireFormat(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t)
	prefix := "t:" + testenv.Namespace(t) + ":"
	hub := notify.NewHub(rdb, prefix)
	run(t, hub)
	created := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	want := notify.Outcome{OrderID: "A", ProductID: "p1", UserID: "u1", Quantity: 2, Status: "failed", Reason: "sold_out", CreatedAt: created, UpdatedAt: created.Add(time.Second)}
	const wire = `[{"order_id":"A","product_id":"p1","user_id":"u1","quantity":2,"status":"failed","reason":"sold_out","created_at":"2026-11-27T12:00:00Z","updated_at":"2026-11-27T12:00:01Z"}]`

	// Received as written by another build.
	w := hub.Watch("A")
	defer w.Stop()
	if err := rdb.Publish(context.Background(), notify.Channel(prefix), wire).Err(); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(w.C, 10*time.Second) {
		t.Fatal("watcher of A not woken by the announcement")
	}
	o, ok := w.Outcome()
	times := o.CreatedAt.Equal(want.CreatedAt) && o.UpdatedAt.Equal(want.UpdatedAt)
	o.CreatedAt, o.UpdatedAt = want.CreatedAt, want.UpdatedAt // compared above
	if !ok || !times || o != want {
		got, _ := w.Outcome()
		t.Fatalf("outcome = %+v, %v; want %+v", got, ok, want)
	}

	// Written as another build reads it.
	ctx := context.Background()
	sub := rdb.Subscribe(ctx, notify.Channel(prefix))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	if err := notify.NewPublisher(rdb, prefix).Publish(ctx, want); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := sub.ReceiveMessage(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Payload != wire {
		t.Fatalf("published %s, want %s", msg.Payload, wire)
	}
}

// An announcement that does not decode in full (a field of another type,
// from another build) is ignored, not dispatched as far as it decoded: its
// watchers would be handed an outcome with fields missing (a quantity of 0
// for a succeeded order). They wait for their re-check instead.
func TestUndecodableAnnouncementIsIgnored(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t)
	prefix := "t:" + testenv.Namespace(t) + ":"
	hub := notify.NewHub(rdb, prefix)
	run(t, hub)
	ctx := context.Background()
	a, b := hub.Watch("A"), hub.Watch("B")
	defer a.Stop()
	defer b.Stop()
	for _, msg := range []string{
		`[{"order_id":"A","status":"succeeded","quantity":"2"}]`,
		`[{"order_id":"B"}]`, // after it on the channel: once B is woken, A's was handled
	} {
		if err := rdb.Publish(ctx, notify.Channel(prefix), msg).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if !closedWithin(b.C, 10*time.Second) {
		t.Fatal("watcher of B not woken by its announcement")
	}
	if isClosed(a.C) {
		o, ok := a.Outcome()
		t.Fatalf("watcher of A woken by an announcement that does not decode, with outcome %+v, %v; want it ignored", o, ok)
	}
}
