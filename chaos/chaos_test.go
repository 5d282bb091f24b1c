// Package chaos is the fault suite (`make chaos`, also run by CI): real
// processes of the built binary (2 APIs, 3 workers), a private PostgreSQL,
// a private queue Redis with AOF (appendfsync always) and three private lock
// Redis nodes. Each case sends a burst of 5,000 orders against a stock of
// 1,000 and injects one fault in the middle of it; afterwards every
// invariant the load tester checks must hold, every accepted order must be
// final, and none may have failed.
package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/loadtest"
	"github.com/flashsale/flashsale/queue/queuetest"
)

const (
	orders = 5000
	stock  = 1000
	// The burst is closed (200 requests in flight, as fast as the APIs
	// answer). On a fast machine three workers keep up with it and sell the
	// stock out within a second, so waiting for "the middle of the burst"
	// by the clock races with the burst. Instead the workers start only
	// once queuedFirst orders are queued: the queue is then deep enough
	// that they fill up to their concurrency, and the fault is injected
	// once they hold at least faultActive tasks between them, while the
	// buyers are still submitting.
	concurrency = 200
	queuedFirst = 1500
	faultActive = 64
	lockTTL     = 5 * time.Second
	adminToken  = "chaos-admin-token"
	// recoveryBound is the promise for a crashed worker's orders (see
	// worker/rescue.go): settled within 60s of the crash.
	recoveryBound = 60 * time.Second
)

// env is the servers shared by all cases.
type env struct {
	binary    string
	pg        *localsvc.Postgres
	dbURL     string
	queue     *localsvc.Redis
	lockNodes []*localsvc.Redis
	logDir    string
}

// trigger is the moment a case injects its fault.
type trigger int

const (
	// workersBusy: once the workers hold faultActive tasks.
	workersBusy trigger = iota
	// submitting: once queuedFirst orders are queued, before the workers
	// start, while the buyers' requests are in flight.
	submitting
	// victimBusy: as workersBusy, and once the first worker (the victim of
	// the fault) has order tasks in hand, so that the fault strands some.
	victimBusy
)

type result struct {
	name              string
	orders, succeeded int64
	settle, recovered time.Duration
}

func TestFaults(t *testing.T) {
	e := setup(t)
	cases := []struct {
		name  string
		fault func(t *testing.T, e *env, c *cluster.Cluster)
		when  trigger
		// bound, if set, caps the time from the fault to the last final status.
		bound time.Duration
		// before, if set, runs before the case's cluster starts.
		before func(t *testing.T, e *env)
	}{
		{"SIGKILL a worker, restart it 2s later", killWorker, victimBusy, recoveryBound, nil},
		{"SIGSTOP a worker for 2×TTL, then SIGCONT", pauseWorker, victimBusy, 0, nil},
		{"SIGKILL one of three lock nodes", killLockNode, workersBusy, 0, nil},
		{"restart PostgreSQL (fast shutdown)", restartPostgres, workersBusy, 0, nil},
		{"SIGKILL an API, clients retry on the other", killAPI, submitting, 0, nil},
		{"rolling SIGTERM restart of every worker", rollingRestart, workersBusy, 0, nil},
		{"restart the queue's Redis (AOF, fsync always)", restartQueueRedis, workersBusy, 0, compactAOF},
	}
	var results []result
	for i, tc := range cases {
		ok := t.Run(fmt.Sprintf("%d_%s", i+1, strings.Fields(tc.name)[0]), func(t *testing.T) {
			if tc.before != nil {
				tc.before(t, e)
			}
			res := runCase(t, e, i, tc.name, tc.when, tc.fault)
			if tc.bound > 0 && res.recovered > tc.bound {
				t.Errorf("last order final %v after the fault, want within %v", res.recovered.Round(time.Millisecond), tc.bound)
			}
			results = append(results, res)
		})
		if !ok {
			t.Logf("case %q failed; set CHAOS_LOG_DIR to keep the processes' logs (now in %s)", tc.name, e.logDir)
		}
	}
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\torders\tsucceeded\ttime to settle\tfault → last final")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1fs\t%.1fs\n", r.name, r.orders, r.succeeded, r.settle.Seconds(), r.recovered.Seconds())
	}
	_ = tw.Flush()
	t.Logf("fault suite (%d orders per case, stock %d, %d in flight):\n%s", orders, stock, concurrency, buf.String())
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		_ = os.WriteFile(path, buf.Bytes(), 0o644)
	}
}

func setup(t *testing.T) *env {
	t.Helper()
	// CHAOS_LOG_DIR keeps the processes' logs after the run.
	e := &env{logDir: os.Getenv("CHAOS_LOG_DIR")}
	if e.logDir == "" {
		e.logDir = t.TempDir()
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var err error
	e.binary, err = cluster.Build(ctx, root, t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	e.pg = testenv.PrivatePostgres(t)
	e.dbURL = e.pg.URL("flashsale")
	if _, err := inventory.Migrate(ctx, e.dbURL); err != nil {
		t.Fatal(err)
	}
	e.queue = testenv.PrivateRedis(t, localsvc.RedisOptions{AppendFsync: "always"})
	for range 3 {
		e.lockNodes = append(e.lockNodes, testenv.PrivateRedis(t, localsvc.RedisOptions{}))
	}
	return e
}

// start runs a fresh cluster on a queue of the case's own, so that tasks
// a previous case left behind (orphans asynq retires later) are not counted.
// Its workers are not started yet.
func (e *env) start(t *testing.T, queueName string) *cluster.Cluster {
	t.Helper()
	var lockURLs []string
	for _, n := range e.lockNodes {
		if n.Running() {
			lockURLs = append(lockURLs, n.URL(0))
		}
	}
	if len(lockURLs) < 3 {
		// Keep naming all three: a dead node is still part of the quorum.
		lockURLs = []string{e.lockNodes[0].URL(0), e.lockNodes[1].URL(0), e.lockNodes[2].URL(0)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Config{
		Binary: e.binary, APIs: 2, Workers: 3, WorkerMetrics: true, DeferWorkers: true,
		LogDir: filepath.Join(e.logDir, strings.ReplaceAll(t.Name(), "/", "_")),
		Env: map[string]string{
			"FLASHSALE_DATABASE_URL":    e.dbURL,
			"FLASHSALE_REDIS_URL":       e.queue.URL(0),
			"FLASHSALE_LOCK_REDIS_URLS": strings.Join(lockURLs, ","),
			"FLASHSALE_ADMIN_TOKEN":     adminToken,
			"FLASHSALE_LOCK_TTL":        lockTTL.String(),
			"FLASHSALE_LOG_FORMAT":      "json",
			"FLASHSALE_QUEUE":           queueName,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func runCase(t *testing.T, e *env, i int, name string, when trigger, fault func(*testing.T, *env, *cluster.Cluster)) result {
	queueName := fmt.Sprintf("orders%d", i+1)
	c := e.start(t, queueName)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	type outcome struct {
		rep *loadtest.Report
		err error
	}
	done := make(chan outcome, 1)
	started := time.Now()
	go func() {
		rep, err := loadtest.Run(ctx, loadtest.Config{
			APIs: c.URLs(), LoopbackOnly: true, AdminToken: adminToken,
			RunID:  fmt.Sprintf("chaos%d-%d", i+1, started.Unix()),
			Orders: orders, Products: 1, Hot: true, Stock: stock,
			Concurrency: concurrency, SettleConcurrency: 400,
			Timeout: 3 * time.Minute, MaxRetries: 5, PollWait: 10 * time.Second,
		})
		done <- outcome{rep, err}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: e.queue.Addr()})
	defer rdb.Close()
	q := waitQueue(t, rdb, queueName, done, "queued", func(q depth) bool { return q.pending >= queuedFirst })
	var faultAt time.Time
	if when == submitting {
		faultAt = inject(t, e, c, q, name, started, fault)
	}
	var release func()
	if when == workersBusy || when == victimBusy {
		release = e.stallWorkers(t)
	}
	if err := c.StartWorkers(ctx); err != nil {
		t.Fatal(err)
	}
	if when == workersBusy || when == victimBusy {
		q = waitQueue(t, rdb, queueName, done, "active", func(q depth) bool { return q.active >= faultActive })
		if when == victimBusy {
			w := c.Workers[0]
			t.Logf("%s holds %v order tasks", w.Name, holding(t, w, done))
		}
		release()
		faultAt = inject(t, e, c, q, name, started, fault)
	}
	o := <-done
	if o.err != nil {
		t.Fatalf("loadtest: %v", o.err)
	}
	rep := o.rep
	lastFinal := rep.StartedAt.Add(time.Duration((rep.Phases.Create + rep.Phases.Settle) * float64(time.Second)))
	res := result{
		name: name, orders: int64(rep.Orders), succeeded: rep.Outcomes.Succeeded,
		settle:    time.Duration(rep.Phases.Settle * float64(time.Second)),
		recovered: max(lastFinal.Sub(faultAt), 0),
	}
	if !rep.OK {
		var buf bytes.Buffer
		_ = rep.WriteText(&buf)
		t.Errorf("invariants violated:\n%s", buf.String())
	}
	if rep.Outcomes.Failed != 0 || rep.Outcomes.Unsettled != 0 || rep.Outcomes.Rejected != 0 {
		t.Errorf("outcomes %+v: want no failed, unsettled or rejected orders", rep.Outcomes)
	}
	if when == submitting && rep.Retries == 0 {
		t.Errorf("no request was retried: the fault did not hit a request in flight")
	}
	if rep.Outcomes.Succeeded != stock {
		t.Errorf("succeeded: got %d, want the whole stock, %d", rep.Outcomes.Succeeded, stock)
	}
	return res
}

// depth is the queue's pending and active task counts.
type depth struct{ pending, active int64 }

// waitQueue polls the queue until cond holds, for up to 30s. It reads the
// counts with queuetest.Depth every millisecond: the moment the workers
// hold many tasks can last well under a second, and asynq's
// GetQueueInfo, at tens of milliseconds a call on a loaded machine, misses
// it. The burst ending first is a failure: the fault would not be
// mid-burst.
func waitQueue[T any](t *testing.T, rdb *redis.Client, queueName string, done <-chan T, what string, cond func(depth) bool) depth {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	var last depth
	var lastErr error
	for {
		select {
		case <-done:
			t.Fatalf("burst ended while waiting for %s tasks (last: %+v, error %v)", what, last, lastErr)
		default:
		}
		pending, active, err := queuetest.Depth(ctx, rdb, queueName)
		if err == nil {
			last = depth{pending, active}
			if cond(last) {
				return last
			}
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("not enough %s tasks within 30s (last: %+v, error %v)", what, last, lastErr)
		}
		time.Sleep(time.Millisecond)
	}
}

// stallWorkers locks every product row (SELECT ... FOR UPDATE in a
// transaction of its own) until the returned release is called. Started
// before the workers, it holds their first batch in its UPDATE, so they
// fill up to their concurrency and stay there until the test has seen
// them busy: with group commit the workers drain the queue so fast that on
// a loaded CI machine a poller could miss the moment they held
// faultActive tasks, and the burst ended before the fault. The fault
// itself comes right after the release, while the workers still hold
// their tasks and the rest of the burst is queued.
func (e *env) stallWorkers(t *testing.T) (release func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM products FOR UPDATE) AS held`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("stall the workers: no product row to hold")
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tx.Commit(ctx); err != nil {
				t.Errorf("release the product rows: %v", err)
			}
			_ = conn.Close(ctx)
		})
	}
	t.Cleanup(release)
	return release
}

// inject runs the fault and returns when it began; q is the queue as last
// seen.
func inject(t *testing.T, e *env, c *cluster.Cluster, q depth, name string, started time.Time, fault func(*testing.T, *env, *cluster.Cluster)) time.Time {
	t.Helper()
	at := time.Now()
	t.Logf("fault: %s (at %v, %d tasks queued, %d active)", name, at.Sub(started).Round(time.Millisecond), q.pending, q.active)
	fault(t, e, c)
	return at
}

// holding waits until worker w has order tasks in hand (its
// flashsale_worker_tasks_in_flight gauge), so that killing or pausing it
// strands orders, and returns how many it had. The burst ending first is a
// failure, as in waitQueue.
func holding[T any](t *testing.T, w *cluster.Proc, done <-chan T) float64 {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("burst ended while waiting for %s to hold order tasks", w.Name)
		default:
		}
		n, err := inFlight(client, w.Addr)
		if err == nil && n > 0 {
			return n
		}
		last = err
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s held no order task within 10s (last error: %v): the fault would strand nothing", w.Name, last)
	return 0
}

// inFlight reads a worker's flashsale_worker_tasks_in_flight gauge.
func inFlight(client *http.Client, addr string) (float64, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "flashsale_worker_tasks_in_flight "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no flashsale_worker_tasks_in_flight in /metrics")
}

func killWorker(t *testing.T, e *env, c *cluster.Cluster) {
	w := c.Workers[0]
	if err := w.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the fault: the worker stays dead for 2s
	if err := w.Start(c.Binary()); err != nil {
		t.Fatal(err)
	}
}

func pauseWorker(t *testing.T, e *env, c *cluster.Cluster) {
	w := c.Workers[0]
	if err := w.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * lockTTL) // the fault: paused for twice the lock TTL
	if err := w.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

func killLockNode(t *testing.T, e *env, c *cluster.Cluster) {
	if err := e.lockNodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	// Left down for the rest of the case; back for the next one.
	t.Cleanup(func() {
		if err := e.lockNodes[0].Start(); err != nil {
			t.Errorf("restart lock node: %v", err)
		}
	})
}

func restartPostgres(t *testing.T, e *env, c *cluster.Cluster) {
	if err := e.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := e.pg.Start(); err != nil {
		t.Fatal(err)
	}
}

func killAPI(t *testing.T, e *env, c *cluster.Cluster) {
	if err := c.APIs[0].Kill(); err != nil {
		t.Fatal(err)
	}
}

func rollingRestart(t *testing.T, e *env, c *cluster.Cluster) {
	for _, w := range c.Workers {
		if err := w.Stop(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := w.Start(c.Binary()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := w.WaitReady(ctx, 30*time.Second)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func restartQueueRedis(t *testing.T, e *env, c *cluster.Cluster) {
	aof := aofSize(e)
	// A crash, not a clean shutdown: with appendfsync always, everything
	// Redis acknowledged is in the AOF.
	if err := e.queue.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.queue.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("queue Redis (AOF %s bytes) answering again %v after the kill", aof, time.Since(start).Round(time.Millisecond))
}

// aofSize is the queue Redis's aof_current_size, or "?".
func aofSize(e *env) string {
	rdb := redis.NewClient(&redis.Options{Addr: e.queue.Addr()})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := rdb.Info(ctx, "persistence").Result()
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "aof_current_size:"); ok {
			return v
		}
	}
	return "?"
}

// compactAOF rewrites the queue Redis's AOF (BGREWRITEAOF) and waits until
// the rewrite is done. The earlier cases wrote every change of 30,000
// orders to it (42 MB, against 3 MB once rewritten; on an idle machine
// Redis answered 0.68 s after the kill instead of 0.27 s), and on a loaded
// CI machine replaying it kept Redis loading for longer than the API rides
// out (its enqueue retries for 3 s, a long poll for its wait), so orders
// were answered 503. In production Redis rewrites its AOF by itself as it
// grows (auto-aof-rewrite-percentage), so a restart replays about the live
// data plus the writes since the last rewrite, as here.
func compactAOF(t *testing.T, e *env) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: e.queue.Addr()})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := rdb.BgRewriteAOF(ctx).Err(); err != nil {
		t.Fatalf("BGREWRITEAOF: %v", err)
	}
	testenv.Eventually(t, time.Minute, func() error {
		info, err := rdb.Info(ctx, "persistence").Result()
		if err != nil {
			return err
		}
		if strings.Contains(info, "aof_rewrite_in_progress:1") || strings.Contains(info, "aof_rewrite_scheduled:1") {
			return fmt.Errorf("AOF rewrite not done yet")
		}
		if !strings.Contains(info, "aof_last_bgrewrite_status:ok") {
			return fmt.Errorf("AOF rewrite failed: %s", info)
		}
		return nil
	})
}
