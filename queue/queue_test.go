package queue_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/queue/queuetest"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func order(id string) queue.Order {
	return queue.Order{ID: id, ProductID: "p1", UserID: "u1", Quantity: 2, IdempotencyKey: "k1", AcceptedAt: t0}
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	want := order("01JABCDEFGHJKMNPQRSTVWXYZ0")
	task, err := queue.Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	if task.Type() != queue.TypeOrder {
		t.Errorf("task type = %q, want %q", task.Type(), queue.TypeOrder)
	}
	got, err := queue.Decode(task.Payload())
	if err != nil || got != want {
		t.Fatalf("Decode(Encode(o)) = %+v, %v; want %+v, nil", got, err, want)
	}

	bad := []string{
		``, `null`, `[]`, `{"id":`, `"x"`,
		`{}`,
		`{"product_id":"p","user_id":"u","quantity":1}`,
		`{"id":"o","user_id":"u","quantity":1}`,
		`{"id":"o","product_id":"p","quantity":1}`,
		`{"id":"o","product_id":"p","user_id":"u"}`,
		`{"id":"o","product_id":"p","user_id":"u","quantity":0}`,
		`{"id":"o","product_id":"p","user_id":"u","quantity":-3}`,
		`{"id":"o","product_id":"p","user_id":"u","quantity":"1"}`,
		`{"id":"o","product_id":"p","user_id":"u","quantity":2147483648}`,
	}
	// What PostgreSQL's text columns and their indexes cannot hold: refused,
	// and nothing of it returned (Lookup reports what Decode returns).
	unstorable := []string{
		`{"id":"o\u0000","product_id":"p","user_id":"u","quantity":1}`,
		`{"id":"o","product_id":"p\u0000","user_id":"u","quantity":1}`,
		`{"id":"o","product_id":"p","user_id":"u\u0000","quantity":1}`,
		`{"id":"o","product_id":"p","user_id":"u","quantity":1,"idempotency_key":"k\u0000"}`,
		`{"id":"\u0000o","product_id":"p","user_id":"u","quantity":1}`, // a NUL first, too
		`{"id":"o","product_id":"p","user_id":"` + strings.Repeat("u", queue.MaxFieldBytes+1) + `","quantity":1}`,
		`{"id":"o","product_id":"p","user_id":"u","quantity":1,"idempotency_key":"` + strings.Repeat("k", queue.MaxFieldBytes+1) + `"}`,
	}
	for _, payload := range bad {
		if _, err := queue.Decode([]byte(payload)); !errors.Is(err, queue.ErrBadPayload) {
			t.Errorf("Decode(%.80s) error = %v, want ErrBadPayload", payload, err)
		}
	}
	for _, payload := range unstorable {
		if o, err := queue.Decode([]byte(payload)); !errors.Is(err, queue.ErrBadPayload) || o != (queue.Order{}) {
			t.Errorf("Decode(%.80s) = %#v, %v; want nothing, ErrBadPayload", payload, o, err)
		}
	}
	// The largest quantity Decode takes: what the orders table stores.
	if o, err := queue.Decode([]byte(`{"id":"o","product_id":"p","user_id":"u","quantity":2147483647}`)); err != nil || o.Quantity != math.MaxInt32 {
		t.Errorf("Decode of quantity %d = %+v, %v; want it taken", math.MaxInt32, o, err)
	}
	// The longest field Decode takes.
	long := strings.Repeat("u", queue.MaxFieldBytes)
	if o, err := queue.Decode([]byte(`{"id":"o","product_id":"p","user_id":"` + long + `","quantity":1}`)); err != nil || o.UserID != long {
		t.Errorf("Decode of a %d-byte user_id: %v", queue.MaxFieldBytes, err)
	}
}

// The options each URL gives are in topology_test.go; here, that an error
// never shows the URL's password.
func TestParseRedisURLErrorsHidePassword(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"http://h:1",
		"redis://u:p%zzsecretpw@h:1/0", // does not parse: the error must not show it
		"redis://h:1/notanumber",
		"redis-cluster://",
		"redis-sentinel://s1:26379",                                  // no master
		"redis-sentinel://:secretpw@s1:26379/x?master=m",             // not a database number
		"redis-sentinel://s1:26379?master=m&password=secretpw&foo=1", // a parameter not read
		"redis://:secretpw@h:1/0?pool_size=x",                        // go-redis's parse of the parameters
	} {
		_, err := queue.ParseRedisURL(bad, 0)
		if err == nil {
			t.Errorf("ParseRedisURL(%q) = nil error, want one", bad)
			continue
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("ParseRedisURL(%q) error %q shows the password", bad, err)
		}
	}
}

type env struct {
	rdb       *redis.Client
	name      string
	producer  *queue.Producer
	inspector *queue.Inspector
	asynq     *asynq.Inspector
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rdb := testenv.Redis(t)
	name := "q_" + testenv.Namespace(t)
	testenv.DeleteKeys(t, rdb, "asynq:{"+name+"}")
	t.Cleanup(func() { rdb.SRem(context.Background(), "asynq:queues", name) })
	opts := queue.Options{Queue: name}
	ai := asynq.NewInspectorFromRedisClient(rdb)
	return &env{rdb: rdb, name: name, asynq: ai,
		producer:  queue.NewProducer(asynq.NewClientFromRedisClient(rdb), opts),
		inspector: queue.NewInspector(rdb, opts)}
}

// serve runs an asynq server of concurrency 1 on the test's queue. Tasks
// whose order id hold accepts are kept running until the returned release
// is called (or the server shuts down); the others succeed at once. At
// cleanup the held tasks are released and the server shut down.
func (e *env) serve(t *testing.T, hold func(id string) bool) (release func()) {
	t.Helper()
	ch := make(chan struct{})
	release = sync.OnceFunc(func() { close(ch) })
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{e.name: 1}, LogLevel: asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if o, _ := queue.Decode(task.Payload()); hold(o.ID) {
			select {
			case <-ch:
			case <-ctx.Done():
			}
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		release()
		srv.Shutdown()
	})
	return release
}

func TestEnqueueRefusesADuplicateID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if err := e.producer.Enqueue(ctx, order("A")); err != nil {
		t.Fatal(err)
	}
	second := order("A")
	second.Quantity = 5
	if err := e.producer.Enqueue(ctx, second); !errors.Is(err, queue.ErrDuplicate) {
		t.Fatalf("second Enqueue of A = %v, want ErrDuplicate", err)
	}
	if err := e.producer.Enqueue(ctx, order("B")); err != nil {
		t.Fatalf("Enqueue of B = %v, want nil", err)
	}
	// The first task is kept as it was.
	ti, err := e.inspector.Lookup(ctx, "A")
	if err != nil || ti.Order.Quantity != 2 {
		t.Fatalf("Lookup(A) = %+v, %v; want the first order (quantity 2)", ti, err)
	}
	info, err := e.asynq.GetTaskInfo(e.name, "A")
	if err != nil {
		t.Fatal(err)
	}
	if info.MaxRetry != 25 || info.Timeout != 30*time.Second || info.Queue != e.name {
		t.Errorf("task options: max retry %d, timeout %v, queue %q; want 25, 30s, %q", info.MaxRetry, info.Timeout, info.Queue, e.name)
	}
	st, err := e.inspector.Stats(ctx)
	if err != nil || st.Pending != 2 || st.Size != 2 || st.Queue != e.name {
		t.Fatalf("Stats = %+v, %v; want 2 pending in %s", st, err, e.name)
	}
}

// A rescue task's id derives from the stuck task's: one per stuck task, and
// a stuck rescue task can be rescued in turn.
func TestRescueIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	steps := []struct {
		stranded string
		wantErr  error
	}{
		{"A", nil},
		{"A", queue.ErrDuplicate},
		{"A" + queue.RescueSuffix, nil},
		// A chain is as deep as TaskIDs says, and no deeper.
		{"A" + strings.Repeat(queue.RescueSuffix, queue.MaxRescueDepth-1), nil},
		{"A" + strings.Repeat(queue.RescueSuffix, queue.MaxRescueDepth), queue.ErrRescueDepth},
	}
	for _, s := range steps {
		if err := e.producer.Rescue(ctx, s.stranded, order("A")); !errors.Is(err, s.wantErr) {
			t.Fatalf("Rescue(%q) = %v, want %v", s.stranded, err, s.wantErr)
		}
	}
	ids := queue.TaskIDs("A")
	if len(ids) != queue.MaxRescueDepth+1 || ids[0] != "A" || ids[2] != "A:rescue:rescue" {
		t.Errorf("TaskIDs(A) = %v", ids)
	}
	for _, id := range []string{"A:rescue", "A:rescue:rescue", ids[queue.MaxRescueDepth]} {
		info, err := e.asynq.GetTaskInfo(e.name, id)
		if err != nil {
			t.Fatalf("task %s: %v", id, err)
		}
		if o, err := queue.Decode(info.Payload); err != nil || o != order("A") {
			t.Errorf("task %s carries %+v, %v; want order A", id, o, err)
		}
	}
}

func TestLookupStates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	if _, err := e.inspector.Lookup(ctx, "none"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Lookup in a queue never used = %v, want ErrNotFound", err)
	}
	if st, err := e.inspector.Stats(ctx); err != nil || st != (queue.Stats{Queue: e.name}) {
		t.Fatalf("Stats of a queue never used = %+v, %v; want empty", st, err)
	}

	for _, id := range []string{"pending", "dead", "run"} {
		if err := e.producer.Enqueue(ctx, order(id)); err != nil {
			t.Fatal(err)
		}
	}
	want := func(id string, state queue.State) queue.TaskInfo {
		t.Helper()
		ti, err := e.inspector.Lookup(ctx, id)
		if err != nil || ti.State != state {
			t.Fatalf("Lookup(%s) = %+v, %v; want state %v", id, ti, err, state)
		}
		return ti
	}
	if ti := want("pending", queue.Waiting); ti.Order != order("pending") {
		t.Fatalf("Lookup(pending).Order = %+v, want %+v", ti.Order, order("pending"))
	}
	if _, err := e.inspector.Lookup(ctx, "none"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Lookup(none) = %v, want ErrNotFound", err)
	}

	// Dead: archived by asynq after its retries.
	if err := e.asynq.ArchiveTask(e.name, "dead"); err != nil {
		t.Fatal(err)
	}
	want("dead", queue.Dead)
	// A dead task is done with: not counted in the queue's size.
	if st, err := e.inspector.Stats(ctx); err != nil || st.Size != 2 || st.Pending != 2 || st.Archived != 1 {
		t.Fatalf("Stats with 2 pending and 1 archived = %+v, %v; want size 2", st, err)
	}
	if st, err := e.inspector.States(ctx, []string{"pending", "none", "dead", "run"}); err != nil || !reflect.DeepEqual(st, []queue.State{queue.Waiting, 0, queue.Dead, queue.Waiting}) {
		t.Fatalf("States = %v, %v; want [Waiting 0 Dead Waiting]", st, err)
	}

	// Running and Done need a server. Only "run" and "done" are pending
	// once "pending" is deleted.
	if err := e.asynq.DeleteTask(e.name, "pending"); err != nil {
		t.Fatal(err)
	}
	release := e.serve(t, func(id string) bool { return id == "run" })
	testenv.Eventually(t, 20*time.Second, func() error {
		ti, err := e.inspector.Lookup(ctx, "run")
		if err != nil || ti.State != queue.Running {
			return fmt.Errorf("Lookup(run) = %+v, %v; want Running", ti, err)
		}
		return nil
	})
	if st, err := e.inspector.States(ctx, []string{"run"}); err != nil || st[0] != queue.Running {
		t.Fatalf("States(run) = %v, %v; want Running", st, err)
	}
	release()
	testenv.Eventually(t, 20*time.Second, func() error {
		if _, err := e.inspector.Lookup(ctx, "run"); !errors.Is(err, queue.ErrNotFound) {
			return fmt.Errorf("Lookup(run) after success = %v, want ErrNotFound", err)
		}
		return nil
	})

	// Done: only seen when a task is kept after success.
	task, err := queue.Encode(order("done"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(e.rdb).EnqueueContext(ctx, task,
		asynq.TaskID("done"), asynq.Queue(e.name), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		ti, err := e.inspector.Lookup(ctx, "done")
		if err != nil || ti.State != queue.Done {
			return fmt.Errorf("Lookup(done) = %+v, %v; want Done", ti, err)
		}
		return nil
	})
	// Nor is a completed one.
	if st, err := e.inspector.Stats(ctx); err != nil || st.Size != 0 || st.Completed != 1 || st.Archived != 1 {
		t.Fatalf("Stats with 1 completed and 1 archived = %+v, %v; want size 0", st, err)
	}
}

// Active tells a task a live server runs from one stranded with no holder
// (lease still valid: a lost dequeue reply) and from one whose lease lapsed
// (a crashed worker).
func TestActiveTellsHeldFromStranded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if got, err := e.inspector.Active(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("Active of a queue never used = %+v, %v; want none", got, err)
	}
	for _, id := range []string{"lapsed", "stranded", "run"} {
		if err := e.producer.Enqueue(ctx, order(id)); err != nil {
			t.Fatal(err)
		}
	}
	if id := queuetest.Strand(t, e.rdb, e.name, time.Now().Add(-time.Second)); id != "lapsed" {
		t.Fatalf("stranded %q, want lapsed", id)
	}
	if id := queuetest.Strand(t, e.rdb, e.name, time.Now().Add(time.Minute)); id != "stranded" {
		t.Fatalf("stranded %q, want stranded", id)
	}
	e.serve(t, func(string) bool { return true })
	// The server lists "run" at its next heartbeat, within 5s.
	testenv.Eventually(t, 3*queue.HeartbeatInterval, func() error {
		got, err := e.inspector.Active(ctx, 10)
		if err != nil {
			return err
		}
		state := map[string]string{}
		for _, a := range got {
			if a.Order.ID != a.TaskID {
				return fmt.Errorf("task %s carries order %s", a.TaskID, a.Order.ID)
			}
			state[a.TaskID] = fmt.Sprintf("held=%v orphaned=%v", a.Held, a.Orphaned)
		}
		want := map[string]string{
			"lapsed":   "held=false orphaned=true",
			"stranded": "held=false orphaned=false",
			"run":      "held=true orphaned=false",
		}
		if !reflect.DeepEqual(state, want) {
			return fmt.Errorf("active tasks %v, want %v", state, want)
		}
		return nil
	})
	if got, err := e.inspector.Active(ctx, 1); err != nil || len(got) != 1 {
		t.Fatalf("Active with limit 1 = %d tasks, %v; want 1", len(got), err)
	}
}

// queuetest.Depth reads asynq's lists directly; it must agree with asynq.
func TestDepthAgreesWithAsynq(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for i := range 5 {
		if err := e.producer.Enqueue(ctx, order(fmt.Sprintf("o%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	queuetest.Strand(t, e.rdb, e.name, time.Now().Add(time.Minute))
	queuetest.Strand(t, e.rdb, e.name, time.Now().Add(time.Minute))
	pending, active, err := queuetest.Depth(ctx, e.rdb, e.name)
	if err != nil {
		t.Fatal(err)
	}
	q, err := e.asynq.GetQueueInfo(e.name)
	if err != nil {
		t.Fatal(err)
	}
	if pending != 3 || active != 2 || int(pending) != q.Pending || int(active) != q.Active {
		t.Fatalf("Depth = %d pending, %d active; asynq says %d, %d; want 3, 2", pending, active, q.Pending, q.Active)
	}
}

func TestUnavailableWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	rdb := testenv.UnreachableRedis(t)
	opts := queue.Options{Queue: "q"}
	ctx := context.Background()
	producer := queue.NewProducer(asynq.NewClientFromRedisClient(rdb), opts)
	inspector := queue.NewInspector(rdb, opts)
	if err := producer.Enqueue(ctx, order("A")); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Enqueue = %v, want ErrUnavailable", err)
	}
	if err := producer.Rescue(ctx, "A", order("A")); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Rescue = %v, want ErrUnavailable", err)
	}
	if _, err := inspector.Lookup(ctx, "A"); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Lookup = %v, want ErrUnavailable", err)
	}
	if _, err := inspector.Stats(ctx); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Stats = %v, want ErrUnavailable", err)
	}
	if _, err := inspector.States(ctx, []string{"A"}); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("States = %v, want ErrUnavailable", err)
	}
	if _, err := inspector.Active(ctx, 10); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Active = %v, want ErrUnavailable", err)
	}
	if _, _, err := inspector.Archived(ctx, 1, 10); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Archived = %v, want ErrUnavailable", err)
	}
	if err := inspector.Bury(ctx, order("A")); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Bury = %v, want ErrUnavailable", err)
	}
	if _, _, err := inspector.Buried(ctx, 0, 10); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Buried = %v, want ErrUnavailable", err)
	}
}

// Buried orders stay until unburied, whole, under the queue's own keys.
func TestBuryKeepsOrdersUntilUnburied(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ids := func(os []queue.Order) []string {
		var out []string
		for _, o := range os {
			out = append(out, o.ID)
		}
		slices.Sort(out)
		return out
	}
	if some, err := e.inspector.AnyBuried(ctx); err != nil || some {
		t.Fatalf("AnyBuried before burying = %v, %v; want false", some, err)
	}
	for _, id := range []string{"A", "B", "C"} {
		if err := e.inspector.Bury(ctx, order(id)); err != nil {
			t.Fatal(err)
		}
	}
	if some, err := e.inspector.AnyBuried(ctx); err != nil || !some {
		t.Fatalf("AnyBuried after burying = %v, %v; want true", some, err)
	}
	if err := e.inspector.Bury(ctx, order("A")); err != nil { // twice: kept once
		t.Fatal(err)
	}
	got, next, err := e.inspector.Buried(ctx, 0, 10)
	if err != nil || next != 0 || !slices.Equal(ids(got), []string{"A", "B", "C"}) {
		t.Fatalf("Buried = %v, %v; want A, B and C", ids(got), err)
	}
	if b := got[slices.IndexFunc(got, func(o queue.Order) bool { return o.ID == "B" })]; b != order("B") {
		t.Errorf("buried B = %+v, want %+v", b, order("B"))
	}
	// With no task, a buried order reads as dead, as its archived task
	// would; with one, as its task.
	if err := e.producer.Enqueue(ctx, order("C")); err != nil {
		t.Fatal(err)
	}
	if st, err := e.inspector.States(ctx, []string{"A", "C", "D"}); err != nil || !slices.Equal(st, []queue.State{queue.Dead, queue.Waiting, 0}) {
		t.Errorf("States(A buried, C buried and queued, D unknown) = %v, %v; want dead, waiting, none", st, err)
	}
	if ti, err := e.inspector.Lookup(ctx, "A"); err != nil || ti.State != queue.Dead || ti.Order != order("A") {
		t.Errorf("Lookup(buried A) = %+v, %v; want dead, with the order", ti, err)
	}
	if _, err := e.inspector.Lookup(ctx, "D"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Lookup(D) = %v, want ErrNotFound", err)
	}
	if err := e.inspector.Unbury(ctx, "A", "C", "never"); err != nil {
		t.Fatal(err)
	}
	// None: the rescue scan unburies what it settled, maybe nothing.
	if err := e.inspector.Unbury(ctx); err != nil {
		t.Errorf("Unbury of no ids = %v, want nil", err)
	}
	if got, _, err := e.inspector.Buried(ctx, 0, 10); err != nil || !slices.Equal(ids(got), []string{"B"}) {
		t.Fatalf("Buried after unburying A and C = %v, %v; want B", ids(got), err)
	}
	if n, err := e.rdb.Exists(ctx, "asynq:{"+e.name+"}:flashsale:buried").Result(); err != nil || n != 1 {
		t.Errorf("buried orders not under the queue's keys: %d, %v", n, err)
	}
}

func TestOptionsDefaults(t *testing.T) {
	t.Parallel()
	got := queue.Options{}.WithDefaults()
	want := queue.Options{Queue: "orders", MaxRetry: 25, Timeout: 30 * time.Second}
	if got != want {
		t.Fatalf("WithDefaults() = %+v, want %+v", got, want)
	}
	set := queue.Options{Queue: "q", MaxRetry: 3, Timeout: 5 * time.Second}
	if got := set.WithDefaults(); got != set {
		t.Fatalf("WithDefaults() of set options = %+v, want them unchanged", got)
	}
	// asynq stores a timeout in whole seconds: less than one would be none
	// at all (asynq's own default, 30 minutes), so it is the default too.
	for _, d := range []time.Duration{-time.Second, time.Nanosecond, 999 * time.Millisecond} {
		if got := (queue.Options{Timeout: d}).WithDefaults().Timeout; got != 30*time.Second {
			t.Errorf("WithDefaults() of a %v timeout = %v, want 30s", d, got)
		}
	}
	if got := (queue.Options{Timeout: time.Second}).WithDefaults().Timeout; got != time.Second {
		t.Errorf("WithDefaults() of a 1s timeout = %v, want it kept", got)
	}
}

// A command of the States pipeline that fails for another reason than "no
// such task" fails the call, even when the pipeline's first error is a
// missing task: an id must not read as "not queued" because its reply was
// lost.
func TestStatesReportsErrorsBehindAMissingTask(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	// A key of the wrong type answers HGET with WRONGTYPE: an error that
	// is not redis.Nil, after the first id's redis.Nil.
	if err := e.rdb.Set(ctx, "asynq:{"+e.name+"}:t:broken", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if st, err := e.inspector.States(ctx, []string{"none", "broken"}); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("States(none, broken) = %v, %v; want ErrUnavailable", st, err)
	}
}

// NewRedisClient keeps what ParseRedisURL read (address, database, pool,
// password) and ends calls at their context's deadline, for every kind of
// URL.
func TestNewRedisClientHonorsContextDeadlines(t *testing.T) {
	t.Parallel()
	single := func(c redis.UniversalClient) (bool, string) {
		o := c.(*redis.Client).Options()
		return o.ContextTimeoutEnabled, fmt.Sprintf("%s %s db %d pool %d password %q", o.Network, o.Addr, o.DB, o.PoolSize, o.Password)
	}
	for _, tc := range []struct {
		url  string
		read func(redis.UniversalClient) (timeouts bool, desc string)
		want string
	}{
		{"redis://:pw@127.0.0.1:6399/3", single, `tcp 127.0.0.1:6399 db 3 pool 17 password "pw"`},
		{"redis-socket:///tmp/r.sock?db=2", single, `unix /tmp/r.sock db 2 pool 17 password ""`},
		// A failover client is a *redis.Client dialing through the
		// sentinels: its options name no fixed address.
		{"redis-sentinel://127.0.0.1:26399/4?master=m", single, `tcp FailoverClient db 4 pool 17 password ""`},
		// The servers' password, not the sentinels'.
		{"redis-sentinel://:spw@127.0.0.1:26399/4?master=m&password=apw", single, `tcp FailoverClient db 4 pool 17 password "apw"`},
		{"redis-cluster://127.0.0.1:7001,127.0.0.1:7002", func(c redis.UniversalClient) (bool, string) {
			o := c.(*redis.ClusterClient).Options()
			return o.ContextTimeoutEnabled, strings.Join(o.Addrs, ",")
		}, "127.0.0.1:7001,127.0.0.1:7002"},
	} {
		opt, err := queue.ParseRedisURL(tc.url, 17)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		c, err := queue.NewRedisClient(opt)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		timeouts, desc := tc.read(c)
		_ = c.Close()
		if !timeouts {
			t.Errorf("%s: ContextTimeoutEnabled is off", tc.url)
		}
		if desc != tc.want {
			t.Errorf("%s: client options %s, want %s", tc.url, desc, tc.want)
		}
	}
}

// The producer's options reach every task it queues, an order's and a
// rescue's, and not asynq's defaults (25 retries, as ours, and 30 minutes).
func TestTasksCarryTheProducersOptions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := queue.NewProducer(asynq.NewClientFromRedisClient(e.rdb), queue.Options{Queue: e.name, MaxRetry: 3, Timeout: 7 * time.Second})
	for _, tt := range []struct {
		task    string
		enqueue func() error
	}{
		{"A", func() error { return p.Enqueue(ctx, order("A")) }},
		{"A" + queue.RescueSuffix, func() error { return p.Rescue(ctx, "A", order("A")) }},
	} {
		if err := tt.enqueue(); err != nil {
			t.Fatalf("queue task %s: %v", tt.task, err)
		}
		info, err := e.asynq.GetTaskInfo(e.name, tt.task)
		if err != nil {
			t.Fatalf("task %s: %v", tt.task, err)
		}
		if info.MaxRetry != 3 || info.Timeout != 7*time.Second {
			t.Errorf("task %s: max retry %d, timeout %v; want 3, 7s", tt.task, info.MaxRetry, info.Timeout)
		}
	}
}

// Archived lists every archived order task, page by page up to the one
// marked last, each with its own task id and whether asynq's recoverer
// archived it (lease lapsed) rather than a handler's failure or an
// operator.
func TestArchivedListsDeadTasksByPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if got, last, err := e.inspector.Archived(ctx, 1, 10); err != nil || !last || len(got) != 0 {
		t.Fatalf("Archived of a queue never used = %v, %v, %v; want none, last", got, last, err)
	}
	client := asynq.NewClientFromRedisClient(e.rdb)
	enqueueOnce := func(id string) { // no retry left: the first failure archives it
		t.Helper()
		task, err := queue.Encode(order(id))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.EnqueueContext(ctx, task, asynq.TaskID(id), asynq.Queue(e.name), asynq.MaxRetry(0)); err != nil {
			t.Fatal(err)
		}
	}
	// L: its worker died on its last try, over 30s ago.
	enqueueOnce("L")
	if id := queuetest.Strand(t, e.rdb, e.name, time.Now().Add(-time.Minute)); id != "L" {
		t.Fatalf("stranded %q, want L", id)
	}
	// A task that is no order (counted in its page, not listed; first in the
	// archive, whose ties in time sort by task id), then B
	// and A's rescue task: archived by hand.
	if _, err := client.EnqueueContext(ctx, asynq.NewTask(queue.TypeOrder, []byte("junk")), asynq.TaskID("0junk"), asynq.Queue(e.name)); err != nil {
		t.Fatal(err)
	}
	if err := e.asynq.ArchiveTask(e.name, "0junk"); err != nil {
		t.Fatal(err)
	}
	if err := e.producer.Enqueue(ctx, order("B")); err != nil {
		t.Fatal(err)
	}
	if err := e.producer.Rescue(ctx, "A", order("A")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"B", "A" + queue.RescueSuffix} {
		if err := e.asynq.ArchiveTask(e.name, id); err != nil {
			t.Fatal(err)
		}
	}
	// F: its handler failed.
	enqueueOnce("F")
	// A server's recoverer archives L as it starts; its handler fails F.
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{e.name: 1}, LogLevel: asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return errors.New("boom") })); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	want := map[string]string{
		"L":                      "order L lease expired true",
		"F":                      "order F lease expired false",
		"B":                      "order B lease expired false",
		"A" + queue.RescueSuffix: "order A lease expired false",
	}
	for _, pageSize := range []int{2, 3, 4, 5} {
		testenv.Eventually(t, 20*time.Second, func() error {
			got := map[string]string{}
			for page := 1; ; page++ {
				orders, last, err := e.inspector.Archived(ctx, page, pageSize)
				if err != nil {
					return err
				}
				if page > 10 {
					return fmt.Errorf("page size %d: no last page", pageSize)
				}
				for _, a := range orders {
					got[a.TaskID] = fmt.Sprintf("order %s lease expired %v", a.Order.ID, a.LeaseExpired)
				}
				if last {
					break
				}
			}
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("page size %d: archived %v, want %v", pageSize, got, want)
			}
			return nil
		})
	}
}

// The second round trip of States, for ids with no task when some order is
// buried, fails the call when it fails: those ids must not read as "not
// queued" because their replies were lost.
func TestStatesReportsErrorsOfTheBuriedLookup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	// A buried-orders key of the wrong type exists (so it is asked) and
	// answers HEXISTS with WRONGTYPE.
	if err := e.rdb.Set(ctx, "asynq:{"+e.name+"}:flashsale:buried", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if st, err := e.inspector.States(ctx, []string{"none"}); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("States(none) = %v, %v; want ErrUnavailable", st, err)
	}
}

// A buried payload that is no order cannot be recorded: Lookup does not
// report it, and Buried leaves it out and unburies it.
func TestBadBuriedPayloadsAreDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	key := "asynq:{" + e.name + "}:flashsale:buried"
	if err := e.inspector.Bury(ctx, order("A")); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HSet(ctx, key, "bad", `{"id":"bad"}`).Err(); err != nil {
		t.Fatal(err)
	}
	if ti, err := e.inspector.Lookup(ctx, "bad"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Lookup(bad) = %+v, %v; want ErrNotFound", ti, err)
	}
	got, _, err := e.inspector.Buried(ctx, 0, 10)
	if err != nil || len(got) != 1 || got[0] != order("A") {
		t.Fatalf("Buried = %+v, %v; want order A only", got, err)
	}
	if ids, err := e.rdb.HKeys(ctx, key).Result(); err != nil || !slices.Equal(ids, []string{"A"}) {
		t.Errorf("buried ids after Buried = %v, %v; want [A]", ids, err)
	}
}

// Lookup answers by its context's end even when Redis hangs (asynq's
// Inspector takes no context): a long poll's reads are bounded.
func TestLookupEndsWithItsContextWhenRedisHangs(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), ReadTimeout: 20 * time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	inspector := queue.NewInspector(rdb, queue.Options{Queue: "q"})
	if err := rdb.Ping(context.Background()).Err(); err != nil { // a connection ready
		t.Fatal(err)
	}
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Resume() })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := inspector.Lookup(ctx, "A")
	if took := time.Since(start); !errors.Is(err, queue.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || took > 5*time.Second {
		t.Fatalf("Lookup with Redis paused and a 300ms context = %v after %v; want ErrUnavailable and the deadline, well before the client's 20s ReadTimeout", err, took)
	}
}

// A Lookup whose caller gave up leaves no read running: asynq's
// GetTaskInfo takes no context, and each ran on, holding a connection,
// until go-redis gave up on its lost request (a 20s read timeout here):
// the long polls of an outage held one each.
func TestLookupLeavesNoReadRunningWhenItsCallerGivesUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if err := e.producer.Enqueue(ctx, order("A")); err != nil {
		t.Fatal(err)
	}
	inspector, rdb, d := lossyInspector(t, e)
	lookup := func() (queue.TaskInfo, error) {
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		return inspector.Lookup(ctx, "A")
	}
	if ti, err := lookup(); err != nil || ti.State != queue.Waiting || ti.Order != order("A") {
		t.Fatalf("Lookup(A) = %+v, %v; want order A waiting", ti, err)
	}

	d.Lose.Store(true)
	for range 5 {
		if ti, err := lookup(); !errors.Is(err, queue.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lookup(A) with its request lost = %+v, %v; want ErrUnavailable, the context's deadline", ti, err)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if ps := rdb.PoolStats(); ps.TotalConns != ps.IdleConns {
			return fmt.Errorf("%d connections in use after 5 lookups whose callers gave up; want none", ps.TotalConns-ps.IdleConns)
		}
		return nil
	})
	d.Lose.Store(false)
	if ti, err := lookup(); err != nil || ti.State != queue.Waiting {
		t.Fatalf("Lookup(A) once Redis answers = %+v, %v; want order A waiting", ti, err)
	}
}

// Active reads past its first page of 500 tasks: a backlog of stranded
// tasks beyond it is seen, each task once, up to the limit.
func TestActiveReadsEveryPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const n = 503
	for i := range n {
		if err := e.producer.Enqueue(ctx, order(fmt.Sprintf("o%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		queuetest.Strand(t, e.rdb, e.name, time.Now().Add(time.Minute))
	}
	for _, tt := range []struct{ limit, want int }{{1000, n}, {n, n}, {501, 501}, {500, 500}} {
		got, err := e.inspector.Active(ctx, tt.limit)
		if err != nil {
			t.Fatalf("Active(%d): %v", tt.limit, err)
		}
		ids := map[string]bool{}
		for _, a := range got {
			ids[a.TaskID] = true
		}
		if len(got) != tt.want || len(ids) != tt.want {
			t.Errorf("Active(%d) = %d tasks, %d distinct; want %d", tt.limit, len(got), len(ids), tt.want)
		}
	}

}

// With the queue's Redis hung (SIGSTOP), Stats answers ErrUnavailable when
// its context ends: asynq's Inspector takes no context, and its calls
// waited go-redis's read timeout (3s) four times each, 10s or more,
// however soon the caller gave up. The calls left running meanwhile are
// one at a time: a dashboard polling every 500ms during the incident does
// not pile up a held connection per poll.
func TestStatsOnAHungRedisEndsWithItsContext(t *testing.T) {
	t.Parallel()
	node := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	t.Cleanup(func() { _ = node.Resume() }) // before the node is killed
	copt, err := queue.ParseRedisURL(node.URL(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := queue.NewRedisClient(copt) // as the API's: 3s read timeout, retries
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	opts := queue.Options{Queue: "q_" + testenv.Namespace(t)}
	inspector := queue.NewInspector(rdb, opts)
	ctx := context.Background()
	if err := queue.NewProducer(asynq.NewClientFromRedisClient(rdb), opts).Enqueue(ctx, order("A")); err != nil {
		t.Fatal(err)
	}
	if st, err := inspector.Stats(ctx); err != nil || st.Pending != 1 {
		t.Fatalf("Stats before the pause = %+v, %v; want 1 pending", st, err)
	}

	if err := node.Pause(); err != nil {
		t.Fatal(err)
	}
	const wait = 100 * time.Millisecond
	for range 5 { // within queue.StatsTimeout: the shared read has not ended yet
		cctx, cancel := context.WithTimeout(ctx, wait)
		start := time.Now()
		st, err := inspector.Stats(cctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, queue.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Stats with Redis hung = %+v, %v; want ErrUnavailable, the context's deadline", st, err)
		}
		if took > wait+2*time.Second {
			t.Errorf("Stats with Redis hung answered after %v; want within %v of its context's end", took, 2*time.Second)
		}
	}
	if ps := rdb.PoolStats(); ps.TotalConns-ps.IdleConns > 1 {
		t.Errorf("with Redis hung, after 5 calls of Stats: %d connections in use; want 1 (one call running at a time)", ps.TotalConns-ps.IdleConns)
	}

	if err := node.Resume(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		st, err := inspector.Stats(ctx)
		if err == nil && st.Pending != 1 {
			t.Fatalf("Stats once Redis answers = %+v; want 1 pending", st)
		}
		return err
	})
}

// A read whose context has already ended answers ErrUnavailable, as one
// whose context ends while it waits for Redis does (and as the docs say),
// with the context's error kept: it returned the bare context error,
// which a caller matching ErrUnavailable took for something else.
func TestReadsWithAnEndedContextAreUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.producer.Enqueue(context.Background(), order("A")); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for _, c := range []struct {
		ctx  context.Context
		want error
	}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		reads := map[string]func() error{
			"Lookup":   func() error { _, err := e.inspector.Lookup(c.ctx, "A"); return err },
			"Stats":    func() error { _, err := e.inspector.Stats(c.ctx); return err },
			"Active":   func() error { _, err := e.inspector.Active(c.ctx, 10); return err },
			"Archived": func() error { _, _, err := e.inspector.Archived(c.ctx, 1, 10); return err },
		}
		for name, read := range reads {
			if err := read(); !errors.Is(err, queue.ErrUnavailable) || !errors.Is(err, c.want) {
				t.Errorf("%s with a context ended (%v) = %v; want ErrUnavailable and %v", name, c.want, err, c.want)
			}
		}
	}
}

// Withdraw deletes a task no worker has taken (pending) and nothing else:
// not a running task, not a dead one, not another task.
func TestWithdrawDeletesOnlyAPendingTask(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, id := range []string{"pending", "other", "dead", "run"} {
		if err := e.producer.Enqueue(ctx, order(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.asynq.ArchiveTask(e.name, "dead"); err != nil {
		t.Fatal(err)
	}
	// Before the server starts: it holds "run" and would run any other
	// pending task at once.
	tests := []struct {
		id   string
		want bool
	}{
		{"pending", true},
		{"pending", false}, // gone
		{"none", false},
		{"dead", false},
	}
	for _, tt := range tests {
		if got, err := e.inspector.Withdraw(ctx, tt.id); err != nil || got != tt.want {
			t.Fatalf("Withdraw(%s) = %v, %v; want %v", tt.id, got, err, tt.want)
		}
	}
	if _, err := e.inspector.Lookup(ctx, "pending"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Lookup(pending) after Withdraw = %v, want ErrNotFound", err)
	}
	if ti, err := e.inspector.Lookup(ctx, "dead"); err != nil || ti.State != queue.Dead {
		t.Fatalf("Lookup(dead) after Withdraw = %+v, %v; want it still dead", ti, err)
	}
	if st, err := e.inspector.Stats(ctx); err != nil || st.Pending != 2 || st.Archived != 1 {
		t.Fatalf("Stats after Withdraw = %+v, %v; want 2 pending (other, run), 1 archived", st, err)
	}
	if err := e.asynq.DeleteTask(e.name, "other"); err != nil {
		t.Fatal(err)
	}
	e.serve(t, func(id string) bool { return id == "run" })
	testenv.Eventually(t, 20*time.Second, func() error {
		ti, err := e.inspector.Lookup(ctx, "run")
		if err != nil || ti.State != queue.Running {
			return fmt.Errorf("Lookup(run) = %+v, %v; want Running", ti, err)
		}
		return nil
	})
	if got, err := e.inspector.Withdraw(ctx, "run"); err != nil || got {
		t.Fatalf("Withdraw(run) of a running task = %v, %v; want false", got, err)
	}
	if ti, err := e.inspector.Lookup(ctx, "run"); err != nil || ti.State != queue.Running {
		t.Fatalf("Lookup(run) after Withdraw = %+v, %v; want it still running", ti, err)
	}
}

// A task hash whose message is no protocol buffer (truncated, or cut
// short inside a field) makes Lookup fail as asynq's GetTaskInfo did,
// ErrUnavailable, rather than read past the message's end.
func TestLookupOfACorruptTaskMessageFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for id, msg := range map[string]string{
		"tag":   "\xff",     // a tag whose varint never ends
		"field": "\x12\x0a", // field 2, 10 bytes long, none there
	} {
		if err := e.rdb.HSet(ctx, "asynq:{"+e.name+"}:t:"+id, "msg", msg, "state", "pending").Err(); err != nil {
			t.Fatal(err)
		}
		if ti, err := e.inspector.Lookup(ctx, id); !errors.Is(err, queue.ErrUnavailable) {
			t.Errorf("Lookup of a task whose message is cut short (%s) = %+v, %v; want ErrUnavailable", id, ti, err)
		}
	}
}

// Buried reads about limit orders at a time and goes on from its cursor:
// the rescue scan records a backlog of buried orders page by page, each
// order once.
func TestBuriedReadsPageByPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const n, limit = 40, 5
	for i := range n {
		if err := e.inspector.Bury(ctx, order(fmt.Sprintf("o%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	var cursor uint64
	for pages := 1; ; pages++ {
		got, next, err := e.inspector.Buried(ctx, cursor, limit)
		if err != nil {
			t.Fatal(err)
		}
		if pages == 1 && (next == 0 || len(got) >= n) {
			t.Fatalf("Buried(0, %d) of %d buried orders = %d orders, cursor %d; want a page of about %d and a cursor to go on from", limit, n, len(got), next, limit)
		}
		for _, o := range got {
			seen[o.ID] = true
		}
		if cursor = next; cursor == 0 {
			break
		}
		if pages > n {
			t.Fatalf("Buried: no end after %d pages", pages)
		}
	}
	if len(seen) != n {
		t.Errorf("Buried read %d of the %d buried orders, page by page", len(seen), n)
	}
}

// A task is held only by a server running it from this queue: a server of
// another queue on the same Redis running a task of the same id (the same
// order id queued there) does not make this queue's stranded task held,
// which the rescue scan would then never queue again.
func TestActiveIgnoresAnotherQueuesWorkers(t *testing.T) {
	t.Parallel()
	e, other := newEnv(t), newEnv(t)
	ctx := context.Background()
	for _, q := range []*env{e, other} {
		if err := q.producer.Enqueue(ctx, order("A")); err != nil {
			t.Fatal(err)
		}
	}
	if id := queuetest.Strand(t, e.rdb, e.name, time.Now().Add(time.Minute)); id != "A" {
		t.Fatalf("stranded %q, want A", id)
	}
	other.serve(t, func(string) bool { return true })
	// The other queue's server lists A at its next heartbeat, within 5s.
	testenv.Eventually(t, 3*queue.HeartbeatInterval, func() error {
		got, err := other.inspector.Active(ctx, 10)
		if err != nil || len(got) != 1 || !got[0].Held {
			return fmt.Errorf("Active of the other queue = %+v, %v; want A held", got, err)
		}
		return nil
	})
	if got, err := e.inspector.Active(ctx, 10); err != nil || len(got) != 1 || got[0].TaskID != "A" || got[0].Held {
		t.Fatalf("Active = %+v, %v; want A stranded, not held (another queue's server runs its own A)", got, err)
	}
}

// States fails when it cannot tell whether any order is buried (the
// EXISTS after the task states): an id with no task might be a buried
// order's, Dead, and must not read as "not queued". A Redis without
// EXISTS (renamed away) fails that command alone.
func TestStatesReportsErrorsOfTheBuriedCheck(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{Args: []string{"--rename-command", "EXISTS", "EXISTS_" + testenv.Namespace(t)}})
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	inspector := queue.NewInspector(rdb, queue.Options{Queue: "q"})
	if st, err := inspector.States(context.Background(), []string{"none"}); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("States(none) with EXISTS failing = %v, %v; want ErrUnavailable", st, err)
	}
}

// Active fails with ErrUnavailable when it lists the tasks but cannot list
// the servers that hold them: a private Redis whose asynq:servers key (all
// asynq servers') is of the wrong type answers WRONGTYPE to that read alone.
func TestActiveReportsErrorsOfTheServersList(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	opts := queue.Options{Queue: "q"}
	if err := queue.NewProducer(asynq.NewClientFromRedisClient(rdb), opts).Enqueue(ctx, order("A")); err != nil {
		t.Fatal(err)
	}
	queuetest.Strand(t, rdb, "q", time.Now().Add(time.Minute))
	if err := rdb.Set(ctx, "asynq:servers", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := queue.NewInspector(rdb, opts).Active(ctx, 10); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("Active with the servers list unreadable = %+v, %v; want ErrUnavailable", got, err)
	}
}
