package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/api"
	"github.com/flashsale/flashsale/internal/obs"
	"github.com/flashsale/flashsale/internal/redact"
	"github.com/flashsale/flashsale/internal/subscribe"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/notify"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/ratelimit"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/soldout"
	"github.com/flashsale/flashsale/worker"
)

// queueMetricsTimeout bounds the queue's figures in a scrape of an API's
// /metrics: they take milliseconds when Redis answers, and the rest of the
// scrape must fit in Prometheus's default 10 s scrape timeout.
const queueMetricsTimeout = 2 * time.Second

// newRegistry returns a Prometheus registry with the Go and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// queueRedis parses the queue's Redis URL into asynq options and a go-redis
// client of the same server for flashsale's own keys (closed by the caller).
func queueRedis(cfg config, poolSize int) (asynq.RedisConnOpt, redis.UniversalClient, error) {
	opt, err := queue.ParseRedisURL(cfg.RedisURL, poolSize)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cfg.name("FLASHSALE_REDIS_URL"), err)
	}
	rdb, err := queue.NewRedisClient(opt)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cfg.name("FLASHSALE_REDIS_URL"), err)
	}
	return opt, rdb, nil
}

func queueOptions(cfg config) queue.Options { return queue.Options{Queue: cfg.Queue} }

func runAPI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, log, err := setup("api", args, stderr)
	if err != nil {
		return err
	}
	if err := servePprof(cfg, log); err != nil {
		return err
	}
	started := false
	err = serveAPI(ctx, cfg, log, func(string) { started = true })
	return stoppedDuringStart(ctx, log, started, err)
}

// servePprof serves net/http/pprof on FLASHSALE_PPROF_ADDR, if set, for the
// life of the process. Not /debug/pprof/cmdline: the command line may carry
// secrets (-admin-token, -database-url), and the endpoint has no auth.
func servePprof(cfg config, log *slog.Logger) error {
	if cfg.PprofAddr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", cfg.PprofAddr)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_PPROF_ADDR"), err)
	}
	log.Info("pprof listening", "addr", ln.Addr().String())
	// Timeouts as on every listener, WriteTimeout long enough for a profile
	// or trace of up to a minute (longer ones are refused by the handler).
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 90 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// The processes' PostgreSQL pool sizes. PostgreSQL's max_connections (100
// by default) must hold every process's pool together: README's connection
// budget, and docker-compose.yml's postgres, which TestComposePostgresHoldsTheScale
// checks against these.
const (
	// apiMaxConns: an API's reads are coalesced (one query for every
	// waiting lookup), so a few connections carry a burst.
	apiMaxConns = 12
	// workerMaxConns: batch mode runs one transaction at a time per
	// process, plus the rescuer's and the sweep's reads.
	workerMaxConns = 4
	// singleWorkerMaxConns: single mode runs one transaction per product
	// lock held.
	singleWorkerMaxConns = 16
)

// serveAPI runs the HTTP API until ctx ends. ready, if not nil, is called
// with the listening address.
func serveAPI(ctx context.Context, cfg config, log *slog.Logger, ready func(addr string)) error {
	store, err := inventory.Open(ctx, cfg.DatabaseURL, &inventory.Options{MaxConns: apiMaxConns})
	if err != nil {
		return databaseError(cfg, err)
	}
	defer store.Close()
	if err := store.CheckSchema(ctx); err != nil {
		return databaseError(cfg, err)
	}
	connOpt, rdb, err := queueRedis(cfg, 128)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_REDIS_URL"), err)
	}
	// The producer shares rdb's pool (Close leaves a shared client open).
	client := asynq.NewClientFromRedisClient(rdb)
	defer client.Close()

	// Subscriptions: decided orders wake long polls; sold-out changes
	// refresh the fast path's cache.
	hub := notify.NewHub(rdb, cfg.KeyPrefix)
	// PostgreSQL is the check on a flag Redis brought back from before a
	// restock (a restart from a snapshot, a failover).
	gate := soldout.New(rdb, soldout.Options{KeyPrefix: cfg.KeyPrefix, Committed: store.RestockGen})
	// They outlive ctx, for the shutdown's requests, but not during the
	// start: until both are confirmed, ctx's end (a signal) ends them and
	// the wait for them, which a Redis that stopped answering since the
	// ping would otherwise hold for ever (the deferred rdb.Close ends a
	// subscription stuck on its confirmation).
	subCtx, stopSubs := context.WithCancel(context.Background())
	defer stopSubs()
	stopOnSignal := context.AfterFunc(ctx, stopSubs)
	for _, run := range []func(context.Context, func()) error{hub.Run, gate.Run} {
		if _, err := subscribe.Start(subCtx, run); err != nil {
			return err
		}
	}
	if !stopOnSignal() {
		// ctx ended as the subscriptions were confirmed: they are ending.
		return fmt.Errorf("subscriptions: %w", context.Cause(ctx))
	}

	sopts := &sale.Options{
		// The rate limiter and the sold-out flag fail open: say so.
		OnFailOpen:     func(ctx context.Context, err error) { log.WarnContext(ctx, "check failed open", "err", err) },
		ProductTimeout: cfg.ProductTimeout,
	}
	if cfg.RateLimit != "" {
		r, err := parseRate(cfg.RateLimit)
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_RATE_LIMIT"), err)
		}
		limiter, err := ratelimit.New(rdb, ratelimit.Options{Rate: r.n, Per: r.per, KeyPrefix: cfg.KeyPrefix + "ratelimit:user:"})
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_RATE_LIMIT"), err)
		}
		sopts.Limiter = limiter
		log.Info("per-user order rate limit", "limit", limiter.String())
	}
	qopts := queueOptions(cfg)
	svc := sale.New(store, queue.NewProducer(client, qopts), queue.NewInspector(rdb, qopts),
		gate, hub, sopts)
	defer svc.Close() // before the clients it uses close
	reg := newRegistry()
	// Queue size, latency and task counts of every queue on the queue's
	// Redis (asynq's own collector, whose calls take no context: bounded,
	// so that a scrape while Redis hangs still answers with the rest, on a
	// client of its own whose calls each collection bounds), and this
	// process's PostgreSQL pool.
	metricsRdb, err := queue.NewRedisClient(connOpt)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_REDIS_URL"), err)
	}
	defer metricsRdb.Close()
	if err := reg.Register(obs.NewQueueCollector(metricsRdb, queueMetricsTimeout)); err != nil {
		return err
	}
	if err := reg.Register(obs.NewPoolCollector(store)); err != nil {
		return err
	}
	// The asynq queue monitor, read-only, served by the API to admins.
	// Its calls take no context: each ends by MonitorTimeout, past which
	// the API has answered its request 503, rather than run on after it.
	monitor := asynqmon.New(asynqmon.Options{RootPath: api.MonitorPath,
		RedisConnOpt: queue.CallTimeout(connOpt, api.MonitorTimeout), ReadOnly: true})
	defer monitor.Close()
	handler, err := api.New(svc, api.Config{
		AdminToken: cfg.AdminToken,
		Logger:     log,
		Registerer: reg,
		Monitor:    monitor,
		Metrics:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		ReadyChecks: map[string]func(context.Context) error{
			"postgres": store.Ping,
			"redis":    func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		},
	})
	if err != nil {
		return err
	}

	// The server's timeouts are api's defaults (the write timeout exceeds
	// the longest long poll). At shutdown, long polls answer at once with
	// their order's current state (Drain) and other requests finish; the
	// base context ends only if they outlast the shutdown's bound.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := api.NewServer(handler, api.ServerOptions{
		BaseContext: func(net.Listener) context.Context { return baseCtx },
		Logger:      log,
	})
	srv.RegisterOnShutdown(svc.Drain)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_HTTP_ADDR"), err)
	}
	log.Info("api listening", "addr", ln.Addr().String(), "queue", cfg.Queue, "admin", cfg.AdminToken != "")
	if ready != nil {
		ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("api shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), apiShutdownWait(svc.RestockBound()))
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		cancelBase()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("api stopped") // as the worker says its stop: the requests in flight ended
	return nil
}

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, log, err := setup("worker", args, stderr)
	if err != nil {
		return err
	}
	if err := servePprof(cfg, log); err != nil {
		return err
	}
	started := false
	err = serveWorker(ctx, cfg, log, func() { started = true })
	return stoppedDuringStart(ctx, log, started, err)
}

// lockClients opens one go-redis client per lock URL, with a pool large
// enough for the worker's concurrency unless the URL sets pool_size. As
// lock.NewFromURLs does, calls end at their context's deadline (the lock's
// NodeTimeout; otherwise a call to a paused node holds its connection for
// go-redis's ReadTimeout, 3s, and a stalled node drains the pool), and a
// node that refuses connections fails at the first dial.
func lockClients(urls []string, poolSize int) ([]*redis.Client, error) {
	var out []*redis.Client
	for _, u := range urls {
		opt, err := redis.ParseURL(u)
		if err != nil {
			for _, c := range out {
				_ = c.Close()
			}
			return nil, err
		}
		if !strings.Contains(u, "pool_size") {
			opt.PoolSize = poolSize
		}
		opt.ContextTimeoutEnabled = true
		opt.DialerRetries = 1
		out = append(out, redis.NewClient(opt))
	}
	return out, nil
}

// pingLockNodes checks at start that the lock nodes answer: fewer than a
// majority is an error naming them, since no order could be decided; a
// minority down is logged, since the quorum holds without it. (Otherwise a
// mistyped URL showed only as go-redis's dial errors, the worker running.)
func pingLockNodes(ctx context.Context, urls []string, nodes []*redis.Client, log *slog.Logger) error {
	down, err := lockQuorum(ctx, urls, nodes)
	if err != nil {
		return err
	}
	for _, d := range down {
		log.Warn("a lock node does not answer; the quorum holds without it", "node", d)
	}
	return nil
}

// lockQuorum pings the lock nodes side by side (2s each) and returns those
// that did not answer, or an error naming them when fewer than a majority
// answered. The worker's readiness check runs it too.
func lockQuorum(ctx context.Context, urls []string, nodes []*redis.Client) (down []string, err error) {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			errs[i] = n.Ping(pctx).Err()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			down = append(down, fmt.Sprintf("%s: %v", redact.URL(urls[i]), err))
		}
	}
	if need := len(nodes)/2 + 1; len(nodes)-len(down) < need {
		return down, fmt.Errorf("%d of %d lock nodes answer, %d needed: %s",
			len(nodes)-len(down), len(nodes), need, strings.Join(down, "; "))
	}
	return down, nil
}

// serveWorker runs a worker until ctx ends. ready, if not nil, is called
// once it has started.
func serveWorker(ctx context.Context, cfg config, log *slog.Logger, ready func()) error {
	maxConns := int32(workerMaxConns)
	if cfg.WorkerMode == worker.ModeSingle {
		maxConns = singleWorkerMaxConns
	}
	store, err := inventory.Open(ctx, cfg.DatabaseURL, &inventory.Options{
		MaxConns: maxConns,
		// A paused worker must not keep product rows locked past its lock.
		IdleInTransactionTimeout: cfg.LockTTL,
	})
	if err != nil {
		return databaseError(cfg, err)
	}
	defer store.Close()
	if err := store.CheckSchema(ctx); err != nil {
		return databaseError(cfg, err)
	}
	connOpt, rdb, err := queueRedis(cfg, cfg.WorkerConcurrency+32)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_REDIS_URL"), err)
	}

	reg := newRegistry()
	obs, err := worker.NewLockObserver(reg)
	if err != nil {
		return err
	}
	nodes, err := lockClients(cfg.LockRedisURLs, cfg.WorkerConcurrency+32)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_LOCK_REDIS_URLS"), err)
	}
	defer func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	}()
	if err := pingLockNodes(ctx, cfg.LockRedisURLs, nodes, log); err != nil {
		return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_LOCK_REDIS_URLS"), err)
	}
	lockNodes := make([]redis.UniversalClient, len(nodes))
	for i, n := range nodes {
		lockNodes[i] = n
	}
	locks, err := lock.New(lockNodes, &lock.Options{
		TTL: cfg.LockTTL, KeyPrefix: cfg.KeyPrefix + "lock:", Observer: obs,
		// The lock's default (TTL/100) is tight for a loaded two-core
		// machine; a paused node costs no more than this per round, since
		// acquire and release return once a majority answered.
		NodeTimeout: min(max(cfg.LockTTL/40, 100*time.Millisecond), 500*time.Millisecond, cfg.LockTTL/4),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_LOCK_REDIS_URLS"), err)
	}
	defer locks.Close()

	// The metrics listener is taken before worker.New: the asynq server it
	// makes has its own Redis client, released only by the Shutdown of a
	// started server, so a port in use found after it leaked that client
	// (its goroutines) on the way out.
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		metricsLn, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_METRICS_ADDR"), err)
		}
		defer metricsLn.Close() // for a return before it is served
	}
	w, err := worker.New(worker.Config{
		Concurrency: cfg.WorkerConcurrency,
		Mode:        cfg.WorkerMode,
		Queue:       queueOptions(cfg),
		KeyPrefix:   cfg.KeyPrefix,
		Logger:      log,
		Registerer:  reg,
	}, worker.Deps{
		Store: store, Locks: locks,
		Gate:      soldout.New(rdb, soldout.Options{KeyPrefix: cfg.KeyPrefix}),
		Publisher: notify.NewPublisher(rdb, cfg.KeyPrefix),
		Queue:     connOpt, Redis: rdb,
	})
	if err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		// /metrics wants the admin token, as on the API; /healthz (the
		// process answers) and /readyz (it can reach PostgreSQL, the
		// queue's Redis and a majority of the lock nodes, the API's
		// answer) are for health checks.
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", api.AdminOnly(cfg.AdminToken, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
		})
		ready := api.Ready(map[string]func(context.Context) error{
			"postgres": store.Ping,
			"redis":    func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
			"lock":     func(ctx context.Context) error { _, err := lockQuorum(ctx, cfg.LockRedisURLs, nodes); return err },
		}, log)
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
			// Once its shutdown has begun (ctx ended), the worker takes no
			// more orders: it is not ready, as an API that began its
			// shutdown is not (it stops listening at once), although this
			// listener stays up (/metrics, /healthz) while the orders in
			// flight finish, up to 35s. It answered 200 until it exited.
			if ctx.Err() != nil {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.Header().Set("Cache-Control", "no-store")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"status":"shutting_down"}` + "\n"))
				return
			}
			ready.ServeHTTP(w, r)
		})
		// An idle keep-alive connection with no deadline would stay open
		// for ever: each is dropped after IdleTimeout, as on the API.
		msrv := &http.Server{Addr: cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
		go func() { _ = msrv.Serve(metricsLn) }()
		defer msrv.Close()
		log.Info("worker metrics listening", "addr", metricsLn.Addr().String())
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	if err := w.Start(runCtx); err != nil {
		return err
	}
	log.Info("worker started", "queue", cfg.Queue, "concurrency", cfg.WorkerConcurrency, "mode", cfg.WorkerMode,
		"lock_nodes", len(cfg.LockRedisURLs), "lock_ttl", cfg.LockTTL.String())
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	log.Info("worker shutting down: finishing orders in flight")
	w.Shutdown()
	log.Info("worker stopped")
	return nil
}

// databaseError names the database setting in err, and says what to run
// when the database lacks this build's migrations or does not exist: api
// and worker refuse to serve it rather than report ready and fail every
// request.
func databaseError(cfg config, err error) error {
	if errors.Is(err, inventory.ErrSchemaOutdated) {
		return fmt.Errorf("%s: %w; run `flashsale migrate` with the same settings first (it creates the database too)", cfg.name("FLASHSALE_DATABASE_URL"), err)
	}
	return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_DATABASE_URL"), err)
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, log, err := setup("migrate", args, stderr)
	if err != nil {
		return err
	}
	res, err := inventory.Migrate(ctx, cfg.DatabaseURL)
	if err != nil {
		// Each migration runs in a transaction of its own: one a signal
		// cut short is rolled back, those before it are kept.
		return stoppedUnfinished(ctx, log, err)
	}
	if len(res) == 0 {
		log.Info("schema up to date")
	}
	for _, r := range res {
		log.Info("migration applied", "version", r.Version, "name", r.Name)
	}
	return nil
}

// apiShutdownWait is how long a stopping API waits for its requests in
// flight: 15s, or longer when a restock may take longer (restock, the
// longest request, answers within sale.Service.RestockBound: 14.2s with
// the default product timeout, 44.2s at its 20s maximum), so that a
// shutdown does not cut a restock short, answer it nothing, and leave its
// announced generation unstored (workers' sold-out marks refused until
// the next restock).
func apiShutdownWait(restockBound time.Duration) time.Duration {
	return max(15*time.Second, restockBound+time.Second)
}
