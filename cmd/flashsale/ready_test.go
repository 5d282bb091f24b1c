package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
)

// A worker's /readyz, on its metrics listener, says whether it can reach
// what it needs (PostgreSQL, the queue's Redis, a majority of the lock
// nodes), as the API's does: 200 while it can, 503 naming the lock once
// its only lock node is gone, while /healthz, the process alive, stays
// 200. Before, the worker had only /healthz, which answered 200 whatever
// it could reach.
func TestWorkerReadyzChecksWhatItNeeds(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	if _, err := inventory.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	ns := testenv.QueueNamespace(t, testenv.Redis(t))
	node := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	port, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := startServer(t, "worker", "FLASHSALE_DATABASE_URL="+db, "FLASHSALE_REDIS_URL="+testenv.RedisURL(),
		"FLASHSALE_QUEUE=q_"+ns, "FLASHSALE_KEY_PREFIX="+ns+":", "FLASHSALE_LOCK_REDIS_URLS="+node.URL(0),
		"FLASHSALE_METRICS_ADDR="+addr)
	get := func(path string) (int, map[string]any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
		if err != nil {
			return 0, nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("%s: %w", path, err)
		}
		return resp.StatusCode, body, nil
	}
	want := func(status int, checks map[string]string) func() error {
		return func() error {
			p.failIfEnded(t, "its /readyz answered")
			code, body, err := get("/readyz")
			if err != nil {
				return err
			}
			got, _ := body["checks"].(map[string]any)
			if code != status || len(got) != len(checks) {
				return fmt.Errorf("/readyz = %d %v, want %d with checks %v", code, body, status, checks)
			}
			for k, v := range checks {
				if got[k] != v {
					return fmt.Errorf("/readyz = %d %v, want %d with checks %v", code, body, status, checks)
				}
			}
			return nil
		}
	}
	testenv.Eventually(t, 30*time.Second, want(http.StatusOK, map[string]string{"postgres": "ok", "redis": "ok", "lock": "ok"}))
	if err := node.Stop(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, want(http.StatusServiceUnavailable, map[string]string{"postgres": "ok", "redis": "ok", "lock": "unavailable"}))
	if code, body, err := get("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz with the lock node gone = %d %v %v, want 200", code, body, err)
	}
	if !strings.Contains(p.out.String(), `"msg":"readiness check failed"`) {
		t.Errorf("the worker did not log the failed check:\n%s", p.out)
	}
}

// A worker's /readyz answers 503 once its shutdown has begun, while its
// orders in flight finish (here one waits on its product's row, which the
// test holds) and its metrics listener is still up: it takes no more
// orders. Before, it answered 200 until the worker exited.
func TestWorkerReadyzAnswers503DuringShutdown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDatabase(t)
	if _, err := inventory.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	ns := testenv.QueueNamespace(t, testenv.Redis(t))
	apiAddr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	const token = "readyz-shutdown-token-0123"
	env := []string{"FLASHSALE_DATABASE_URL=" + db, "FLASHSALE_REDIS_URL=" + testenv.RedisURL(),
		"FLASHSALE_QUEUE=q_" + ns, "FLASHSALE_KEY_PREFIX=" + ns + ":", "FLASHSALE_ADMIN_TOKEN=" + token}
	a := startServer(t, "api", append(env, "FLASHSALE_HTTP_ADDR="+apiAddr)...)
	w := startServer(t, "worker", append(env, "FLASHSALE_METRICS_ADDR="+metricsAddr)...)
	readyz := func() (int, string, error) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, "GET", "http://"+metricsAddr+"/readyz", nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		a.failIfEnded(t, "it listened")
		w.failIfEnded(t, "it started")
		if !strings.Contains(a.out.String(), `"msg":"api listening"`) {
			return errors.New("the api is not listening yet")
		}
		if code, body, err := readyz(); err != nil || code != http.StatusOK {
			return fmt.Errorf("worker /readyz = %d %s %v, want 200", code, body, err)
		}
		return nil
	})
	if status, body := devSend(t, http.MethodPost, "http://"+apiAddr+"/v1/products", token, "",
		`{"id":"p1","name":"P","stock":10,"per_user_limit":0}`); status != http.StatusCreated {
		t.Fatalf("create product: %d %s", status, body)
	}
	// The worker's order waits on the product's row: in flight at its
	// SIGTERM, and its shutdown waits for it.
	holder, release := testenv.HoldLock(t, db, `SELECT 1 FROM products WHERE id = 'p1' FOR UPDATE`)
	if status, body := devSend(t, http.MethodPost, "http://"+apiAddr+"/v1/orders", "", "k1",
		`{"product_id":"p1","user_id":"u1","quantity":1}`); status != http.StatusAccepted {
		t.Fatalf("place order: %d %s", status, body)
	}
	watch, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	testenv.Eventually(t, 30*time.Second, func() error {
		w.failIfEnded(t, "its order waited on the product's row")
		waiting, err := testenv.WaitsOn(ctx, watch, holder)
		if err == nil && !waiting {
			err = errors.New("the worker's order does not wait on the product's row yet")
		}
		return err
	})
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		w.failIfEnded(t, "it began its shutdown")
		if !strings.Contains(w.out.String(), `"msg":"worker shutting down: finishing orders in flight"`) {
			return errors.New("the worker has not begun its shutdown yet")
		}
		return nil
	})
	// Its order still waits: the worker is in its shutdown, listening.
	code, body, err := readyz()
	if err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("worker /readyz during its shutdown = %d %s %v, want 503", code, body, err)
	}
	release()
	select {
	case <-w.exited:
		if w.cmd.ProcessState.ExitCode() != 0 {
			t.Errorf("worker ended with %s, want exit status 0:\n%s", exitStatus(w.err), w.out)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("worker did not stop within 60s of its SIGTERM:\n%s", w.out)
	}
}

// A worker whose metrics port is taken fails its start, naming the
// setting, and leaves nothing running: the asynq server it had made by
// then kept its own Redis client (two goroutines each time) when the
// listen failed after it. Not parallel: it counts the goroutines of this
// process, and the parallel tests wait until it is done.
func TestWorkerMetricsPortInUseLeavesNothingRunning(t *testing.T) {
	ctx := context.Background()
	db := testenv.NewDatabase(t)
	if _, err := inventory.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	ns := testenv.QueueNamespace(t, testenv.Redis(t))
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg, err := loadConfig(fs, "worker", []string{"-database-url", db, "-redis-url", testenv.RedisURL(),
		"-queue", "q_" + ns, "-key-prefix", ns + ":", "-metrics-addr", taken.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	start := func() {
		t.Helper()
		err := serveWorker(ctx, cfg, slog.New(slog.DiscardHandler), nil)
		if err == nil || !strings.Contains(err.Error(), "-metrics-addr: listen tcp") {
			t.Fatalf("worker on a taken metrics port: %v, want an error naming -metrics-addr", err)
		}
	}
	// Once first, for what a first start leaves for the process's life
	// (packages' lazily started goroutines, the pools' idle connections
	// ending), then the count to come back to after three more.
	start()
	var before int
	testenv.Eventually(t, 10*time.Second, func() error {
		n := runtime.NumGoroutine()
		defer func() { before = n }()
		if n != before {
			return fmt.Errorf("goroutines: %d, were %d", n, before)
		}
		return nil
	})
	for range 3 {
		start()
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines after three failed starts, %d before", n, before)
		}
		return nil
	})
}

// An API's /metrics answers while the queue's Redis hangs (SIGSTOP), in
// time and with every other metric, the queue's figures left out and
// flashsale_collector_timed_out{collector="asynq_queue"} 1. Before, asynq's
// queue collector, whose calls take no context, held each scrape 10 s and
// more (go-redis's read timeout and retries), past Prometheus's default
// scrape timeout: no metric at all during the outage.
func TestAPIMetricsAnswerWhileTheQueueRedisHangs(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	if _, err := inventory.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	node := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	port, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	const token = "metrics-test-token-0123456789"
	p := startServer(t, "api", "FLASHSALE_DATABASE_URL="+db, "FLASHSALE_REDIS_URL="+node.URL(0),
		"FLASHSALE_HTTP_ADDR="+addr, "FLASHSALE_ADMIN_TOKEN="+token)
	t.Cleanup(func() { _ = node.Resume() }) // before the API is stopped
	scrape := func() (int, string, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start), err
	}
	const answered = "flashsale_db_pool_max_conns"
	testenv.Eventually(t, 30*time.Second, func() error {
		p.failIfEnded(t, "its /metrics answered")
		code, body, _, err := scrape()
		if err != nil {
			return err
		}
		if code != http.StatusOK || !strings.Contains(body, answered) {
			return fmt.Errorf("/metrics = %d without %q", code, answered)
		}
		return nil
	})
	if err := node.Pause(); err != nil {
		t.Fatal(err)
	}
	code, body, took, err := scrape()
	if err != nil {
		t.Fatalf("/metrics with the queue's Redis paused: %v", err)
	}
	const cut = `flashsale_collector_timed_out{collector="asynq_queue"} 1`
	if code != http.StatusOK || !strings.Contains(body, cut) || !strings.Contains(body, "go_goroutines") ||
		!strings.Contains(body, "flashsale_db_pool_max_conns") || took > queueMetricsTimeout+3*time.Second {
		t.Errorf("/metrics with the queue's Redis paused = %d in %v, with %q: %v, go_goroutines: %v, pool figures: %v; want 200 within %v with all three",
			code, took, cut, strings.Contains(body, cut), strings.Contains(body, "go_goroutines"),
			strings.Contains(body, "flashsale_db_pool_max_conns"), queueMetricsTimeout+3*time.Second)
	}
}
