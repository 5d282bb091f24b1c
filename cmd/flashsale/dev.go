package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/logging"
	"github.com/flashsale/flashsale/internal/redact"
	"github.com/flashsale/flashsale/inventory"
)

// Ports of the private servers `flashsale dev` starts when nothing answers
// at the configured addresses (a free port is used if these are taken).
const (
	devRedisPort    = 16379
	devPostgresPort = 15432
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var dataDir string
	var workers int
	cfg, log, err := setupWith("dev", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&dataDir, "data-dir", ".flashsale", "folder for private Redis/PostgreSQL data when none is running")
		fs.IntVar(&workers, "workers", 3, "worker processes to run")
	})
	if err != nil {
		return err
	}
	started := false
	err = serveDev(ctx, cfg, log, dataDir, workers, stdout, stderr, func() { started = true })
	if errors.Is(err, errStartStopUnclean) {
		return err // a failed stop of its children is no clean stop
	}
	// A signal during its start stops it as it stops an api or a worker
	// (its processes and private servers stopped on the way out).
	return stoppedDuringStart(ctx, log, started, err)
}

// errStartStopUnclean is the error of a dev whose start a stop (a signal)
// cut short, and one of whose children, stopped on the way out, did not
// stop cleanly.
var errStartStopUnclean = errors.New("stopped during its start, not cleanly")

// serveDev runs dev's servers and processes until ctx ends. ready is
// called once it has printed that it is running.
func serveDev(ctx context.Context, cfg config, log *slog.Logger, dataDir string, workers int, stdout, stderr io.Writer, ready func()) (err error) {
	if workers < 1 || workers > 32 {
		return fmt.Errorf("bad -workers=%d: want 1 to 32", workers)
	}
	base, err := devBaseURL(cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("bad %s=%q: %w", cfg.name("FLASHSALE_HTTP_ADDR"), cfg.HTTPAddr, err)
	}
	// Its processes log in the format of its own lines: "auto" is decided
	// here, on its output (their output is a pipe to it).
	cfg.LogFormat = logging.Format(stderr, cfg.LogFormat)
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		return err
	}

	// 1. Redis and PostgreSQL: use what answers, else start private ones.
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	if addr, ok := redisAddr(cfg.RedisURL); ok && devRedisPing(cfg.RedisURL, addr) != nil {
		if _, err := localsvc.FindBinary("redis-server"); err != nil {
			return fmt.Errorf("nothing answers at %[1]s=%[2]s and redis-server is not installed: "+
				"install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) "+
				"or point %[1]s at a running Redis 6.2+", cfg.name("FLASHSALE_REDIS_URL"), redact.URL(cfg.RedisURL))
		}
		r, err := startDevRedis(filepath.Join(dataDir, "redis"))
		if err != nil {
			return err
		}
		cleanups = append(cleanups, func() { _ = r.Stop() })
		log.Info("started a private redis-server", "url", r.URL(0), "dir", r.Dir())
		if len(cfg.LockRedisURLs) == 1 && cfg.LockRedisURLs[0] == cfg.RedisURL {
			cfg.LockRedisURLs = []string{r.URL(0)}
		}
		cfg.RedisURL = r.URL(0)
	}
	if !postgresAnswers(ctx, cfg.DatabaseURL) {
		// A probe ended by a stop (a signal while the private Redis
		// started) says nothing of the server: stop here rather than
		// initdb and start one beside what may answer.
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", cfg.name("FLASHSALE_DATABASE_URL"), context.Cause(ctx))
		}
		if _, err := localsvc.FindBinary("initdb"); err != nil {
			return fmt.Errorf("nothing answers at %[1]s=%[2]s and PostgreSQL's initdb is not installed: "+
				"install PostgreSQL 13+ (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) "+
				"or point %[1]s at a running server", cfg.name("FLASHSALE_DATABASE_URL"), redact.URL(cfg.DatabaseURL))
		}
		p, err := startDevPostgres(filepath.Join(dataDir, "postgres"))
		if err != nil {
			return err
		}
		cleanups = append(cleanups, func() { _ = p.Stop() })
		log.Info("started a private PostgreSQL", "url", p.URL("flashsale"), "dir", p.Dir())
		cfg.DatabaseURL = p.URL("flashsale")
	}

	// 2. Schema.
	if _, err := inventory.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	if cfg.AdminToken == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		cfg.AdminToken = hex.EncodeToString(b)
	}
	// The buy line's Idempotency-Key and buyer are this run's: sent again,
	// the line replays its order, as keys do; a rerun of dev (on the same
	// database) prints a line that places a new order, not a replay of the
	// order an earlier run's line placed (a fixed try-1 did that), for a
	// buyer who has not bought the demo product yet (one per buyer: a fixed
	// alice's order ended limit_exceeded on a rerun).
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	runID := hex.EncodeToString(b)
	buyKey, buyer := "try-"+runID, "alice-"+runID

	// 3. The API and the workers, as separate processes of this binary.
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	out := &lockedWriter{w: stderr}
	var procs []*child
	// On the way out after a failure, stop what was started; the failure
	// is the error returned (each child's own lines say how it stopped).
	// But a start cut short by ctx's end (a signal) is no failure, and
	// runDev reads it as a clean stop: that is what the stop found, then.
	// Before, a child's failed stop was ignored there, and dev exited 0.
	cleanups = append(cleanups, func() {
		if serr := stopChildren(procs, childStopGrace, log); serr != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", errStartStopUnclean, serr)
		}
	})
	exited := make(chan string, workers+1)
	envs, err := devEnvs(cfg, workers)
	if err != nil {
		return err
	}
	start := func(name string, i int, args ...string) error {
		c, err := startChild(exe, name, args, envs[i], cfg.LogFormat == "json", out, exited)
		if err != nil {
			return err
		}
		procs = append(procs, c)
		return nil
	}
	if err := start("api", 0, "api"); err != nil {
		return err
	}
	for i := 1; i <= workers; i++ {
		if err := start(fmt.Sprintf("worker-%d", i), i, "worker"); err != nil {
			return err
		}
	}
	if err := waitReady(ctx, base+"/readyz", 30*time.Second, exited); err != nil {
		return err
	}

	// 4. A demo product and what to try.
	demo, err := seedDemo(ctx, base, cfg.AdminToken, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `
flashsale is running: API %s, %d workers. Ctrl-C stops everything.

  # buy one unit of the demo product (stock %d, %s)
  curl -s -X POST %s/v1/orders -H 'Content-Type: application/json' \
       -H 'Idempotency-Key: %s' -d '{"product_id":"demo-phone","user_id":"%s","quantity":1}'

  # its outcome: long-poll until final (replace ORDER_ID with the order_id above)
  curl -s '%s/v1/orders/ORDER_ID?wait=10s'

  # the product: stock and sold
  curl -s %s/v1/products/demo-phone

  # admin: create and restock products (token of this run)
  curl -s -X POST %s/v1/products -H 'Authorization: Bearer %s' \
       -d '{"id":"%s","name":"Phone","stock":100,"per_user_limit":1}'
  curl -s -X POST %s/v1/products/%s/restock -H 'Authorization: Bearer %s' -H 'Idempotency-Key: restock-1' -d '{"quantity":10}'

  # a load test against it; watch it live on the dashboard, %s/
  # (sign in with the admin token), or in the queue monitor, %s/monitoring/
  %s loadtest --api %s --admin-token %s --orders 2000 --stock 500 --hot
`, base, workers, demo.product.Stock, perBuyer(demo.product.PerUserLimit), base, buyKey, buyer, base, base,
		base, cfg.AdminToken, demo.freeID, base, demo.freeID, cfg.AdminToken, base, base, exe, base, cfg.AdminToken)
	ready()

	select {
	case <-ctx.Done():
		log.Info("stopping")
		// How the children stop is how this run ends: one killed after
		// the grace period, or ending with a non-zero status, may have
		// left orders undecided, and a script or supervisor running dev
		// must not read that as a clean stop (it exited 0).
		stopping := procs
		procs = nil // stopped here: nothing left for the cleanup
		return stopChildren(stopping, childStopGrace, log)
	case name := <-exited:
		return fmt.Errorf("%s exited unexpectedly; see its log above", name)
	}
}

// devBaseURL is the base URL of dev's API listening on addr, as dev and
// the lines it prints reach it: an address of every interface (":8080",
// "0.0.0.0:8080", "[::]:8080") is reached on loopback, and port 0 (any
// free port, which dev would not know) is refused. Before, dev printed
// curl lines for http://:8080, which curl refuses, and with port 0 it
// waited 30s for an API at port 0, then said it was not ready.
func devBaseURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port == "0" {
		return "", errors.New("dev needs the API's port to reach it and print its URL: choose one (port 0 picks any free port)")
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// devEnv is the environment of dev's process i (0: the API; 1..n: the
// workers): this process's environment without its FLASHSALE_* variables,
// then every setting as dev resolved it (its flags included) with the
// servers and token it chose, and its log format (runDev decides "auto"
// on its own output: the children write to a pipe). Listeners the
// processes would otherwise share get one port each: the pprof address
// serves the API, and worker i its port + i; the metrics address (workers
// only) serves worker 1, and worker i its port + i - 1. Port 0 stays 0
// (any free port).
func devEnv(cfg config, i int) ([]string, error) {
	vals := maps.Clone(cfg.raw)
	vals["FLASHSALE_REDIS_URL"] = cfg.RedisURL
	vals["FLASHSALE_LOCK_REDIS_URLS"] = strings.Join(cfg.LockRedisURLs, ",")
	vals["FLASHSALE_DATABASE_URL"] = cfg.DatabaseURL
	vals["FLASHSALE_ADMIN_TOKEN"] = cfg.AdminToken
	vals["FLASHSALE_LOG_FORMAT"] = cfg.LogFormat
	var err error
	if i > 0 {
		if vals["FLASHSALE_PPROF_ADDR"], err = offsetAddr(cfg.PprofAddr, i); err != nil {
			return nil, fmt.Errorf("%s for worker %d: %w", cfg.name("FLASHSALE_PPROF_ADDR"), i, err)
		}
		if vals["FLASHSALE_METRICS_ADDR"], err = offsetAddr(cfg.MetricsAddr, i-1); err != nil {
			return nil, fmt.Errorf("%s for worker %d: %w", cfg.name("FLASHSALE_METRICS_ADDR"), i, err)
		}
	}
	env := cluster.BaseEnv()
	for _, k := range slices.Sorted(maps.Keys(vals)) {
		env = append(env, k+"="+vals[k])
	}
	return env, nil
}

// devEnvs is devEnv for the API (index 0) and each worker (1..workers). It
// refuses settings under which two processes would listen on one port
// (say, the metrics port right above the pprof port): the second would fail
// to start.
func devEnvs(cfg config, workers int) ([][]string, error) {
	envs := make([][]string, workers+1)
	owner := map[string]string{}
	for i := range envs {
		env, err := devEnv(cfg, i)
		if err != nil {
			return nil, err
		}
		envs[i] = env
		name := "the API"
		if i > 0 {
			name = fmt.Sprintf("worker %d", i)
		}
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			if (i > 0 && k == "FLASHSALE_HTTP_ADDR") || (i == 0 && k == "FLASHSALE_METRICS_ADDR") {
				continue // not listened on by this kind of process
			}
			if k != "FLASHSALE_HTTP_ADDR" && k != "FLASHSALE_PPROF_ADDR" && k != "FLASHSALE_METRICS_ADDR" {
				continue
			}
			if _, port, err := net.SplitHostPort(v); v == "" || err != nil || port == "0" {
				continue
			}
			if prev, ok := owner[v]; ok {
				return nil, fmt.Errorf("%s and %s would both listen on %s: choose %s, %s and %s further apart (dev gives the workers the ports above them)", prev, name+"'s "+k, v,
					cfg.name("FLASHSALE_HTTP_ADDR"), cfg.name("FLASHSALE_PPROF_ADDR"), cfg.name("FLASHSALE_METRICS_ADDR"))
			}
			owner[v] = name + "'s " + k
		}
	}
	return envs, nil
}

// offsetAddr is host:port with port moved up by n; "" and port 0 stay as
// they are.
func offsetAddr(addr string, n int) (string, error) {
	if addr == "" || n == 0 {
		return addr, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("port %q: %w", port, err)
	}
	if p == 0 {
		return addr, nil
	}
	if p+n > 65535 {
		return "", fmt.Errorf("port %d + %d is past 65535", p, n)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+n)), nil
}

// setupWith is setup with extra flags registered by add.
func setupWith(name string, args []string, stderr io.Writer, add func(fs *flag.FlagSet)) (config, *slog.Logger, error) {
	fs := flag.NewFlagSet("flashsale "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	add(fs)
	return setupFlags(fs, name, args, stderr)
}

// devRedisPing is localsvc.Ping of the Redis at addr, over TLS for a
// rediss:// URL: a TLS server does not answer a plaintext PING, and dev
// took a Redis that is up for none and ran on a private one instead.
func devRedisPing(raw, addr string) error {
	if u, err := url.Parse(raw); err == nil && u.Scheme == "rediss" {
		return localsvc.PingTLS(addr)
	}
	return localsvc.Ping(addr)
}

func redisAddr(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		return "", false
	}
	port := u.Port()
	if port == "" {
		port = "6379"
	}
	return net.JoinHostPort(u.Hostname(), port), true
}

// postgresAnswers reports whether a PostgreSQL server answers at the URL's
// address: any answer of the server's counts, an error included (a missing
// database, which migrate creates; a refused login, a pg_hba rule, too many
// connections, which migrate then reports). Only then is the server the
// one to use: taking a refused login for "nothing answers" ran dev on a
// private PostgreSQL instead of the database the operator named.
func postgresAnswers(ctx context.Context, raw string) bool {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, raw)
	if err == nil {
		_ = conn.Close(cctx)
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr)
}

func startDevRedis(dir string) (*localsvc.Redis, error) {
	opts := localsvc.RedisOptions{Dir: dir, Port: devRedisPort, AppendFsync: "everysec"}
	if localsvc.Ping(fmt.Sprintf("127.0.0.1:%d", devRedisPort)) == nil || !portFree(devRedisPort) {
		opts.Port = 0
	}
	return localsvc.StartRedis(opts)
}

func startDevPostgres(dir string) (*localsvc.Postgres, error) {
	opts := localsvc.PostgresOptions{Dir: dir, Port: devPostgresPort}
	if !portFree(devPostgresPort) {
		opts.Port = 0
	}
	return localsvc.StartPostgres(opts)
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

func waitReady(ctx context.Context, url string, timeout time.Duration, exited <-chan string) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("API not ready at %s after %v", url, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case name := <-exited:
			return fmt.Errorf("%s exited during start; see its log above", name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// demoProduct is the product `flashsale dev` creates for trying it out.
const demoProduct = `{"id":"demo-phone","name":"Demo phone","stock":100,"per_user_limit":1}`

// demoState is what dev's lines to try say about the products: the demo
// product as it is, and an id no product has yet, for the lines that
// create and restock one.
type demoState struct {
	product productJSON
	freeID  string
}

// productJSON is a product as the API answers it.
type productJSON struct {
	ID           string `json:"id"`
	Stock        int64  `json:"stock"`
	Sold         int64  `json:"sold"`
	PerUserLimit int    `json:"per_user_limit"`
}

// seedDemo creates the demo product, or, on a database an earlier run
// created it in, says in one line that it is kept as it is (stock and sold
// included). The create and restock lines dev prints then name sku-1, or
// the first of sku-2, sku-3, ... that no product has: on a rerun, sku-1 may
// exist from the lines of the run before, and creating it again would
// answer product_exists.
func seedDemo(ctx context.Context, base, token string, log *slog.Logger) (demoState, error) {
	var d demoState
	hc := &http.Client{Timeout: 10 * time.Second}
	status, body, err := devRequest(ctx, hc, http.MethodPost, base+"/v1/products", token, demoProduct)
	switch {
	case err != nil:
		return d, fmt.Errorf("create demo product: %w", err)
	case status == http.StatusConflict:
		status, body, err = devRequest(ctx, hc, http.MethodGet, base+"/v1/products/demo-phone", "", "")
		if err != nil {
			return d, fmt.Errorf("read demo product: %w", err)
		}
		if status != http.StatusOK {
			return d, fmt.Errorf("read demo product: %d %s", status, body)
		}
	case status != http.StatusCreated:
		return d, fmt.Errorf("create demo product: %d %s", status, body)
	}
	if err := json.Unmarshal(body, &d.product); err != nil {
		return d, fmt.Errorf("demo product: %w", err)
	}
	if status == http.StatusOK {
		log.Info("demo product already there (from an earlier run): kept as it is",
			"product_id", d.product.ID, "stock", d.product.Stock, "sold", d.product.Sold)
	}
	for i := 1; d.freeID == ""; i++ {
		id := fmt.Sprintf("sku-%d", i)
		status, body, err := devRequest(ctx, hc, http.MethodGet, base+"/v1/products/"+id, "", "")
		switch {
		case err != nil:
			return d, fmt.Errorf("look up %s: %w", id, err)
		case status == http.StatusNotFound:
			d.freeID = id
		case status != http.StatusOK:
			return d, fmt.Errorf("look up %s: %d %s", id, status, body)
		case i == 100:
			// A database full of examples: a name of this run's.
			d.freeID = fmt.Sprintf("sku-%d", time.Now().Unix())
		}
	}
	return d, nil
}

// devRequest sends one request to dev's API, with the admin token if
// token is set, and returns the answer's status and body.
func devRequest(ctx context.Context, hc *http.Client, method, url, token, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// perBuyer says a per-user limit in words.
func perBuyer(limit int) string {
	switch limit {
	case 0:
		return "no limit per buyer"
	case 1:
		return "one per buyer"
	}
	return fmt.Sprintf("up to %d per buyer", limit)
}

// child is a process dev started; done is closed once it has exited, err
// then set to how it ended (exec.Cmd.Wait's error).
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startChild starts exe with args and env as dev's process name, its
// output written to out as lines marked with name (see prefixWriter);
// exited receives name once it has exited.
func startChild(exe, name string, args, env []string, json bool, out io.Writer, exited chan<- string) (*child, error) {
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	pw := &prefixWriter{name: name, json: json, w: out}
	cmd.Stdout, cmd.Stderr = pw, pw
	// Own process group: a Ctrl-C reaches only this process, which
	// then stops the children with one SIGTERM each (a second signal
	// would end them at once, leaving orders in flight).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait() // returns once the child's output is copied
		_ = pw.Flush()
		close(c.done)
		exited <- name
	}()
	return c, nil
}

// childStopGrace is how long stopChildren waits before it kills a child:
// longer than a child's own shutdown can take, so that Ctrl-C stops each
// process as SIGTERM does. A worker takes up to 35s (worker.Config's
// ShutdownBound: 20s for its orders in flight, 15s for handlers recording
// or keeping a failure), an API up to 45.2s (apiShutdownWait at the
// longest product timeout, 20s: a restock in flight); 30s, as before,
// killed a worker still recording an order (TestDevWaitsOutItsChildren).
const childStopGrace = 50 * time.Second

// stopChildren sends SIGTERM to every child, waits for them, and kills any
// still running after grace. It returns an error naming each child that
// did not stop cleanly: killed, or ended with a non-zero status.
func stopChildren(procs []*child, grace time.Duration, log *slog.Logger) error {
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	var errs []error
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline.C:
			deadline.Reset(0) // the others get no more time either
			// The deadline and the child's end may both be ready (a child
			// ending right at the deadline, or one whose turn comes after
			// another's deadline), and select picks either: a child that
			// has ended is not killed, nor named killed.
			select {
			case <-p.done:
			default:
				log.Warn("child did not stop in time; killing", "process", p.name, "pid", p.cmd.Process.Pid)
				_ = p.cmd.Process.Kill()
				<-p.done
				// Only the kill's SIGKILL is a kill: a child that exited
				// between the check above and the kill is named by its
				// own end.
				if signaledBy(p.err, syscall.SIGKILL) {
					errs = append(errs, fmt.Errorf("%s did not stop within %v and was killed", p.name, grace))
					continue
				}
			}
		}
		if !stoppedCleanly(p.err) {
			errs = append(errs, fmt.Errorf("%s did not stop cleanly: %w", p.name, p.err))
		}
	}
	return errors.Join(errs...)
}

// stoppedCleanly reports whether a child's Wait error err is a clean stop:
// exit status 0, or an end by the SIGTERM itself, which only a child in
// the first milliseconds of its start gets (before main handles signals),
// with nothing in flight to lose.
func stoppedCleanly(err error) bool {
	return err == nil || signaledBy(err, syscall.SIGTERM)
}

// signaledBy reports whether a child's Wait error err says it was ended
// by signal sig.
func signaledBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// lockedWriter serialises writes from several children.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes each complete line of a child's output to w marked
// with the child's name: a JSON log line gets it as a field ("process"),
// so that it stays a JSON object as dev's own lines are, when json is set;
// any other line gets it as a prefix, "[name] ".
type prefixWriter struct {
	name string
	json bool
	w    io.Writer
	buf  []byte
	mu   sync.Mutex
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		line := p.buf[:i+1]
		p.buf = p.buf[i+1:]
		if err := p.writeLine(line); err != nil {
			return len(b), err
		}
	}
	return len(b), nil
}

// Flush writes what is left of a line that did not end in a newline, as
// a line of its own: called once the child has exited (and its output
// been copied), so that its last words (a panic's end, a message printed
// without a newline) are not dropped with the buffer.
func (p *prefixWriter) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) == 0 {
		return nil
	}
	line := append(p.buf, '\n')
	p.buf = nil
	return p.writeLine(line)
}

// writeLine writes one line (ending in a newline) marked with the name.
// Only a whole JSON object gets the field: one cut short (a child's last
// line, written as it exited or was killed) is no JSON log line, and given
// the field it read as one that no JSON reader can read.
func (p *prefixWriter) writeLine(line []byte) error {
	var out []byte
	if p.json && bytes.HasPrefix(line, []byte(`{"`)) && json.Valid(line) {
		out = append(fmt.Appendf(nil, `{"process":%q,`, p.name), line[1:]...)
	} else {
		out = append([]byte("["+p.name+"] "), line...)
	}
	_, err := p.w.Write(out)
	return err
}
