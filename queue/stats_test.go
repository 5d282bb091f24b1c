package queue_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/queue/queuetest"
)

// lossyInspector is an inspector of e's queue on a client of its own
// whose requests are lost while d.Lose is set, with a 20s read timeout (as
// a URL's read_timeout may set) and, as NewRedisClient's, calls that end
// at their context's deadline.
func lossyInspector(t *testing.T, e *env) (*queue.Inspector, *redis.Client, *testenv.LossyDialer) {
	t.Helper()
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	d := &testenv.LossyDialer{}
	opt.Dialer, opt.ReadTimeout, opt.ContextTimeoutEnabled = d.Dial, 20*time.Second, true
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return queue.NewInspector(rdb, queue.Options{Queue: e.name}), rdb, d
}

// Once Redis answers again, Stats does too, promptly. Its callers share
// the read in flight, which ran asynq's calls (no context) until go-redis
// gave up on a lost request: one read timeout (20s here, as a URL's
// read_timeout may set; 3s by default, once per try), during which every
// caller joined it and answered ErrUnavailable. The shared read now ends
// within queue.StatsTimeout.
func TestStatsAnswersOnceRedisAnswersAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if err := e.producer.Enqueue(ctx, order("A")); err != nil {
		t.Fatal(err)
	}
	inspector, _, d := lossyInspector(t, e)
	if st, err := inspector.Stats(ctx); err != nil || st.Pending != 1 {
		t.Fatalf("Stats = %+v, %v; want 1 pending", st, err)
	}
	stats := func() (queue.Stats, error) {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		return inspector.Stats(ctx)
	}

	d.Lose.Store(true)
	if st, err := stats(); !errors.Is(err, queue.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stats with its request lost = %+v, %v; want ErrUnavailable, the context's deadline", st, err)
	}
	d.Lose.Store(false)
	testenv.Eventually(t, 5*time.Second, func() error {
		st, err := stats()
		if err == nil && st.Pending != 1 {
			t.Fatalf("Stats once Redis answers = %+v; want 1 pending", st)
		}
		return err
	})
}

// Stats reads asynq's keys itself (so that its read takes a context):
// its counts are asynq's GetQueueInfo's, task by task state, the day's
// processed and failed, the pause and the latency. As is Lookup's task.
func TestStatsAgreeWithAsynq(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(e.rdb)
	enqueue := func(id string, opts ...asynq.Option) {
		t.Helper()
		task, err := queue.Encode(order(id))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.EnqueueContext(ctx, task, append(opts, asynq.TaskID(id), asynq.Queue(e.name))...); err != nil {
			t.Fatal(err)
		}
	}

	// Processed today: "ok", "fail" (then waiting to retry) and "kept"
	// (then completed); failed today: "fail".
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{e.name: 1}, LogLevel: asynq.FatalLevel,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
	})
	if err := srv.Start(asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		if o, _ := queue.Decode(task.Payload()); o.ID == "fail" {
			return errors.New("failed")
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	enqueue("ok")
	enqueue("fail")
	enqueue("kept", asynq.Retention(time.Hour))
	testenv.Eventually(t, 20*time.Second, func() error {
		if q, err := e.asynq.GetQueueInfo(e.name); err != nil || q.Processed != 3 || q.Retry != 1 || q.Completed != 1 {
			return fmt.Errorf("queue info = %+v, %v; want 3 processed, 1 retry, 1 completed", q, err)
		}
		return nil
	})
	srv.Shutdown()
	// Lookup reads asynq's task hash itself too: a try's count and error.
	info, err := e.asynq.GetTaskInfo(e.name, "fail")
	if err != nil {
		t.Fatal(err)
	}
	ti, err := e.inspector.Lookup(ctx, "fail")
	if want := (queue.TaskInfo{State: queue.Waiting, Order: order("fail"), Retried: info.Retried, LastErr: info.LastErr}); err != nil || ti != want || ti.Retried != 1 || ti.LastErr != "failed" {
		t.Errorf("Lookup(fail) = %+v, %v; want %+v (asynq's: retried once, last error \"failed\")", ti, err, want)
	}

	enqueue("active")
	queuetest.Strand(t, e.rdb, e.name, time.Now().Add(time.Minute))
	enqueue("p1")
	enqueue("p2")
	enqueue("later", asynq.ProcessIn(time.Hour))
	// Aggregating, in two groups: counted in the size.
	enqueue("g1", asynq.Group("g1"))
	enqueue("g2", asynq.Group("g2"))
	enqueue("dead")
	if err := e.asynq.ArchiveTask(e.name, "dead"); err != nil {
		t.Fatal(err)
	}
	if err := e.asynq.PauseQueue(e.name); err != nil {
		t.Fatal(err)
	}

	before := time.Now()
	q, err := e.asynq.GetQueueInfo(e.name)
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.inspector.Stats(ctx)
	between := time.Since(before)
	if err != nil {
		t.Fatal(err)
	}
	want := queue.Stats{
		Queue: e.name, Size: q.Size - q.Archived - q.Completed, Pending: q.Pending, Active: q.Active,
		Scheduled: q.Scheduled, Retry: q.Retry, Archived: q.Archived, Completed: q.Completed,
		Processed: q.Processed, Failed: q.Failed, Paused: q.Paused,
	}
	got := st
	got.Latency, got.LatencyMS = 0, 0
	if got != want {
		t.Errorf("Stats = %+v\nwant    %+v (asynq's)", got, want)
	}
	if want := (queue.Stats{Queue: e.name, Size: 7, Pending: 2, Active: 1, Scheduled: 1, Retry: 1, Archived: 1, Completed: 1,
		Processed: 3, Failed: 1, Paused: true}); got != want {
		t.Errorf("Stats = %+v\nwant    %+v", got, want)
	}
	// Both from p1's pending_since, read a moment apart.
	if d := st.Latency - q.Latency; q.Latency <= 0 || d < 0 || d > between || st.LatencyMS != st.Latency.Milliseconds() {
		t.Errorf("Stats latency %v (%dms), asynq's %v read %v before; want asynq's or up to that much more", st.Latency, st.LatencyMS, q.Latency, between)
	}
}
