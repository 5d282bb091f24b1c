package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// ErrUnauthorized is returned (wrapped) by [Run] when the API rejects the
// admin token while creating products.
var ErrUnauthorized = errors.New("loadtest: admin token rejected")

// ErrProductExists is returned (wrapped) by [Run] when a product id of the
// run already exists: the run id was reused.
var ErrProductExists = errors.New("loadtest: product already exists")

// ErrSetup is returned (wrapped, with the API's answer) by [Run] when the
// products could not be created.
var ErrSetup = errors.New("loadtest: creating products failed")

// Latency histograms record microseconds from 1µs to one hour.
const (
	histMin    = 1
	histMax    = int64(time.Hour / time.Microsecond)
	histDigits = 3
)

// maxPollNotFound is how many 404s an accepted order may get before it is
// declared lost (a 202 may briefly race a replica).
const maxPollNotFound = 3

// Run creates the products, submits the orders, settles every accepted order,
// verifies the invariants and returns the report. The Report lists every
// [Violation]; a violation is not an error.
//
// Run returns an error wrapping [ErrInvalidConfig] (nothing sent),
// [ErrUnauthorized], [ErrProductExists] or [ErrSetup] (product creation
// failed; no order sent) with a nil Report. When ctx is cancelled during the
// run, Run stops within about one request timeout and returns the partial,
// unverified Report (Verified false, also written to Config.JSONPath) together
// with an error wrapping ctx.Err(). When Config.JSONPath is set and the JSON file cannot be written,
// Run returns the Report and that error.
//
// Config.Timeout passing is not an error: sending and settling stop, the run
// is verified and reported with an [CodeIncomplete] violation.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := newRunner(cfg)
	defer r.cl.close()

	runCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	r.started = time.Now()
	if err := r.createProducts(runCtx); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("loadtest: interrupted while creating products: %w", ctx.Err())
		}
		return nil, err
	}
	r.created = time.Now()

	// Submit and settle together; sample the queue and show progress
	// meanwhile.
	stopSide := make(chan struct{})
	var side sync.WaitGroup
	if cfg.QueueSampleInterval > 0 {
		side.Go(func() { r.sampleQueue(runCtx, stopSide) })
	}
	if cfg.Progress != nil {
		side.Go(func() { r.showProgress(stopSide) })
	}
	var settlers sync.WaitGroup
	for range cfg.SettleConcurrency {
		settlers.Go(func() { r.settle(runCtx) })
	}
	r.submit(runCtx)
	r.queue.close()
	settlers.Wait()
	r.resendUnknown(runCtx)
	r.settledAt = time.Now()
	if cfg.OnSettled != nil {
		cfg.OnSettled()
	}
	close(stopSide)
	side.Wait()

	interrupted := func() (*Report, error) {
		rep := r.report(analyze(r.observations()), false)
		err := fmt.Errorf("loadtest: interrupted: %w", ctx.Err())
		if cfg.JSONPath != "" {
			err = errors.Join(err, writeJSONFile(cfg.JSONPath, rep))
		}
		return rep, err
	}
	if ctx.Err() != nil {
		return interrupted()
	}

	vctx, vcancel := context.WithTimeout(ctx, cfg.VerifyTimeout)
	defer vcancel()
	r.readProducts(vctx)
	r.rereadOrders(vctx)
	r.verified = time.Now()
	if ctx.Err() != nil {
		// Reads that the interruption cut short are no violations: the run
		// is not verified.
		return interrupted()
	}

	rep := r.report(analyze(r.observations()), true)
	if cfg.JSONPath != "" {
		if err := writeJSONFile(cfg.JSONPath, rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func writeJSONFile(path string, rep *Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("loadtest: write json report: %w", err)
	}
	if err := errors.Join(rep.WriteJSON(f), f.Close()); err != nil {
		return fmt.Errorf("loadtest: write json report %s: %w", path, err)
	}
	return nil
}

// runner holds one run's state. Fields under mu are written by many
// goroutines; the atomics feed the progress display.
type runner struct {
	cfg   Config
	plan  *plan
	cl    *client
	queue idQueue

	started, created, settledAt, verified time.Time

	// aborted is set when the overall timeout stopped sending or settling.
	aborted atomic.Bool

	mu            sync.Mutex
	orders        []OrderObservation
	firstIntended []time.Time // per order: intended time of its first send
	done          []bool      // per order: an outcome was reached (progress)
	finalSeen     []bool      // per order: its final outcome was observed
	owner         map[string]int
	states        map[string]OrderState
	products      []ProductObservation
	serverErrors  []ServerError
	submitStatus  map[string]int64
	pollStatus    map[string]int64
	submitHist    *hdrhistogram.Histogram
	// submitByStatus splits submitHist by the answer's status code: an
	// accepted order (202) and a fast-path refusal (409) cost the system
	// different work, and a tail usually belongs to one of them.
	submitByStatus map[string]*hdrhistogram.Histogram
	finalHist      *hdrhistogram.Histogram
	firstSubmit    time.Time
	lastAnswer     time.Time
	lastFinal      time.Time
	answered       int64
	transportErrs  int64
	retries        int64
	resends        int64
	resending      bool  // the re-sends after settling have begun (see observeFinal)
	resentFinal    int64 // orders first seen final after that
	polls          int64
	rereads        map[string]OrderState // nil until rereadOrders runs
	rereadN        int64                 // its GET /v1/orders/{id} requests
	maxLag         time.Duration
	queueInfo      QueueReport

	// progress counters
	sentN   atomic.Int64
	doneN   atomic.Int64
	acceptN atomic.Int64
	depthN  atomic.Int64 // last queue depth seen, -1 unknown
}

func newRunner(cfg Config) *runner {
	p := newPlan(cfg)
	r := &runner{
		cfg:            cfg,
		plan:           p,
		cl:             newClient(cfg),
		queue:          idQueue{ready: make(chan struct{}, 1)},
		orders:         make([]OrderObservation, len(p.orders)),
		firstIntended:  make([]time.Time, len(p.orders)),
		done:           make([]bool, len(p.orders)),
		finalSeen:      make([]bool, len(p.orders)),
		owner:          make(map[string]int, len(p.orders)),
		states:         make(map[string]OrderState, len(p.orders)),
		submitStatus:   map[string]int64{},
		pollStatus:     map[string]int64{},
		submitHist:     hdrhistogram.New(histMin, histMax, histDigits),
		submitByStatus: map[string]*hdrhistogram.Histogram{},
		finalHist:      hdrhistogram.New(histMin, histMax, histDigits),
	}
	for i, o := range p.orders {
		r.orders[i] = OrderObservation{Key: o.Key, UserID: o.UserID, ProductID: o.ProductID, Quantity: o.Quantity}
	}
	r.depthN.Store(-1)
	return r
}

// record adds one latency to h, clamped into its range. Callers hold r.mu.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := min(max(d.Microseconds(), histMin), histMax)
	_ = h.RecordValue(us) // in range by construction, cannot fail
}

// ---- create ----------------------------------------------------------------

type createBody struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Stock        int64  `json:"stock"`
	PerUserLimit int    `json:"per_user_limit,omitempty"`
}

// createProducts creates every product of the plan, a few at a time, and
// returns the first failure.
func (r *runner) createProducts(ctx context.Context) error {
	r.products = make([]ProductObservation, len(r.plan.products))
	ids := make(chan int)
	errs := make(chan error, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range min(len(r.plan.products), 16) {
		wg.Go(func() {
			for j := range ids {
				if err := r.createProduct(ctx, j); err != nil {
					select {
					case errs <- err:
					default:
					}
					cancel()
				}
			}
		})
	}
feed:
	for j := range r.plan.products {
		select {
		case ids <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(ids)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrSetup, err)
	}
	return nil
}

func (r *runner) createProduct(ctx context.Context, j int) error {
	id := r.plan.products[j]
	body, err := json.Marshal(createBody{
		ID: id, Name: fmt.Sprintf("loadtest %s #%d", r.cfg.RunID, j),
		Stock: r.cfg.Stock, PerUserLimit: r.cfg.PerUserLimit,
	})
	if err != nil {
		return fmt.Errorf("loadtest: encode product: %w", err)
	}
	// A retry goes to the next server (as rereadOrder's do), not to the
	// next of a round robin that other goroutines share: their tries
	// could all land on a dead API.
	api := r.cl.next(&r.cl.adminRR)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			api = r.cl.after(api)
		}
		a := r.cl.createProduct(ctx, api, body)
		r.noteServerError(http.MethodPost, "/v1/products", a)
		switch {
		case a.Status == http.StatusCreated:
			r.products[j] = ProductObservation{ID: id, Stocked: r.cfg.Stock, PerUserLimit: r.cfg.PerUserLimit}
			return nil
		case a.Status == http.StatusConflict && attempt > 0:
			// Our earlier try may have created it. Accept it if untouched.
			if p, ok := r.fetchProduct(ctx, id); ok && p.Stock == r.cfg.Stock && p.Sold == 0 {
				r.products[j] = ProductObservation{ID: id, Stocked: r.cfg.Stock, PerUserLimit: r.cfg.PerUserLimit}
				return nil
			}
			return fmt.Errorf("%w: %s", ErrProductExists, id)
		case a.Status == http.StatusConflict:
			return fmt.Errorf("%w: %s (run id %q reused?)", ErrProductExists, id, r.cfg.RunID)
		case a.Status == http.StatusUnauthorized || a.Status == http.StatusForbidden:
			return fmt.Errorf("%w: POST /v1/products answered %s", ErrUnauthorized, a.explain())
		case (a.Status == 0 || a.Status >= 500) && attempt < r.cfg.MaxRetries && ctx.Err() == nil:
			if !sleep(ctx, backoff(attempt, a.RetryAfter)) {
				return ctx.Err()
			}
		case a.Status == 0:
			return fmt.Errorf("%w: product %s: %w", ErrSetup, id, a.Err)
		default:
			return fmt.Errorf("%w: product %s: POST /v1/products answered %s", ErrSetup, id, a.explain())
		}
	}
}

// fetchProduct reads one product, retrying connection errors and 5xx.
func (r *runner) fetchProduct(ctx context.Context, id string) (Product, bool) {
	p, _ := r.readProduct(ctx, id)
	return p, p.ID != ""
}

func (r *runner) readProduct(ctx context.Context, id string) (Product, string) {
	api := r.cl.next(&r.cl.adminRR)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			api = r.cl.after(api) // see createProduct
		}
		a := r.cl.getProduct(ctx, api, id)
		r.noteServerError(http.MethodGet, "/v1/products/{id}", a)
		switch {
		case a.Status == http.StatusOK:
			var p Product
			if err := json.Unmarshal(a.Body, &p); err != nil {
				return Product{}, fmt.Sprintf("GET /v1/products/%s: unreadable body: %v", id, err)
			}
			if p.ID != id {
				// Another product's figures (a routing or cache bug, or a
				// body without its id) must not be judged as this one's.
				return Product{}, fmt.Sprintf("GET /v1/products/%s answered product %q", id, p.ID)
			}
			return p, ""
		case (a.Status == 0 || a.Status >= 500) && attempt < r.cfg.MaxRetries && ctx.Err() == nil:
			if !sleep(ctx, backoff(attempt, a.RetryAfter)) {
				return Product{}, ctx.Err().Error()
			}
		case a.Status == 0:
			return Product{}, fmt.Sprintf("GET /v1/products/%s: %v", id, a.Err)
		default:
			return Product{}, fmt.Sprintf("GET /v1/products/%s answered %d %s", id, a.Status, a.ErrorCode)
		}
	}
}

// readProducts reads every product back for verification.
func (r *runner) readProducts(ctx context.Context) {
	ids := make(chan int)
	var wg sync.WaitGroup
	for range min(len(r.products), 16) {
		wg.Go(func() {
			for j := range ids {
				p, why := r.readProduct(ctx, r.products[j].ID)
				r.mu.Lock()
				if why == "" {
					r.products[j].Final = &p
				} else {
					r.products[j].ReadError = why
				}
				r.mu.Unlock()
			}
		})
	}
	for j := range r.products {
		ids <- j
	}
	close(ids)
	wg.Wait()
}

// rereadOrders reads every order that settled final once more, without
// waiting, with at most SettleConcurrency requests in flight: a final order
// must not change, and settling stopped at the first final answer. These
// reads belong to the verify phase: they are not polls and observe no final
// outcome.
func (r *runner) rereadOrders(ctx context.Context) {
	r.mu.Lock()
	var ids []string
	for id, st := range r.states {
		if IsFinal(st.Status) {
			ids = append(ids, id)
		}
	}
	r.rereads = make(map[string]OrderState, len(ids))
	r.mu.Unlock()
	each(ids, r.cfg.SettleConcurrency, func(id string) {
		st := r.rereadOrder(ctx, id)
		r.mu.Lock()
		r.rereads[id] = st
		r.mu.Unlock()
	})
}

// each calls f for every item, from at most workers goroutines at once, and
// returns when every call has.
func each[T any](items []T, workers int, f func(T)) {
	work := make(chan T)
	var wg sync.WaitGroup
	for range min(len(items), workers) {
		wg.Go(func() {
			for it := range work {
				f(it)
			}
		})
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	wg.Wait()
}

// rereadOrder reads one order, retrying connection errors and 5xx on the
// next server.
func (r *runner) rereadOrder(ctx context.Context, id string) OrderState {
	api := r.cl.next(&r.cl.pollRR)
	for attempt := 0; ; attempt++ {
		a := r.cl.getOrder(ctx, api, id, 0)
		r.mu.Lock()
		r.rereadN++
		r.mu.Unlock()
		r.noteServerError(http.MethodGet, "/v1/orders/{id}", a)
		switch {
		case a.Status == http.StatusOK:
			var v orderView
			if err := json.Unmarshal(a.Body, &v); err != nil {
				return OrderState{OrderID: id, Err: "unreadable order body: " + err.Error()}
			}
			return v.state(id)
		case a.Status == http.StatusNotFound:
			return OrderState{OrderID: id, NotFound: true}
		case (a.Status == 0 || a.Status >= 500) && attempt < r.cfg.MaxRetries && ctx.Err() == nil:
			api = r.cl.after(api)
			if !sleep(ctx, backoff(attempt, a.RetryAfter)) {
				return OrderState{OrderID: id, Err: ctx.Err().Error()}
			}
		case a.Status == 0:
			return OrderState{OrderID: id, Err: fmt.Sprintf("GET /v1/orders/%s: %v", id, a.Err)}
		default:
			return OrderState{OrderID: id, Err: fmt.Sprintf("GET /v1/orders/%s answered %d %s", id, a.Status, a.ErrorCode)}
		}
	}
}

// noteServerError keeps a 5xx answer of an endpoint other than POST /v1/orders.
func (r *runner) noteServerError(method, path string, a answer) {
	if a.Status < 500 {
		return
	}
	r.mu.Lock()
	r.serverErrors = append(r.serverErrors, ServerError{Method: method, Path: path, Status: a.Status, Code: a.ErrorCode})
	r.mu.Unlock()
}

// ---- submit ----------------------------------------------------------------

type orderBody struct {
	ProductID string `json:"product_id"`
	UserID    string `json:"user_id"`
	Quantity  int    `json:"quantity"`
}

type acceptedBody struct {
	OrderID string `json:"order_id"`
	Status  string `json:"status"`
}

// submit sends every job with Concurrency workers: as fast as they can in a
// closed burst, or each job at its intended time with Rate set.
func (r *runner) submit(ctx context.Context) {
	jobs := r.plan.jobs
	var next atomic.Int64
	t0 := time.Now()
	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(len(jobs)) {
					return
				}
				intended := time.Now()
				if r.cfg.Rate > 0 {
					intended = t0.Add(time.Duration(float64(k) / r.cfg.Rate * float64(time.Second)))
					if !sleep(ctx, time.Until(intended)) {
						r.aborted.Store(true)
						return
					}
				}
				if ctx.Err() != nil {
					r.aborted.Store(true)
					return
				}
				r.send(ctx, jobs[k], intended)
			}
		})
	}
	wg.Wait()
}

// bodyOf is the POST /v1/orders body of order i: the same bytes on every
// send, re-sends included.
func (r *runner) bodyOf(i int) ([]byte, error) {
	o := r.plan.orders[i]
	return json.Marshal(orderBody{ProductID: o.ProductID, UserID: o.UserID, Quantity: o.Quantity})
}

// sendKind says what an answer to POST /v1/orders was the answer to.
type sendKind int

const (
	sendRetrying sendKind = iota // a send of a job that is retried next
	sendLast                     // a job's last send
	sendResend                   // the re-send after settling (see resendUnknown)
)

// send sends one job, re-sending it with the same Idempotency-Key after a
// connection error or a 5xx, at most MaxRetries times.
func (r *runner) send(ctx context.Context, j job, intended time.Time) {
	o := r.plan.orders[j.order]
	body, err := r.bodyOf(j.order)
	start := time.Now()
	r.mu.Lock()
	if r.firstSubmit.IsZero() {
		r.firstSubmit = start
	}
	if r.firstIntended[j.order].IsZero() {
		r.firstIntended[j.order] = intended
	}
	if fs := r.orders[j.order].FirstSent; fs.IsZero() || start.Before(fs) {
		r.orders[j.order].FirstSent = start // the earliest start of any send of the key
	}
	r.maxLag = max(r.maxLag, start.Sub(intended))
	r.mu.Unlock()
	r.sentN.Add(1)
	if err != nil { // cannot happen for these field types
		r.recordSubmit(j.order, answer{Err: fmt.Errorf("encode order: %w", err)}, intended, sendLast)
		return
	}

	api := r.cl.next(&r.cl.submitRR)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			api = r.cl.after(api)
		}
		a := unread(r.cl.postOrder(ctx, api, o.Key, body))
		retry := (a.Status == 0 || a.Status >= 500) && attempt < r.cfg.MaxRetries && ctx.Err() == nil
		kind := sendLast
		if retry {
			kind = sendRetrying
		}
		r.recordSubmit(j.order, a, intended, kind)
		if !retry {
			return
		}
		r.mu.Lock()
		r.retries++
		r.mu.Unlock()
		if !sleep(ctx, backoff(attempt, a.RetryAfter)) {
			return
		}
	}
}

// resendUnknown re-sends, once (to the next API if one gives no answer),
// every key whose fate is unknown after
// settling (see fateUnknown: each send got no answer, a 5xx or a 202
// without an order id, so the server may have created the order), with the same Idempotency-Key and body. An
// idempotent server answers with the order it created, or creates it now;
// either way the order is then settled like any other. Without this, the
// units of such keys widen the range Verify accepts for sold, and a double
// charge elsewhere could hide in it.
func (r *runner) resendUnknown(ctx context.Context) {
	r.mu.Lock()
	r.resending = true
	var unknown []int
	for i, o := range r.orders {
		if fateUnknown(o) {
			unknown = append(unknown, i)
		}
	}
	r.mu.Unlock()
	each(unknown, r.cfg.Concurrency, func(i int) { r.resendOne(ctx, i) })
}

// resendOne re-sends order i once and settles the order it is answered with.
func (r *runner) resendOne(ctx context.Context, i int) {
	if ctx.Err() != nil {
		r.aborted.Store(true)
		return
	}
	body, err := r.bodyOf(i)
	if err != nil { // cannot happen for these field types
		return
	}
	// To each API in turn until one answers, as a client behind a load
	// balancer would: a key still unanswered then is a violation
	// (CodeOrderUnanswered), which an API that is down must not make.
	r.mu.Lock()
	r.resends++ // keys, not sends
	r.mu.Unlock()
	api := r.cl.next(&r.cl.submitRR)
	for range r.cl.apis {
		a := unread(r.cl.postOrder(ctx, api, r.plan.orders[i].Key, body))
		if ctx.Err() != nil {
			// The overall timeout cut the re-send (or passed as it was
			// answered): the key may stay of unknown fate because of it,
			// and nothing else would notice that the run was cut here.
			r.aborted.Store(true)
		}
		if id := r.recordSubmit(i, a, time.Time{}, sendResend); id != "" {
			r.settleOne(ctx, id)
		}
		if a.Status != 0 || ctx.Err() != nil {
			return
		}
		api = r.cl.after(api)
	}
}

// unread makes an answer to POST /v1/orders whose body could not be read
// (the connection broke, or the request timed out, after the status came)
// no answer: the buyer learned neither a 202's order id nor a 4xx's code,
// so the send is retried, and its key re-sent after settling, as after a
// connection error. A 5xx keeps its status: the server failed whatever its
// body said.
func unread(a answer) answer {
	if a.Status != 0 && a.Status < 500 && a.Err != nil {
		a.Err = fmt.Errorf("answered %d, but its body could not be read: %w", a.Status, a.Err)
		a.Status, a.Body, a.ErrorCode, a.ErrorMessage = 0, nil, "", ""
	}
	return a
}

// recordSubmit keeps one answer to POST /v1/orders. The answer to a re-send
// after settling is kept with the order's answers (Verify judges it) but is
// left out of the submit counts and latencies; recordSubmit returns the
// order id it accepted when that id is new, for the caller to settle.
func (r *runner) recordSubmit(i int, a answer, intended time.Time, kind sendKind) (newID string) {
	last := kind != sendRetrying
	now := time.Now()
	resp := SubmitResponse{Status: a.Status, ErrorCode: a.ErrorCode, At: now}
	if a.Err != nil {
		resp.Err = a.Err.Error()
	}
	if a.Status == http.StatusAccepted {
		var b acceptedBody
		if err := json.Unmarshal(a.Body, &b); err != nil {
			resp.Err = "unreadable 202 body: " + err.Error()
		}
		resp.OrderID, resp.OrderStatus = b.OrderID, b.Status
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.orders[i].Responses = append(r.orders[i].Responses, resp)
	if kind == sendResend {
		switch {
		case a.Status == http.StatusAccepted && resp.OrderID != "":
			if _, seen := r.owner[resp.OrderID]; !seen {
				r.owner[resp.OrderID] = i
				r.acceptN.Add(1)
				return resp.OrderID
			}
		case a.Status == http.StatusConflict && a.ErrorCode == ErrorCodeSoldOut:
			r.observeFinal(i, now)
		}
		return ""
	}
	r.submitStatus[statusKey(a.Status)]++
	if a.Status == 0 {
		r.transportErrs++
	} else {
		r.answered++
		// Callers take now before r.mu: the latest time wins, not the
		// last caller to get the lock.
		if now.After(r.lastAnswer) {
			r.lastAnswer = now
		}
		if last {
			record(r.submitHist, now.Sub(intended))
			k := statusKey(a.Status)
			h := r.submitByStatus[k]
			if h == nil {
				h = hdrhistogram.New(histMin, histMax, histDigits)
				r.submitByStatus[k] = h
			}
			record(h, now.Sub(intended))
		}
	}
	switch {
	case a.Status == http.StatusAccepted && resp.OrderID != "":
		if _, seen := r.owner[resp.OrderID]; !seen {
			r.owner[resp.OrderID] = i
			r.acceptN.Add(1)
			r.queue.push(resp.OrderID)
		}
	case a.Status == http.StatusConflict && a.ErrorCode == ErrorCodeSoldOut:
		// The fast path: a final outcome without an order id.
		r.observeFinal(i, now)
	case last && a.Status != http.StatusAccepted:
		r.markDone(i) // rejected
	}
	return ""
}

// observeFinal notes that order i's final outcome was seen at now: once per
// order, whatever the number of answers or order ids. Callers hold r.mu.
//
// An order first seen final through the re-send after settling counts as
// an outcome, but not in the settle phase, the settled rate or the final
// latencies: its time is that of a lost request's timeouts, not of the
// system under load.
func (r *runner) observeFinal(i int, now time.Time) {
	if r.finalSeen[i] {
		return
	}
	r.finalSeen[i] = true
	if r.resending {
		r.resentFinal++
	} else {
		if now.After(r.lastFinal) { // see lastAnswer: callers take now before r.mu
			r.lastFinal = now
		}
		record(r.finalHist, now.Sub(r.firstIntended[i]))
	}
	r.markDone(i)
}

// markDone counts order i's first outcome for the progress display. Callers
// hold r.mu.
func (r *runner) markDone(i int) {
	if !r.done[i] {
		r.done[i] = true
		r.doneN.Add(1)
	}
}

// ---- settle ----------------------------------------------------------------

type orderView struct {
	OrderID   string    `json:"order_id"`
	ProductID string    `json:"product_id"`
	UserID    string    `json:"user_id"`
	Quantity  int       `json:"quantity"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason"`
	UpdatedAt time.Time `json:"updated_at"`
}

// state is the OrderState that v, read for order id, reads as: with the
// order id the view carries (Verify checks it is id).
func (v orderView) state(id string) OrderState {
	return OrderState{OrderID: v.OrderID, ProductID: v.ProductID, UserID: v.UserID, Quantity: v.Quantity,
		Status: v.Status, Reason: v.Reason, UpdatedAt: v.UpdatedAt}
}

// settle long-polls accepted orders until the queue is closed and empty.
func (r *runner) settle(ctx context.Context) {
	for {
		id, ok := r.queue.pop(ctx)
		if !ok {
			if ctx.Err() != nil {
				r.aborted.Store(true)
			}
			return
		}
		r.settleOne(ctx, id)
	}
}

// settleOne polls one order until it is final, unknown to the API, has a
// status outside the contract, or polling fails MaxRetries+3 times in a row.
func (r *runner) settleOne(ctx context.Context, id string) {
	st := OrderState{OrderID: id}
	failures, notFound := 0, 0
	maxFailures := r.cfg.MaxRetries + 3
	save := func() {
		r.mu.Lock()
		r.states[id] = st
		r.mu.Unlock()
	}
	api := ""
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			st.Err = "stopped by the overall timeout"
			r.aborted.Store(true)
			save()
			return
		}
		sent := time.Now()
		if api == "" {
			api = r.cl.next(&r.cl.pollRR)
		}
		a := r.cl.getOrder(ctx, api, id, r.cfg.PollWait)
		if a.Status == 0 || a.Status >= 500 {
			api = r.cl.after(api) // the next poll tries another server
		} else {
			api = ""
		}
		now := time.Now()
		r.mu.Lock()
		r.polls++
		r.pollStatus[statusKey(a.Status)]++
		r.mu.Unlock()
		r.noteServerError(http.MethodGet, "/v1/orders/{id}", a)

		var pause time.Duration
		switch {
		case a.Status == http.StatusOK:
			var v orderView
			if err := json.Unmarshal(a.Body, &v); err != nil {
				failures++
				st.Err = "unreadable order body: " + err.Error()
				pause = backoff(failures, 0)
				break
			}
			failures, notFound = 0, 0
			st = v.state(id)
			if IsFinal(v.Status) {
				r.mu.Lock()
				r.states[id] = st
				if i, ok := r.owner[id]; ok {
					r.observeFinal(i, now)
				}
				r.mu.Unlock()
				return
			}
			if !isKnownStatus(v.Status) {
				save()
				return
			}
			// Not final yet. A server that ignores ?wait= answers at once:
			// do not spin on it.
			if now.Sub(sent) < r.cfg.PollWait/2 {
				pause = backoff(attempt, 0)
			}
		case a.Status == http.StatusNotFound:
			notFound++
			if notFound > maxPollNotFound {
				st.NotFound = true
				save()
				return
			}
			pause = backoff(notFound+1, 0)
		default:
			failures++
			if a.Err != nil {
				st.Err = a.Err.Error()
			} else {
				st.Err = fmt.Sprintf("GET /v1/orders/%s answered %d %s", id, a.Status, a.ErrorCode)
			}
			if failures > maxFailures {
				st.Err = "polling gave up: " + st.Err
				save()
				return
			}
			pause = backoff(failures, a.RetryAfter)
		}
		if !sleep(ctx, pause) {
			continue // the top of the loop records the stop
		}
	}
}

// idQueue is an unbounded FIFO of order ids to settle.
type idQueue struct {
	mu     sync.Mutex
	items  []string
	closed bool
	ready  chan struct{} // capacity 1: items or closed
}

func (q *idQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *idQueue) push(id string) {
	q.mu.Lock()
	q.items = append(q.items, id)
	q.mu.Unlock()
	q.signal()
}

func (q *idQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// pop returns the next id; false once the queue is closed and empty or ctx
// is done.
func (q *idQueue) pop(ctx context.Context) (string, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			id := q.items[0]
			q.items = q.items[1:]
			more := len(q.items) > 0 || q.closed
			q.mu.Unlock()
			if more {
				q.signal() // wake the next waiter
			}
			return id, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			q.signal()
			return "", false
		}
		select {
		case <-q.ready:
		case <-ctx.Done():
			return "", false
		}
	}
}

// ---- queue depth -------------------------------------------------------------

type queueView struct {
	Queue     string `json:"queue"`
	Size      int64  `json:"size"`
	Pending   int64  `json:"pending"`
	Active    int64  `json:"active"`
	Scheduled int64  `json:"scheduled"`
	Retry     int64  `json:"retry"`
	Archived  int64  `json:"archived"`
	Completed int64  `json:"completed"`
}

// sampleQueue samples GET /v1/queue until stop is closed. A 404 (an older
// server), a 401/403 or repeated failures end sampling; depth is then
// reported as unavailable with the reason.
func (r *runner) sampleQueue(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(r.cfg.QueueSampleInterval)
	defer t.Stop()
	failures := 0
	for {
		a := r.cl.getQueue(ctx, r.cl.next(&r.cl.adminRR))
		now := time.Now()
		var v queueView
		switch {
		case a.Status == http.StatusOK && json.Unmarshal(a.Body, &v) == nil:
			failures = 0
			s := QueueSample{
				AtSeconds: now.Sub(r.started).Seconds(), Size: v.Size, Pending: v.Pending, Active: v.Active,
				Scheduled: v.Scheduled, Retry: v.Retry, Archived: v.Archived, Completed: v.Completed,
				Depth: v.Pending + v.Active + v.Scheduled + v.Retry,
			}
			r.depthN.Store(s.Depth)
			r.mu.Lock()
			r.queueInfo.Available = true
			r.queueInfo.Name = v.Queue
			r.queueInfo.Samples = append(r.queueInfo.Samples, s)
			r.queueInfo.MaxDepth = max(r.queueInfo.MaxDepth, s.Depth)
			r.mu.Unlock()
		case a.Status == http.StatusNotFound || a.Status == http.StatusUnauthorized || a.Status == http.StatusForbidden:
			r.mu.Lock()
			r.queueInfo.Unavailable = fmt.Sprintf("GET /v1/queue answered %s", a.explain())
			r.mu.Unlock()
			return
		default:
			if ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			r.queueInfo.Missed++
			r.queueInfo.LastMiss = a.describe()
			r.mu.Unlock()
			failures++
			if failures >= 5 {
				r.mu.Lock()
				r.queueInfo.Unavailable = fmt.Sprintf("GET /v1/queue failed %d times in a row (last: %d %v)", failures, a.Status, a.Err)
				r.mu.Unlock()
				return
			}
		}
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ---- collecting --------------------------------------------------------------

// observations returns a copy of what the run collected, for Verify.
func (r *runner) observations() Observations {
	r.mu.Lock()
	defer r.mu.Unlock()
	obs := Observations{
		Products:     append([]ProductObservation(nil), r.products...),
		Orders:       make([]OrderObservation, len(r.orders)),
		States:       make(map[string]OrderState, len(r.states)),
		ServerErrors: append([]ServerError(nil), r.serverErrors...),
	}
	for i, o := range r.orders {
		o.Responses = append([]SubmitResponse(nil), o.Responses...)
		obs.Orders[i] = o
	}
	for k, v := range r.states {
		obs.States[k] = v
	}
	if r.rereads != nil {
		obs.Rereads = maps.Clone(r.rereads)
	}
	if r.aborted.Load() {
		obs.Incomplete = fmt.Sprintf("the overall timeout of %v passed before every order was sent and settled", r.cfg.Timeout)
	}
	return obs
}
