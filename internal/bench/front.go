package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/loadtest"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/sale"
)

// The HTTP front: a floor for an accepted order in a design that takes it
// over HTTP (gin), queues it in asynq one enqueue per order and lets its
// buyer ask for it (a server without gin, or one that batched its enqueues,
// could be cheaper).
// Each order is one POST /v1/orders to a gin server that enqueues it with
// the API's enqueue call ([queue.Producer.Enqueue], as the queue ceiling's
// producers do) and answers 202 with its id, then one GET /v1/orders/{id}
// that the server answers from nothing (no Redis, no PostgreSQL); the
// tasks go to the queue ceiling's no-op consumers. No stock, no lock, no
// transaction, no long poll: what the product adds to an accepted order
// beyond this is the price of its work, and what this costs beyond the
// queue ceiling is the price of HTTP on this machine.

// runFrontServer serves the HTTP front on -addr until SIGTERM.
func runFrontServer(ctx context.Context, fs *flag.FlagSet, args []string, stderr io.Writer) error {
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	redisURL := fs.String("redis-url", "", "queue Redis URL")
	qname := fs.String("queue", "", "asynq queue")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *redisURL == "" || *qname == "" {
		return errors.New("need -redis-url and -queue")
	}
	opt, err := queue.ParseRedisURL(*redisURL, apiRedisPoolSize) // the API's pool
	if err != nil {
		return err
	}
	client := asynq.NewClient(opt)
	defer client.Close()
	prod := queue.NewProducer(client, queue.Options{Queue: *qname})

	gin.SetMode(gin.ReleaseMode) // this process's main: as cmd/flashsale does
	r := gin.New()
	if err := r.SetTrustedProxies(nil); err != nil {
		return err
	}
	r.POST("/v1/orders", func(c *gin.Context) {
		var req lirOrderBody // the same body
		if err := c.ShouldBindJSON(&req); err != nil {
			writeError(c.Writer, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		key := c.GetHeader("Idempotency-Key")
		id := sale.KeyedOrderID(req.UserID, key)
		if err := prod.Enqueue(c, queue.Order{ID: id, ProductID: req.ProductID, UserID: req.UserID,
			Quantity: req.Quantity, IdempotencyKey: key, AcceptedAt: time.Now().UTC()}); err != nil {
			writeError(c.Writer, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		c.Header("Location", "/v1/orders/"+id)
		c.JSON(http.StatusAccepted, gin.H{"order_id": id, "status": "queued"})
	})
	r.GET("/v1/orders/:id", func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"order_id": c.Param("id"), "status": "queued"})
	})
	r.GET("/readyz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ready"}) })
	return serveUntilDone(ctx, *addr, r, stderr, "HTTP front server")
}

// front measures the HTTP front: Workers no-op consumers, APIs front
// servers, and Orders orders sent by this process ([frontLoad]).
func (b *bencher) front(ctx context.Context) (res FrontResult) {
	c := b.cfg
	res = FrontResult{Orders: c.Orders, Servers: c.APIs, Consumers: c.Workers, ConsumerConcurrency: c.WorkerConcurrency,
		Senders: c.Concurrency, Pollers: max(c.Concurrency, loadtest.MinSettleConcurrency)}
	fail := func(err error) FrontResult {
		res.Ran, res.Err = false, err.Error()
		return res
	}
	dir, err := b.begin(ctx, PartFront)
	if err != nil {
		return fail(err)
	}
	const qname = productQueue

	var consumers, servers []*cluster.Proc
	defer func() { stopAll(append(consumers, servers...)) }()
	consumers, err = b.startConsumers(ctx, dir, qname)
	if err != nil {
		return fail(err)
	}
	servers, urls, err := b.startServers(ctx, dir, helperFront, "-redis-url", b.redisURL, "-queue", qname)
	if err != nil {
		return fail(err)
	}
	b.logf("HTTP front: %d consumers and %d servers up; %d orders, %d senders, %d pollers", c.Workers, c.APIs, c.Orders, res.Senders, res.Pollers)

	cpu0, genCPU0 := cpuOf(servers), selfCPU()
	ld, err := frontLoad(ctx, urls, c.Orders, c.Concurrency, c.ScenarioTimeout)
	res.LoadGenCPUSeconds = (selfCPU() - genCPU0).Seconds()
	res.ServerCPUSeconds = (cpuOf(servers) - cpu0).Seconds()
	if err != nil {
		return fail(err)
	}
	res.Accepted, res.Answered, res.Errors, res.Submit = ld.accepted, ld.answered, ld.errors, ld.submit
	if ld.errors > 0 {
		b.logf("HTTP front: %d failed requests, first: %s", ld.errors, ld.firstErr)
	}
	if ld.accepted == 0 {
		return fail(fmt.Errorf("no order was accepted; first error: %s", ld.firstErr))
	}
	for _, p := range servers {
		res.ServerPeakRSS = max(res.ServerPeakRSS, p.PeakRSS())
	}
	if err := exitedEarly(servers); err != nil {
		return fail(err)
	}

	done, err := b.drainConsumers(ctx, dir, qname, consumers)
	if err != nil {
		return fail(err)
	}
	res.Processed, res.ConsumerPeakRSS, res.ConsumerCPUSeconds = done.processed, done.peakRSS, done.cpuSeconds
	if s := time.Duration(ld.lastPost - ld.begin).Seconds(); s > 0 {
		res.SubmittedPerSec = float64(ld.accepted) / s
	}
	res.EndToEndSeconds = time.Duration(max(ld.lastGet, done.lastNS) - ld.begin).Seconds()
	if res.EndToEndSeconds > 0 {
		res.EndToEndPerSec = float64(res.Processed) / res.EndToEndSeconds
	}
	res.Ran = true
	return res
}

// frontLoaded is what frontLoad saw. Times are Unix nanoseconds.
type frontLoaded struct {
	accepted, answered, errors int64
	firstErr                   string
	submit                     loadtest.Latency
	begin, lastPost, lastGet   int64
}

// frontLoad sends n orders round robin over urls as loadtest does:
// concurrency senders each POST /v1/orders (which must be answered 202) and
// hand the order's id to max(concurrency, loadtest.MinSettleConcurrency)
// pollers, each sending a GET of one order at a time (which must be
// answered 200), also round robin. A failed request is counted, not
// retried; each is bounded by loadtest's default request timeout. It
// returns an error only when ctx ends or timeout passes.
func frontLoad(ctx context.Context, urls []string, n, concurrency int, timeout time.Duration) (frontLoaded, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pollers := max(concurrency, loadtest.MinSettleConcurrency)
	hc := &http.Client{
		Timeout:   loadtest.DefaultRequestTimeout,
		Transport: loadtest.NewTransport(concurrency+pollers, len(urls), true),
	}
	defer hc.CloseIdleConnections()
	var (
		out                 frontLoaded
		next, postRR, getRR atomic.Uint64
		accepted, answered  atomic.Int64
		failed              atomic.Int64
		mu                  sync.Mutex
		hist                = hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
		lastPost, lastGet   int64
		firstErr            string
		ids                 = make(chan string, n)
		senders, getters    sync.WaitGroup
		api                 = func(rr *atomic.Uint64) string { return urls[(rr.Add(1)-1)%uint64(len(urls))] }
	)
	fault := func(err error) {
		failed.Add(1)
		mu.Lock()
		if firstErr == "" {
			firstErr = err.Error()
		}
		mu.Unlock()
	}
	// send sends req and reads the answer, which must have status want.
	// answered is false when no status came back.
	send := func(req *http.Request, want int) (body []byte, answered bool, err error) {
		resp, err := hc.Do(req)
		if err != nil {
			return nil, false, err
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != want {
			err = fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, bytes.TrimSpace(body))
		}
		return body, true, err
	}
	out.begin = time.Now().UnixNano()
	for range pollers {
		getters.Go(func() {
			for id := range ids {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, api(&getRR)+"/v1/orders/"+url.PathEscape(id), nil)
				if err == nil {
					_, _, err = send(req, http.StatusOK)
				}
				if err != nil {
					fault(err)
					continue
				}
				answered.Add(1)
				now := time.Now().UnixNano()
				mu.Lock()
				lastGet = max(lastGet, now)
				mu.Unlock()
			}
		})
	}
	for range concurrency {
		senders.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= uint64(n) {
					return
				}
				s := strconv.FormatUint(i, 10)
				body := []byte(`{"product_id":"front-product","user_id":"front-user-` + s + `","quantity":1}`)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, api(&postRR)+"/v1/orders", bytes.NewReader(body))
				if err != nil {
					fault(err)
					continue
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", "front-key-"+s)
				req.GetBody = nil // no silent re-send (see loadtest's client)
				t0 := time.Now()
				answer, got, err := send(req, http.StatusAccepted)
				if got { // as loadtest, the latency of answered requests only
					t1 := time.Now()
					mu.Lock()
					_ = hist.RecordValue(max(t1.Sub(t0).Microseconds(), 1))
					lastPost = max(lastPost, t1.UnixNano())
					mu.Unlock()
				}
				if err != nil {
					fault(err)
					continue
				}
				accepted.Add(1)
				var placed struct {
					OrderID string `json:"order_id"`
				}
				if err := json.Unmarshal(answer, &placed); err != nil || placed.OrderID == "" {
					fault(fmt.Errorf("202 without an order id: %s", answer))
					continue
				}
				ids <- placed.OrderID // never blocks: room for every order
			}
		})
	}
	senders.Wait()
	close(ids)
	getters.Wait()
	if err := ctx.Err(); err != nil {
		return out, fmt.Errorf("HTTP front load: %w", err)
	}
	out.accepted, out.answered, out.errors, out.firstErr = accepted.Load(), answered.Load(), failed.Load(), firstErr
	out.submit, out.lastPost, out.lastGet = loadtest.LatencyOf(hist), lastPost, lastGet
	return out, nil
}
