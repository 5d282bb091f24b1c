package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/loadtest"
	"github.com/flashsale/flashsale/queue"
)

// productQueue is the asynq queue of the product's runs (each in a flushed
// Redis DB of the run's own).
const productQueue = "orders"

// bencher holds one run's shared state.
type bencher struct {
	cfg      Config
	runID    string // [a-z0-9_], unique per run
	token    string // admin token of every API in the run
	redisURL string // the owned Redis DB
	connOpt  asynq.RedisConnOpt
	redis    *ownedDB
	start    time.Time
}

// Run measures every part of the benchmark (or those in Config.Only) and
// returns the results. It returns an error only when it could not start
// (bad config, services unreachable, Redis DB taken); a part that fails has
// Err set in its result and the run goes on with the next. Every process,
// database and Redis key the run created is gone when Run returns.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &bencher{cfg: cfg, runID: newRunID(), token: randomHex(12), start: time.Now()}
	if b.redisURL, err = cfg.redisURL(); err != nil {
		return nil, fmt.Errorf("bench: Redis URL: %w", err)
	}
	if b.connOpt, err = queue.ParseRedisURL(b.redisURL, 8); err != nil {
		return nil, fmt.Errorf("bench: Redis URL: %w", err)
	}
	if b.redis, err = claimRedisDB(ctx, b.redisURL, b.runID); err != nil {
		return nil, err
	}
	defer func() {
		if err := b.redis.release(); err != nil {
			b.logf("could not empty Redis DB %d: %v", cfg.RedisDB, err)
		}
	}()
	if err := createDatabase(ctx, cfg.DatabaseURL, b.dbName("probe")); err != nil {
		return nil, err
	}
	if err := dropDatabase(cfg.DatabaseURL, b.dbName("probe")); err != nil {
		return nil, err
	}

	r := &Results{
		RunID:    b.runID,
		Date:     b.start,
		Machine:  machineInfo(ctx, b.redis.rdb, cfg.DatabaseURL),
		Settings: cfg.Settings,
	}
	const skipped = "not selected (-only)"
	r.Ceiling = CeilingResult{Err: skipped}
	r.Front = FrontResult{Err: skipped}
	for _, s := range []*ScenarioResult{&r.Hot, &r.Spread, &r.Backlog, &r.OneByOne, &r.LockInRequest} {
		s.Err = skipped
	}

	steps := []struct {
		part string
		run  func()
	}{
		{PartCeiling, func() { r.Ceiling = b.ceiling(ctx) }},
		{PartFront, func() { r.Front = b.front(ctx) }},
		{PartHot, func() { r.Hot = b.product(ctx, PartHot) }},
		{PartSpread, func() { r.Spread = b.product(ctx, PartSpread) }},
		{PartBacklog, func() { r.Backlog = b.product(ctx, PartBacklog) }},
		{PartOneByOne, func() { r.OneByOne = b.product(ctx, PartOneByOne) }},
		{PartLockInRequest, func() { r.LockInRequest = b.lockInRequest(ctx) }},
	}
	n := 0
	for _, s := range steps {
		if cfg.runs(s.part) {
			n++
		}
	}
	i := 0
	for _, s := range steps {
		if !cfg.runs(s.part) {
			continue
		}
		i++
		if ctx.Err() != nil {
			*partErr(r, s.part) = "not run: " + ctx.Err().Error()
			b.logf("[%d/%d] %s: not run: %v", i, n, s.part, ctx.Err())
			continue
		}
		b.logf("[%d/%d] %s", i, n, s.part)
		t0 := time.Now()
		s.run()
		b.logf("[%d/%d] %s: done in %s: %s", i, n, s.part, time.Since(t0).Round(100*time.Millisecond), summary(r, s.part))
	}
	r.Elapsed = time.Since(b.start)
	return r, nil
}

// partErr is the Err field of a part's result.
func partErr(r *Results, part string) *string {
	switch part {
	case PartCeiling:
		return &r.Ceiling.Err
	case PartFront:
		return &r.Front.Err
	case PartHot:
		return &r.Hot.Err
	case PartSpread:
		return &r.Spread.Err
	case PartBacklog:
		return &r.Backlog.Err
	case PartOneByOne:
		return &r.OneByOne.Err
	default:
		return &r.LockInRequest.Err
	}
}

// summary is one progress line about a finished part.
func summary(r *Results, part string) string {
	if part == PartCeiling {
		c := r.Ceiling
		if !c.Ran {
			return "FAILED: " + c.Err
		}
		return fmt.Sprintf("enqueue %s/s, end to end %s/s", rate(c.EnqueuePerSec), rate(c.EndToEndPerSec))
	}
	if part == PartFront {
		f := r.Front
		if !f.Ran {
			return "FAILED: " + f.Err
		}
		return fmt.Sprintf("submitted %s/s, end to end %s/s, submit p99 %s ms, every order once: %v",
			rate(f.SubmittedPerSec), rate(f.EndToEndPerSec), ms(f.Submit.P99), f.OK())
	}
	s := map[string]ScenarioResult{PartHot: r.Hot, PartSpread: r.Spread, PartBacklog: r.Backlog,
		PartOneByOne: r.OneByOne, PartLockInRequest: r.LockInRequest}[part]
	if !s.Ran {
		return "FAILED: " + s.Err
	}
	line := fmt.Sprintf("submitted %s/s, settled %s/s, submit p99 %s ms, invariants %s",
		rate(s.SubmittedPerSec), rate(s.SettledPerSec), ms(s.Submit.P99), invariantText(s))
	if part == PartBacklog {
		line += fmt.Sprintf(", drain %s/s", rate(s.DrainPerSec))
	}
	return line
}

// product runs one scenario of the product: hot, spread, backlog or
// one-by-one, on a cluster of its own and a fresh database.
func (b *bencher) product(ctx context.Context, part string) ScenarioResult {
	c := b.cfg
	products, hot, stock, mode := 1, true, c.HotStock, "batch"
	switch part {
	case PartSpread:
		products, hot, stock = c.SpreadProducts, false, c.SpreadStock
	case PartOneByOne:
		mode = "single"
	}
	res := ScenarioResult{Orders: c.Orders, Products: products, Stock: stock}
	fail := func(err error) ScenarioResult {
		res.Ran, res.Err = false, err.Error()
		return res
	}
	if err := b.redis.reset(ctx); err != nil {
		return fail(err)
	}
	dbURL, drop, err := b.database(ctx, part)
	if err != nil {
		return fail(err)
	}
	defer drop()
	if _, err := inventory.Migrate(ctx, dbURL); err != nil {
		return fail(err)
	}
	cl, err := cluster.Start(ctx, cluster.Config{
		Binary: c.Binary, APIs: c.APIs, Workers: c.Workers, LogDir: filepath.Join(c.LogDir, part),
		// Workers are up (their /metrics answers) before the load starts.
		WorkerMetrics: true,
		Env: map[string]string{
			"FLASHSALE_REDIS_URL":          b.redisURL,
			"FLASHSALE_LOCK_REDIS_URLS":    b.redisURL,
			"FLASHSALE_DATABASE_URL":       dbURL,
			"FLASHSALE_ADMIN_TOKEN":        b.token,
			"FLASHSALE_WORKER_CONCURRENCY": strconv.Itoa(c.WorkerConcurrency),
			"FLASHSALE_WORKER_MODE":        mode,
			"FLASHSALE_QUEUE":              productQueue,
			"FLASHSALE_KEY_PREFIX":         "bench:",
			"FLASHSALE_LOCK_TTL":           "10s",
			"FLASHSALE_RATE_LIMIT":         "",
			"FLASHSALE_LOG_LEVEL":          "info",
			"FLASHSALE_LOG_FORMAT":         "json",
		},
	})
	if err != nil {
		return fail(err)
	}
	defer cl.Stop()
	b.logf("%s: %d APIs and %d workers (%s mode) up; %d orders on %d product(s), stock %d each",
		part, c.APIs, c.Workers, mode, c.Orders, products, stock)

	lcfg := b.loadtestConfig(part, cl.URLs(), products, hot, stock)
	var rep *loadtest.Report
	var workersStart time.Time
	apiCPU0, genCPU0 := cpuOf(cl.APIs), selfCPU()
	// The workers' start-up and idle polling before the load test are not
	// the part's; in backlog they are started during it, as new processes.
	var workerCPU0 time.Duration
	if part != PartBacklog {
		workerCPU0 = cpuOf(cl.Workers)
	}
	// The CPU of the burst: up to the end of the settle phase, not the
	// verify phase's reads of every order and product.
	var apiCPU1, genCPU1, workerCPU1 time.Duration
	settled := false
	lcfg.OnSettled = func() {
		apiCPU1, genCPU1, workerCPU1, settled = cpuOf(cl.APIs), selfCPU(), cpuOf(cl.Workers), true
	}
	if part == PartBacklog {
		rep, workersStart, res.QueuedAtStart, err = b.backlog(ctx, cl, lcfg)
	} else {
		rep, err = loadtest.Run(ctx, lcfg)
	}
	if rep != nil {
		res = fromReport(res, rep)
	}
	if !settled {
		apiCPU1, genCPU1, workerCPU1 = cpuOf(cl.APIs), selfCPU(), cpuOf(cl.Workers)
	}
	res.LoadGenCPUSeconds = (genCPU1 - genCPU0).Seconds()
	res.APICPUSeconds = (apiCPU1 - apiCPU0).Seconds()
	res.WorkerCPUSeconds = (workerCPU1 - workerCPU0).Seconds()
	for _, p := range cl.APIs {
		res.APIPeakRSS = max(res.APIPeakRSS, p.PeakRSS())
	}
	for _, p := range cl.Workers {
		res.WorkerPeakRSS = max(res.WorkerPeakRSS, p.PeakRSS())
	}
	if err != nil {
		return fail(err)
	}
	if err := exitedEarly(cl.All()); err != nil {
		return fail(err)
	}
	if part == PartBacklog && rep.Phases.Settle > 0 {
		res.DrainSeconds, res.DrainPerSec = backlogDrain(rep, workersStart)
		if last, err := lastDecision(ctx, dbURL); err == nil && last.After(workersStart) {
			res.DrainCommitSeconds = last.Sub(workersStart).Seconds()
		}
	}
	return res
}

// backlogDrain is the backlog's drain: the time from the workers' start
// to loadtest's last final status, and the orders settled per second in it.
func backlogDrain(rep *loadtest.Report, workersStart time.Time) (secs, perSec float64) {
	// loadtest's last final status, on this process's monotonic clock.
	lastFinal := rep.StartedAt.Add(seconds(rep.Phases.Create + rep.Phases.Settle))
	secs = lastFinal.Sub(workersStart).Seconds()
	if secs > 0 {
		// The orders seen final in loadtest's settle phase: not those
		// first seen final by its re-sends after settling, which come
		// after the window's end (loadtest's SettledPerSec leaves them
		// out too).
		perSec = rep.SettledPerSec * rep.Phases.Settle / secs
	}
	return secs, perSec
}

// cpuOf sums the CPU time the running processes have used.
func cpuOf(procs []*cluster.Proc) time.Duration {
	var d time.Duration
	for _, p := range procs {
		d += procCPU(p.PID())
	}
	return d
}

// exitedEarly names the processes that are no longer running: something
// stopped or killed them during the part, so its figures mean nothing.
func exitedEarly(procs []*cluster.Proc) error {
	var gone []string
	for _, p := range procs {
		if !p.Running() {
			gone = append(gone, p.Name+" (log "+p.LogPath()+")")
		}
	}
	if len(gone) == 0 {
		return nil
	}
	return fmt.Errorf("processes exited during the run, figures discarded: %s", strings.Join(gone, ", "))
}

// lastDecision is when the last order of the database was decided: the
// start of the transaction that committed it (orders.updated_at).
func lastDecision(ctx context.Context, dbURL string) (time.Time, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return time.Time{}, err
	}
	defer conn.Close(context.Background())
	var t time.Time
	err = conn.QueryRow(ctx, `SELECT max(updated_at) FROM orders`).Scan(&t)
	return t, err
}

// backlog stops the workers, runs the load test, and starts the workers
// once every order is queued; it returns the report and when the workers
// were started.
func (b *bencher) backlog(ctx context.Context, cl *cluster.Cluster, lcfg loadtest.Config) (*loadtest.Report, time.Time, int, error) {
	var wg sync.WaitGroup
	for _, w := range cl.Workers {
		wg.Go(func() { _ = w.Stop(30 * time.Second) })
	}
	wg.Wait()
	b.logf("backlog: workers stopped; queueing %d orders", lcfg.Orders)

	type outcome struct {
		rep *loadtest.Report
		err error
	}
	done := make(chan outcome, 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		rep, err := loadtest.Run(runCtx, lcfg)
		done <- outcome{rep, err}
	}()
	abort := func(err error) (*loadtest.Report, time.Time, int, error) {
		cancel()
		o := <-done
		return o.rep, time.Time{}, 0, err
	}

	// Every order is accepted while no worker runs (nothing is sold out
	// yet), so the queue ends holding all of them. Should some submits
	// fail, go on once the queue stops growing.
	insp := asynq.NewInspector(b.connOpt)
	defer insp.Close()
	var queued int
	lastChange := time.Now()
	var early *outcome
	err := waitUntil(ctx, b.cfg.ScenarioTimeout, func() (bool, error) {
		select {
		case o := <-done:
			early = &o
			return true, nil
		default:
		}
		q, err := insp.GetQueueInfo(productQueue)
		if err != nil {
			return false, nil // not created yet, or transient
		}
		if q.Pending != queued {
			queued, lastChange = q.Pending, time.Now()
		}
		return q.Pending >= lcfg.Orders || (queued > 0 && time.Since(lastChange) > 3*time.Second), nil
	})
	if early != nil {
		return early.rep, time.Time{}, 0, fmt.Errorf("backlog: the load test ended before the workers started: %v", early.err)
	}
	if err != nil {
		return abort(fmt.Errorf("backlog: orders not queued: %w", err))
	}
	start := time.Now()
	for _, w := range cl.Workers {
		if err := w.Start(b.cfg.Binary); err != nil {
			return abort(err)
		}
	}
	b.logf("backlog: %d orders queued; %d workers started", queued, len(cl.Workers))
	o := <-done
	return o.rep, start, queued, o.err
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// loadtestConfig is the load test of a part.
func (b *bencher) loadtestConfig(part string, apis []string, products int, hot bool, stock int64) loadtest.Config {
	c := b.cfg
	return loadtest.Config{
		APIs: apis, LoopbackOnly: true, AdminToken: b.token,
		Orders: c.Orders, Concurrency: c.Concurrency, Products: products, Hot: hot, Stock: stock,
		RunID:    "bench-" + part + "-" + b.runID[len(b.runID)-6:],
		Seed:     1,
		Timeout:  c.ScenarioTimeout,
		Progress: c.Progress,
		JSONPath: filepath.Join(c.LogDir, part, "loadtest.json"),
	}
}

// fromReport copies a loadtest report's figures into res.
func fromReport(res ScenarioResult, rep *loadtest.Report) ScenarioResult {
	res.Ran = true
	res.SubmittedPerSec, res.SettledPerSec, res.SettleSeconds = rep.SubmittedPerSec, rep.SettledPerSec, rep.Phases.Settle
	res.Outcomes = rep.Outcomes
	res.SubmitStatus = maps.Clone(rep.SubmitStatus)
	res.Submit, res.Final = rep.SubmitLatency, rep.FinalLatency
	// Sends whose every try went unanswered are in no latency.
	res.UnansweredSubmits = max(rep.Sent-rep.SubmitLatency.Count, 0)
	res.Resends = rep.Resends
	res.SubmitByStatus = maps.Clone(rep.SubmitLatencyByStatus)
	res.MaxQueueDepth = -1
	if rep.Queue.Available {
		res.MaxQueueDepth = rep.Queue.MaxDepth
	}
	res.WallSeconds = rep.Phases.Total - rep.Phases.Verify // the CPU's window
	res.Verified, res.OK = rep.Verified, rep.OK
	res.Violations = maps.Clone(rep.ViolationCounts)
	return res
}

// database creates a fresh database for part and returns its URL and a
// function that drops it.
func (b *bencher) database(ctx context.Context, part string) (string, func(), error) {
	name := b.dbName(part)
	url, err := b.cfg.databaseURL(name)
	if err != nil {
		return "", nil, err
	}
	if err := createDatabase(ctx, b.cfg.DatabaseURL, name); err != nil {
		return "", nil, err
	}
	return url, func() {
		if err := dropDatabase(b.cfg.DatabaseURL, name); err != nil {
			b.logf("%v", err)
		}
	}, nil
}

func (b *bencher) dbName(part string) string {
	return "flashsale_bench_" + b.runID + "_" + strings.ReplaceAll(part, "-", "_")
}

// begin prepares a baseline part: an empty Redis DB, and the folder of its
// processes' logs, which it returns.
func (b *bencher) begin(ctx context.Context, part string) (string, error) {
	if err := b.redis.reset(ctx); err != nil {
		return "", err
	}
	dir := filepath.Join(b.cfg.LogDir, part)
	return dir, os.MkdirAll(dir, 0o755)
}

// helperProc describes a helper program process logging into dir.
func (b *bencher) helperProc(name, addr, dir string, args ...string) *cluster.Proc {
	full := append(append([]string{}, b.cfg.Helper[1:]...), args...)
	return cluster.NewProc(name, addr, filepath.Join(dir, name+".log"), full, cluster.BaseEnv())
}

func (b *bencher) logf(format string, args ...any) {
	if b.cfg.Progress == nil {
		return
	}
	fmt.Fprintf(b.cfg.Progress, "bench %6.1fs  %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// stopAll stops processes in parallel (SIGTERM, then SIGKILL after 30s).
func stopAll(procs []*cluster.Proc) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { _ = p.Stop(30 * time.Second) })
	}
	wg.Wait()
}

// waitUntil calls cond every 10ms until it returns true or an error, ctx
// ends, or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// waitExit waits for p to exit, up to timeout or ctx's end.
func waitExit(ctx context.Context, p *cluster.Proc, timeout time.Duration) error {
	return waitUntil(ctx, timeout, func() (bool, error) { return !p.Running(), nil })
}

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(b)
}

// newRunID returns a run id such as "0102t150405_1a2b3c": sortable, unique.
func newRunID() string {
	return time.Now().UTC().Format("0102t150405") + "_" + randomHex(3)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}
