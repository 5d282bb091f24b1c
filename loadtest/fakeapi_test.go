package loadtest

// This file holds fakeAPI, a small in-memory test double of flashsale's own
// HTTP API (contract v1), used to test the engine's request and phase logic
// without the real server. It doubles our HTTP API only: it has no Redis or
// PostgreSQL behind it, and the real end-to-end test runs against the real
// server.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const fakeToken = "test-token"

type fakeProduct struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Stock        int64  `json:"stock"`
	Sold         int64  `json:"sold"`
	PerUserLimit int    `json:"per_user_limit"`
	bought       map[string]int64
}

type fakeOrder struct {
	ID         string `json:"order_id"`
	ProductID  string `json:"product_id"`
	UserID     string `json:"user_id"`
	Quantity   int    `json:"quantity"`
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	body       string
	done       chan struct{}
	finalReads int // GET /v1/orders/{id} answers with a final status
	reads      int // GET /v1/orders/{id} requests
	ghost      bool
}

// fakeAPI is the shared state behind one or more httptest servers.
type fakeAPI struct {
	// Knobs, set before the first request.
	inline      bool           // process each order before answering 202
	delay       time.Duration  // else: a worker processes each order after delay
	fastPath    bool           // answer 409 sold_out once the product's stock is 0
	noQueue     bool           // GET /v1/queue answers 404 (an older server)
	queue503    int            // the first queue503 GET /v1/queue answer 503
	oversellBug bool           // the worker ignores stock (a planted bug)
	fail500     map[string]int // Idempotency-Key → number of 500s before serving it normally
	ignoreWait  bool           // GET /v1/orders ignores ?wait=
	omitUser    bool           // GET /v1/orders/{id} leaves user_id out of the view
	soldOutLie  int            // the first soldOutLie new orders are answered 409 sold_out, stock or not
	flipAfter   bool           // a succeeded order reads sold_out from its second final GET on
	productAs   string         // GET /v1/products/{id} answers a product of this id instead
	// viewAs: order id → id of the order whose view GET /v1/orders/{id}
	// answers instead (a planted routing or cache bug).
	viewAs map[string]string
	// stall: Idempotency-Key → number of POST /v1/orders that are never
	// answered (nothing is created; the client's request timeout ends them).
	stall map[string]int
	// dupOnRetry: keys whose first POST /v1/orders creates an order, forgets
	// the key and is never answered, so the retry creates a second order (a
	// planted double charge).
	dupOnRetry map[string]bool
	// ghost: keys whose every POST /v1/orders is never answered; the first
	// creates an order (the key is not remembered) that is decided without
	// the per-user limit (a planted bug whose order the client never learns
	// of).
	ghost map[string]bool
	// cut: Idempotency-Key → number of POST /v1/orders answers (of any
	// status, after the request is served as usual) whose body is cut
	// off: the status and the start of the body are sent, then the
	// connection drops.
	cut map[string]int
	// noID: Idempotency-Key → number of 202 answers, after the order is
	// created as usual, whose body carries no order_id (a planted bug).
	noID map[string]int
	// poll500: the first poll500 GET /v1/orders/{id} (of any order)
	// answer 500.
	poll500 int
	// lag404: the first lag404 GET /v1/orders/{id} of each order answer
	// 404 (a replica that has not seen the order yet).
	lag404 int
	// onProductRead, if set, runs at each GET /v1/products/{id} (the
	// verification's reads) before it is answered.
	onProductRead func()

	mu       sync.Mutex
	products map[string]*fakeProduct
	orders   map[string]*fakeOrder
	keys     map[string]string // user + "\x00" + key → order id
	posts    map[string]int    // Idempotency-Key → POST /v1/orders count
	waits    map[string]int    // ?wait= value → count
	seq      int
	work     chan string
	quit     chan struct{}
	wg       sync.WaitGroup
	polls    atomic.Int64
	polled   chan struct{} // closed at the first GET /v1/orders/{id}
	pollOnce sync.Once
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{
		fail500:    map[string]int{},
		stall:      map[string]int{},
		dupOnRetry: map[string]bool{},
		ghost:      map[string]bool{},
		cut:        map[string]int{},
		noID:       map[string]int{},
		products:   map[string]*fakeProduct{},
		orders:     map[string]*fakeOrder{},
		keys:       map[string]string{},
		posts:      map[string]int{},
		waits:      map[string]int{},
		work:       make(chan string, 1<<16),
		quit:       make(chan struct{}),
		polled:     make(chan struct{}),
	}
}

// serve starts n httptest servers in front of f and returns their URLs and
// per-server POST /v1/orders counters. Everything stops at test cleanup.
func (f *fakeAPI) serve(t *testing.T, n int) ([]string, []*atomic.Int64) {
	t.Helper()
	if !f.inline {
		f.wg.Go(f.worker)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/products", f.createProduct)
	mux.HandleFunc("GET /v1/products/{id}", f.getProduct)
	mux.HandleFunc("POST /v1/orders", f.createOrder)
	mux.HandleFunc("GET /v1/orders/{id}", f.getOrder)
	mux.HandleFunc("GET /v1/queue", f.queue)
	var urls []string
	var counts []*atomic.Int64
	for range n {
		c := new(atomic.Int64)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/orders" {
				c.Add(1)
			}
			mux.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
		counts = append(counts, c)
	}
	t.Cleanup(func() {
		close(f.quit)
		f.wg.Wait()
	})
	return urls, counts
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": code}})
}

// fakeAdminRefusal is the message the API answers a wrong admin token with.
const fakeAdminRefusal = "missing or wrong admin token"

func (f *fakeAPI) admin(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+fakeToken {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]string{"code": "unauthorized", "message": fakeAdminRefusal}})
		return false
	}
	return true
}

func (f *fakeAPI) createProduct(w http.ResponseWriter, r *http.Request) {
	if !f.admin(w, r) {
		return
	}
	var p fakeProduct
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p.ID == "" || p.Stock < 0 {
		writeError(w, http.StatusBadRequest, "bad_request")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.products[p.ID]; ok {
		writeError(w, http.StatusConflict, ErrorCodeProductExists)
		return
	}
	p.bought = map[string]int64{}
	f.products[p.ID] = &p
	writeJSON(w, http.StatusCreated, p)
}

func (f *fakeAPI) getProduct(w http.ResponseWriter, r *http.Request) {
	if f.onProductRead != nil {
		f.onProductRead()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.products[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found")
		return
	}
	if f.productAs != "" {
		alias := *p
		alias.ID = f.productAs
		writeJSON(w, http.StatusOK, &alias)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (f *fakeAPI) createOrder(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ProductID string `json:"product_id"`
		UserID    string `json:"user_id"`
		Quantity  int    `json:"quantity"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.UserID == "" || body.Quantity < 1 {
		writeError(w, http.StatusBadRequest, "bad_request")
		return
	}
	key := r.Header.Get("Idempotency-Key")
	canon, _ := json.Marshal(body)

	f.mu.Lock()
	f.posts[key]++
	hang := f.stall[key] > 0
	if hang {
		f.stall[key]--
	} else if _, ok := f.products[body.ProductID]; ok && f.ghost[key] {
		if f.posts[key] == 1 {
			o := f.order(body.ProductID, body.UserID, body.Quantity, string(canon))
			o.ghost = true
			f.place(o)
		}
		hang = true
	} else if _, ok := f.products[body.ProductID]; ok && f.dupOnRetry[key] {
		delete(f.dupOnRetry, key)
		f.newOrder(body.ProductID, body.UserID, body.Quantity, string(canon)) // the key is not remembered
		hang = true
	}
	f.mu.Unlock()
	if hang {
		f.hang(r)
		return
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut[key] > 0 {
		f.cut[key]--
		w = &cutWriter{ResponseWriter: w}
	}
	if f.fail500[key] > 0 {
		f.fail500[key]--
		writeError(w, http.StatusInternalServerError, "internal")
		return
	}
	p, ok := f.products[body.ProductID]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found")
		return
	}
	if key != "" {
		if id, ok := f.keys[body.UserID+"\x00"+key]; ok {
			o := f.orders[id]
			if o.body != string(canon) {
				writeError(w, http.StatusUnprocessableEntity, ErrorCodeIdempotencyMismatch)
				return
			}
			w.Header().Set("Location", "/v1/orders/"+id)
			writeJSON(w, http.StatusAccepted, map[string]string{"order_id": id, "status": o.Status})
			return
		}
	}
	if f.fastPath && p.Stock == 0 {
		writeError(w, http.StatusConflict, ErrorCodeSoldOut)
		return
	}
	if f.soldOutLie > 0 {
		f.soldOutLie--
		writeError(w, http.StatusConflict, ErrorCodeSoldOut)
		return
	}
	o := f.newOrder(body.ProductID, body.UserID, body.Quantity, string(canon))
	if key != "" {
		f.keys[body.UserID+"\x00"+key] = o.ID
	}
	w.Header().Set("Location", "/v1/orders/"+o.ID)
	if f.noID[key] > 0 {
		f.noID[key]--
		writeJSON(w, http.StatusAccepted, map[string]string{"status": StatusQueued})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"order_id": o.ID, "status": StatusQueued})
}

// cutWriter sends the status and the first bytes of the body, then drops
// the connection: the client reads the status, and its body read fails.
type cutWriter struct {
	http.ResponseWriter
}

func (c *cutWriter) WriteHeader(status int) {
	c.Header().Set("Content-Length", "1000")
	c.ResponseWriter.WriteHeader(status)
}

func (c *cutWriter) Write(b []byte) (int, error) {
	_, _ = c.ResponseWriter.Write(b[:min(len(b), 8)])
	_ = http.NewResponseController(c.ResponseWriter).Flush()
	panic(http.ErrAbortHandler) // the connection drops mid-body
}

// newOrder creates an order and processes it inline or queues it. Callers
// hold f.mu.
func (f *fakeAPI) newOrder(productID, userID string, quantity int, canon string) *fakeOrder {
	o := f.order(productID, userID, quantity, canon)
	f.place(o)
	return o
}

// order returns a new queued order. Callers hold f.mu.
func (f *fakeAPI) order(productID, userID string, quantity int, canon string) *fakeOrder {
	f.seq++
	return &fakeOrder{
		ID: "ord-" + strconv.Itoa(f.seq), ProductID: productID, UserID: userID,
		Quantity: quantity, Status: StatusQueued, body: canon, done: make(chan struct{}),
	}
}

// place stores o and processes it inline or queues it. Callers hold f.mu.
func (f *fakeAPI) place(o *fakeOrder) {
	f.orders[o.ID] = o
	if f.inline {
		f.process(o)
	} else {
		f.work <- o.ID
	}
}

// hang never answers r: it waits until the client gives up (its request
// timeout closes the connection) or the fake stops.
func (f *fakeAPI) hang(r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body) // a fully read body lets the server see the client go
	select {
	case <-r.Context().Done():
	case <-f.quit:
	}
}

// process decides one order. Callers hold f.mu.
func (f *fakeAPI) process(o *fakeOrder) {
	p := f.products[o.ProductID]
	q := int64(o.Quantity)
	switch {
	case p.PerUserLimit > 0 && !o.ghost && p.bought[o.UserID]+q > int64(p.PerUserLimit):
		o.Status = StatusLimitExceeded
	case p.Stock >= q || f.oversellBug:
		p.Stock -= q
		p.Sold += q
		p.bought[o.UserID] += q
		o.Status = StatusSucceeded
	default:
		o.Status = StatusSoldOut
	}
	close(o.done)
}

func (f *fakeAPI) worker() {
	for {
		select {
		case <-f.quit:
			return
		case id := <-f.work:
			select {
			case <-time.After(f.delay):
			case <-f.quit:
				return
			}
			f.mu.Lock()
			f.process(f.orders[id])
			f.mu.Unlock()
		}
	}
}

func (f *fakeAPI) getOrder(w http.ResponseWriter, r *http.Request) {
	f.polls.Add(1)
	f.pollOnce.Do(func() { close(f.polled) })
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	f.mu.Lock()
	f.waits[r.URL.Query().Get("wait")]++
	o, ok := f.orders[r.PathValue("id")]
	fail500 := f.poll500 > 0
	if fail500 {
		f.poll500--
	}
	lagging := false
	if ok && !fail500 {
		o.reads++
		lagging = o.reads <= f.lag404
	}
	notYet := false // the order whose view it answers is not there yet
	if otherID, planted := f.viewAs[r.PathValue("id")]; planted && ok {
		if other, there := f.orders[otherID]; there {
			o = other
		} else {
			notYet = true
		}
	}
	f.mu.Unlock()
	if fail500 {
		writeError(w, http.StatusInternalServerError, "internal")
		return
	}
	if !ok || lagging {
		writeError(w, http.StatusNotFound, "not_found")
		return
	}
	if wait > 0 && !f.ignoreWait {
		select {
		case <-o.done:
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		case <-f.quit:
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	status := o.Status
	if notYet {
		status = StatusQueued
	}
	if IsFinal(status) {
		o.finalReads++
		if f.flipAfter && o.finalReads > 1 && status == StatusSucceeded {
			status = StatusSoldOut
		}
	}
	view := map[string]any{
		"order_id": o.ID, "product_id": o.ProductID, "user_id": o.UserID,
		"quantity": o.Quantity, "status": status, "reason": o.Reason,
	}
	if f.omitUser {
		delete(view, "user_id")
	}
	writeJSON(w, http.StatusOK, view)
}

func (f *fakeAPI) queue(w http.ResponseWriter, r *http.Request) {
	if f.noQueue {
		http.NotFound(w, r)
		return
	}
	if !f.admin(w, r) {
		return
	}
	f.mu.Lock()
	down := f.queue503 > 0
	if down {
		f.queue503--
	}
	f.mu.Unlock()
	if down {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]string{"code": "unavailable", "message": "queue unreachable"}})
		return
	}
	n := int64(len(f.work))
	writeJSON(w, http.StatusOK, map[string]any{"queue": "orders", "size": n, "pending": n})
}
