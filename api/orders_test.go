package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/api"
	"github.com/flashsale/flashsale/api/apitest"
	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/ratelimit"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

type placed struct {
	OrderID string `json:"order_id"`
	Status  string `json:"status"`
}

type orderBody struct {
	OrderID   string    `json:"order_id"`
	ProductID string    `json:"product_id"`
	UserID    string    `json:"user_id"`
	Quantity  int       `json:"quantity"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// wantError checks an error answer's status and code.
func wantError(t *testing.T, r *apitest.Response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	if got := r.ErrorCode(t); got != code {
		t.Fatalf("error code = %q, want %q; body %s", got, code, r.Body)
	}
}

// wantPlaced checks a 202 answer and returns its order.
func wantPlaced(t *testing.T, r *apitest.Response) placed {
	t.Helper()
	if r.Status != http.StatusAccepted {
		t.Fatalf("status = %d, want 202; body %s", r.Status, r.Body)
	}
	var p placed
	r.JSON(t, &p)
	if !sale.ValidOrderID(p.OrderID) || p.Status == "" {
		t.Fatalf("body = %s; want an order id and a status", r.Body)
	}
	if got, want := r.Header.Get("Location"), "/v1/orders/"+p.OrderID; got != want {
		t.Fatalf("Location = %q, want %q", got, want)
	}
	return p
}

func TestPlaceOrderContract(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	e.CreateProduct(t, "p1", 1000, 0)
	e.CreateProduct(t, "gone", 0, 0)
	e.MarkSoldOut(t, "gone")

	big := `{"product_id":"p1","user_id":"u1","quantity":1,"pad":"` + strings.Repeat("x", api.DefaultBodyLimit) + `"}`
	tests := []struct {
		name   string
		body   string
		header []string
		status int
		code   string // "" for 202
	}{
		{"valid", `{"product_id":"p1","user_id":"u1","quantity":1}`, nil, 202, ""},
		{"max quantity", `{"product_id":"p1","user_id":"u1","quantity":100}`, nil, 202, ""},
		{"white space around", " \n\t{\"product_id\":\"p1\",\"user_id\":\"u1\",\"quantity\":1}\r\n ", nil, 202, ""},
		{"fields in any order", `{"quantity":1,"user_id":"u1","product_id":"p1"}`, nil, 202, ""},
		{"JSON content type", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Type", "application/json; charset=UTF-8"}, 202, ""},
		{"curl -d content type", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 202, ""},
		{"fetch content type", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Type", "text/plain;charset=UTF-8"}, 202, ""},
		{"vendor JSON type", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Type", "application/vnd.flashsale+json"}, 202, ""},
		{"identity encoding", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Encoding", "Identity"}, 202, ""},

		{"empty body", ``, nil, 400, "invalid_request"},
		{"white space only", "  \n", nil, 400, "invalid_request"},
		{"invalid JSON", `{"product_id":"p1",`, nil, 400, "invalid_request"},
		{"trailing comma", `{"product_id":"p1","user_id":"u1","quantity":1,}`, nil, 400, "invalid_request"},
		{"single quotes", `{'product_id':'p1'}`, nil, 400, "invalid_request"},
		{"null", `null`, nil, 400, "invalid_request"},
		{"array", `[{"product_id":"p1","user_id":"u1","quantity":1}]`, nil, 400, "invalid_request"},
		{"string", `"p1"`, nil, 400, "invalid_request"},
		{"number", `1`, nil, 400, "invalid_request"},
		{"unknown field", `{"product_id":"p1","user_id":"u1","quantity":1,"price":0}`, nil, 400, "invalid_request"},
		{"field in another case", `{"Product_ID":"p1","user_id":"u1","quantity":1}`, nil, 400, "invalid_request"},
		{"duplicate field", `{"product_id":"p1","user_id":"u1","quantity":1,"quantity":100}`, nil, 400, "invalid_request"},
		{"duplicate field in another case", `{"product_id":"p1","user_id":"u1","quantity":1,"QUANTITY":100}`, nil, 400, "invalid_request"},
		{"trailing data", `{"product_id":"p1","user_id":"u1","quantity":1} x`, nil, 400, "invalid_request"},
		{"two objects", `{"product_id":"p1","user_id":"u1","quantity":1}{}`, nil, 400, "invalid_request"},
		{"trailing brace", `{"product_id":"p1","user_id":"u1","quantity":1}}`, nil, 400, "invalid_request"},
		{"byte order mark", "\ufeff{\"product_id\":\"p1\",\"user_id\":\"u1\",\"quantity\":1}", nil, 400, "invalid_request"},
		{"not UTF-8", "{\"product_id\":\"p1\",\"user_id\":\"u\xff\",\"quantity\":1}", nil, 400, "invalid_request"},
		{"not UTF-8 in an unknown field", "{\"product_id\":\"p1\",\"user_id\":\"u1\",\"quantity\":1,\"\xc3\":1}", nil, 400, "invalid_request"},
		{"quantity as string", `{"product_id":"p1","user_id":"u1","quantity":"1"}`, nil, 400, "invalid_request"},
		{"quantity fraction", `{"product_id":"p1","user_id":"u1","quantity":1.5}`, nil, 400, "invalid_request"},
		{"quantity 1.0", `{"product_id":"p1","user_id":"u1","quantity":1.0}`, nil, 400, "invalid_request"},
		{"quantity exponent", `{"product_id":"p1","user_id":"u1","quantity":1e1}`, nil, 400, "invalid_request"},
		{"quantity huge", `{"product_id":"p1","user_id":"u1","quantity":99999999999999999999999}`, nil, 400, "invalid_request"},
		{"quantity huge exponent", `{"product_id":"p1","user_id":"u1","quantity":1e400}`, nil, 400, "invalid_request"},
		{"quantity bool", `{"product_id":"p1","user_id":"u1","quantity":true}`, nil, 400, "invalid_request"},
		{"quantity object", `{"product_id":"p1","user_id":"u1","quantity":{"n":1}}`, nil, 400, "invalid_request"},
		{"quantity 0", `{"product_id":"p1","user_id":"u1","quantity":0}`, nil, 400, "invalid_request"},
		{"quantity -0", `{"product_id":"p1","user_id":"u1","quantity":-0}`, nil, 400, "invalid_request"},
		{"quantity negative", `{"product_id":"p1","user_id":"u1","quantity":-1}`, nil, 400, "invalid_request"},
		{"quantity above max", `{"product_id":"p1","user_id":"u1","quantity":101}`, nil, 400, "invalid_request"},
		{"quantity null", `{"product_id":"p1","user_id":"u1","quantity":null}`, nil, 400, "invalid_request"},
		{"product id as number", `{"product_id":1,"user_id":"u1","quantity":1}`, nil, 400, "invalid_request"},
		{"user id as array", `{"product_id":"p1","user_id":["u1"],"quantity":1}`, nil, 400, "invalid_request"},
		{"missing quantity", `{"product_id":"p1","user_id":"u1"}`, nil, 400, "invalid_request"},
		{"missing user", `{"product_id":"p1","quantity":1}`, nil, 400, "invalid_request"},
		{"missing product", `{"user_id":"u1","quantity":1}`, nil, 400, "invalid_request"},
		{"empty object", `{}`, nil, 400, "invalid_request"},
		{"empty user id", `{"product_id":"p1","user_id":"","quantity":1}`, nil, 400, "invalid_request"},
		{"user id too long", `{"product_id":"p1","user_id":"` + strings.Repeat("u", 65) + `","quantity":1}`, nil, 400, "invalid_request"},
		{"user id with a slash", `{"product_id":"p1","user_id":"a/b","quantity":1}`, nil, 400, "invalid_request"},
		{"user id with NUL", `{"product_id":"p1","user_id":"u\u0000","quantity":1}`, nil, 400, "invalid_request"},
		{"user id unicode", `{"product_id":"p1","user_id":"ü","quantity":1}`, nil, 400, "invalid_request"},
		{"product id with a space", `{"product_id":"p 1","user_id":"u1","quantity":1}`, nil, 400, "invalid_request"},
		{"key with a space", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Idempotency-Key", "a b"}, 400, "invalid_request"},
		{"key too long", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "invalid_request"},
		{"key not ASCII", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Idempotency-Key", "clé"}, 400, "invalid_request"},

		{"unknown product", `{"product_id":"nope","user_id":"u1","quantity":1}`, nil, 404, "product_not_found"},
		{"longest product id, unknown", `{"product_id":"` + strings.Repeat("p", 64) + `","user_id":"u1","quantity":1}`, nil, 404, "product_not_found"},
		{"sold out", `{"product_id":"gone","user_id":"u1","quantity":1}`, nil, 409, "sold_out"},
		{"too large", big, nil, 413, "payload_too_large"},

		{"XML", `<order/>`, []string{"Content-Type", "application/xml"}, 415, "unsupported_media_type"},
		{"JSON body declared as XML", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Type", "text/xml"}, 415, "unsupported_media_type"},
		{"multipart", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Type", "multipart/form-data; boundary=x"}, 415, "unsupported_media_type"},
		{"latin-1", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Type", "application/json; charset=iso-8859-1"}, 415, "unsupported_media_type"},
		{"bad content type", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Type", "application/json; charset"}, 415, "unsupported_media_type"},
		{"gzip", `{"product_id":"p1","user_id":"u1","quantity":1}`, []string{"Content-Encoding", "gzip"}, 415, "unsupported_media_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.Do(t, "POST", "/v1/orders", tt.body, tt.header...)
			if tt.code == "" {
				if got := wantPlaced(t, r); got.Status != "queued" {
					t.Fatalf("status = %q, want queued", got.Status)
				}
				return
			}
			wantError(t, r, tt.status, tt.code)
		})
	}
}

func TestTooLargeBodies(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	e.CreateProduct(t, "p1", 1000, 0)
	valid := `{"product_id":"p1","user_id":"u1","quantity":1}`
	padded := func(n int) string { // a valid order of n bytes
		return `{"product_id":"p1","user_id":"u1","quantity":1` + strings.Repeat(" ", n-len(valid)) + `}`
	}
	if r := e.Do(t, "POST", "/v1/orders", padded(api.DefaultBodyLimit)); r.Status != 202 {
		t.Fatalf("a body of exactly the limit: status %d, want 202; %s", r.Status, r.Body)
	}
	tests := []struct {
		name          string
		body          string
		contentLength int64 // -1 = unknown (chunked)
	}{
		{"declared length", padded(api.DefaultBodyLimit + 1), int64(api.DefaultBodyLimit + 1)},
		{"chunked", padded(api.DefaultBodyLimit + 1), -1},
		{"chunked, much larger", padded(1 << 20), -1},
		// A client that declares a small length and sends more is cut at
		// the declared length by net/http; one that declares a large
		// length is refused before anything is read.
		{"declared huge, sent small", valid, 1 << 30},
		// One byte over is refused on the declared length alone, before
		// anything is read.
		{"declared one over the limit, sent small", valid, api.DefaultBodyLimit + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/v1/orders", strings.NewReader(tt.body))
			req.ContentLength = tt.contentLength
			if tt.contentLength < 0 {
				req.TransferEncoding = []string{"chunked"}
			}
			wantError(t, e.Send(req), 413, "payload_too_large")
		})
	}

	// Over a real connection, with real chunked encoding.
	srv := httptest.NewServer(e.Handler)
	defer srv.Close()
	pr, pw := io.Pipe()
	go func() {
		for range 8 { // 8 chunks of 1 KiB
			if _, err := pw.Write([]byte(strings.Repeat(" ", 1024))); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	req, err := http.NewRequest("POST", srv.URL+"/v1/orders", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_ = pr.CloseWithError(errors.New("done"))
	wantError(t, &apitest.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}, 413, "payload_too_large")
}

// Config.BodyLimit replaces the default in both checks: the declared
// length and the bytes read. A limit above the default takes bodies the
// default refuses; one below refuses bodies the default takes.
func TestConfiguredBodyLimit(t *testing.T) {
	t.Parallel()
	valid := `{"product_id":"p1","user_id":"u1","quantity":1}`
	padded := func(n int) string { // a valid order of n bytes
		return `{"product_id":"p1","user_id":"u1","quantity":1` + strings.Repeat(" ", n-len(valid)) + `}`
	}
	for _, limit := range []int{2 * api.DefaultBodyLimit, len(valid) + 10} {
		e := apitest.New(t, &apitest.Options{API: api.Config{BodyLimit: int64(limit)}})
		e.CreateProduct(t, "p1", 1000, 0)
		for _, chunked := range []bool{false, true} {
			send := func(body string) *apitest.Response {
				req := apitest.NewRequest("POST", "/v1/orders", body)
				if chunked {
					req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
				}
				return e.Send(req)
			}
			if r := send(padded(limit)); r.Status != 202 {
				t.Errorf("limit %d, chunked %v: a body of exactly the limit: %d %s; want 202", limit, chunked, r.Status, r.Body)
			}
			r := send(padded(limit + 1))
			if code, _ := r.CheckError(); r.Status != 413 || code != "payload_too_large" {
				t.Errorf("limit %d, chunked %v: a body of the limit + 1: %d %s; want 413 payload_too_large", limit, chunked, r.Status, r.Body)
			}
		}
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	e.CreateProduct(t, "p1", 10, 0)
	body := `{"product_id":"p1","user_id":"alice","quantity":2}`
	first := wantPlaced(t, e.Do(t, "POST", "/v1/orders", body, "Idempotency-Key", "try-1"))
	again := wantPlaced(t, e.Do(t, "POST", "/v1/orders", body, "Idempotency-Key", "try-1"))
	if again != first {
		t.Fatalf("same key again = %+v, want %+v", again, first)
	}
	// Formatting differences are the same request.
	same := wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{ "quantity": 2, "user_id": "alice", "product_id": "p1" }`, "Idempotency-Key", "try-1"))
	if same.OrderID != first.OrderID {
		t.Fatalf("same order, other formatting = %s, want %s", same.OrderID, first.OrderID)
	}
	wantError(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`, "Idempotency-Key", "try-1"),
		422, "idempotency_mismatch")
	bob := wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"bob","quantity":2}`, "Idempotency-Key", "try-1"))
	if bob.OrderID == first.OrderID {
		t.Fatal("another user's order with the same key got the same id")
	}
	e.Decide(t, first.OrderID)
	if got := wantPlaced(t, e.Do(t, "POST", "/v1/orders", body, "Idempotency-Key", "try-1")); got.OrderID != first.OrderID || got.Status != "succeeded" {
		t.Fatalf("same key after the decision = %+v; want %s, succeeded", got, first.OrderID)
	}
	wantError(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":3}`, "Idempotency-Key", "try-1"),
		422, "idempotency_mismatch")
}

func TestGetOrder(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, &apitest.Options{API: api.Config{MaxWait: 300 * time.Millisecond}})
	e.CreateProduct(t, "p1", 10, 0)
	p := wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":3}`))
	path := "/v1/orders/" + p.OrderID

	r := e.Do(t, "GET", path, "")
	var o orderBody
	r.JSON(t, &o)
	if r.Status != 200 || o.OrderID != p.OrderID || o.ProductID != "p1" || o.UserID != "alice" || o.Quantity != 3 ||
		o.Status != "queued" || o.CreatedAt.IsZero() {
		t.Fatalf("queued order: %d %s", r.Status, r.Body)
	}

	for _, bad := range []string{"abc", "-1s", "-1", "1x", "10 s", "1h-", "∞"} {
		wantError(t, e.Do(t, "GET", path+"?wait="+urlQuery(bad), ""), 400, "invalid_request")
	}
	// The message names this server's cap, not the default's.
	if r := e.Do(t, "GET", path+"?wait=abc", ""); !strings.Contains(string(r.Body), "cut to 300ms") {
		t.Errorf("bad wait: %s; want the message to name the cap, 300ms", r.Body)
	}
	// Waits are capped (at MaxWait, here 300ms): a queued order comes back
	// queued after the cap, not after an hour.
	// 10000000000 seconds fits an int64 but not as nanoseconds: it
	// overflowed to a negative wait, answered at once.
	for _, long := range []string{"1h", "3600", "10000000000", "99999999999999999999999"} {
		start := time.Now()
		r := e.Do(t, "GET", path+"?wait="+long, "")
		r.JSON(t, &o)
		if d := time.Since(start); r.Status != 200 || o.Status != "queued" || d < 300*time.Millisecond || d > 20*time.Second {
			t.Fatalf("?wait=%s: %d %s after %v; want queued after about 300ms", long, r.Status, r.Body, d)
		}
	}
	for _, short := range []string{"0", "0s", "1ms", ""} {
		if r := e.Do(t, "GET", path+"?wait="+short, ""); r.Status != 200 {
			t.Fatalf("?wait=%s: %d %s", short, r.Status, r.Body)
		}
	}

	e.Decide(t, p.OrderID)
	r = e.Do(t, "GET", path, "")
	r.JSON(t, &o)
	if r.Status != 200 || o.Status != "succeeded" || o.Reason != "" || o.UpdatedAt.Before(o.CreatedAt) {
		t.Fatalf("decided order: %d %s", r.Status, r.Body)
	}

	for _, id := range []string{
		"01JABCDEFGHJKMNPQRSTVWXYZ0", // well formed, unknown
		"nope", "01jabcdefghjkmnpqrstvwxyz0", strings.Repeat("A", 27), "%2F..%2F..", "%C3%A9", "%00", "..",
	} {
		wantError(t, e.Do(t, "GET", "/v1/orders/"+id, ""), 404, "not_found")
		wantError(t, e.Do(t, "GET", "/v1/orders/"+id+"?wait=5s", ""), 404, "not_found")
	}
	wantError(t, e.Do(t, "GET", "/v1/orders/a/b", ""), 404, "not_found")
	wantError(t, e.Do(t, "GET", "/v1/orders", ""), 405, "method_not_allowed")
	wantError(t, e.Do(t, "DELETE", path, ""), 405, "method_not_allowed")
	wantError(t, e.Do(t, "GET", "/v2/orders", ""), 404, "not_found")
}

func urlQuery(s string) string {
	return strings.NewReplacer(" ", "%20", "∞", "%E2%88%9E").Replace(s)
}

func TestWaitReturnsWhenTheOrderIsDecided(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	e.CreateProduct(t, "p1", 10, 0)
	p := wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`))

	done := make(chan *apitest.Response, 1)
	start := time.Now()
	go func() { done <- e.Do(t, "GET", "/v1/orders/"+p.OrderID+"?wait=25s", "") }()
	testenv.Eventually(t, 10*time.Second, func() error {
		if e.Hub.Waiting() == 0 {
			return errors.New("the request is not waiting yet")
		}
		return nil
	})
	decided := time.Now()
	e.Decide(t, p.OrderID)
	var r *apitest.Response
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the wait did not end within 20s of the decision")
	}
	var o orderBody
	r.JSON(t, &o)
	if r.Status != 200 || o.Status != "succeeded" {
		t.Fatalf("waited order: %d %s", r.Status, r.Body)
	}
	t.Logf("answered %v after the decision started, %v after the request", time.Since(decided), time.Since(start))
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, &apitest.Options{Sale: &saletest.Options{RateLimit: &ratelimit.Options{Rate: 2, Per: time.Minute}}})
	e.CreateProduct(t, "p1", 100, 0)
	order := func(user string) *apitest.Response {
		return e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"`+user+`","quantity":1}`)
	}
	wantPlaced(t, order("alice"))
	wantPlaced(t, order("alice"))
	r := order("alice")
	wantError(t, r, 429, "rate_limited")
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	// The burst is spent: the next order is 30s away (less the time these
	// requests took), not the 1s of an error without the limiter's wait.
	if err != nil || secs < 25 || secs > 30 {
		t.Fatalf("Retry-After = %q; want whole seconds in [25, 30] (one order per 30s)", r.Header.Get("Retry-After"))
	}
	wantPlaced(t, order("bob"))
	// Bad requests are refused before the limiter and do not count.
	for range 3 {
		wantError(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"carol","quantity":0}`), 400, "invalid_request")
	}
	wantPlaced(t, order("carol"))
	// An order of a product that does not exist counts (the limit comes
	// before, and protects, the product lookup): two 404s spend dave's
	// burst and the third order is refused without a lookup.
	for range 2 {
		wantError(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"nope","user_id":"dave","quantity":1}`), 404, "product_not_found")
	}
	wantError(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"nope","user_id":"dave","quantity":1}`), 429, "rate_limited")
}

func TestRateLimiterDownFailsOpen(t *testing.T) {
	t.Parallel()
	down, err := ratelimit.New(testenv.UnreachableRedis(t), ratelimit.Options{Rate: 1, Per: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reports []string
	e := apitest.New(t, &apitest.Options{Sale: &saletest.Options{Limiter: down,
		OnFailOpen: func(_ context.Context, err error) {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, err.Error())
		}}})
	e.CreateProduct(t, "p1", 100, 0)
	for range 3 {
		wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 3 || !strings.Contains(reports[0], "rate limiter") {
		t.Fatalf("fail-open reports = %q; want 3 about the rate limiter", reports)
	}
}

func TestQueueRedisDown(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	var e *apitest.Env
	e = apitest.New(t, &apitest.Options{Sale: &saletest.Options{RedisURL: r.URL(0)}, API: api.Config{
		ReadyChecks: map[string]func(context.Context) error{
			"redis":    func(ctx context.Context) error { return e.Redis.Ping(ctx).Err() },
			"postgres": func(ctx context.Context) error { return e.Store.Ping(ctx) },
		},
	}})
	e.CreateProduct(t, "p1", 100, 0)
	queued := wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`))
	if got := e.Do(t, "GET", "/readyz", ""); got.Status != 200 {
		t.Fatalf("/readyz with everything up: %d %s", got.Status, got.Body)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}

	for _, key := range []string{"", "k-1"} {
		var header []string // "": no key sent (an empty one is a 400)
		if key != "" {
			header = []string{"Idempotency-Key", key}
		}
		resp := e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`, header...)
		wantError(t, resp, 503, "unavailable")
		if got := resp.Header.Get("Retry-After"); got == "" {
			t.Fatal("503 without Retry-After")
		}
	}
	wantError(t, e.Do(t, "GET", "/v1/orders/"+queued.OrderID, ""), 503, "unavailable")
	wantError(t, e.Do(t, "GET", "/v1/queue", "", apitest.Admin()...), 503, "unavailable")
	// Bad requests are still 4xx: validation needs no dependency.
	wantError(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1"}`), 400, "invalid_request")

	ready := e.Do(t, "GET", "/readyz", "")
	var body struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	ready.JSON(t, &body)
	if ready.Status != 503 || body.Status != "unavailable" || body.Checks["redis"] != "unavailable" || body.Checks["postgres"] != "ok" ||
		ready.Header.Get("Retry-After") == "" {
		t.Fatalf("/readyz with Redis down: %d %s", ready.Status, ready.Body)
	}
	if got := e.Do(t, "GET", "/healthz", ""); got.Status != 200 {
		t.Fatalf("/healthz: %d %s", got.Status, got.Body)
	}
	if !strings.Contains(e.Log.String(), "dependency unavailable") {
		t.Fatalf("the 503s were not logged: %s", e.Log.String())
	}
}

// With the queue's Redis hung (SIGSTOP: connections stay open, nothing
// answers), an order is answered 503 with Retry-After within
// sale.OrderBudget (plus slack for a loaded machine), as a client retrying
// needs: it was 14-30s, the rate limiter's and the enqueue's calls to Redis
// each taking up to go-redis's 3s read timeout times four tries.
func TestQueueRedisHangs(t *testing.T) {
	t.Parallel()
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	e := apitest.New(t, &apitest.Options{Sale: &saletest.Options{RedisURL: r.URL(0), APIClient: true,
		RateLimit: &ratelimit.Options{Rate: 1000, Per: time.Second}}})
	t.Cleanup(func() { _ = r.Resume() }) // runs before saletest's clean-up, which needs the node
	e.CreateProduct(t, "p1", 100, 0)
	wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`))
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "k-1"} {
		var header []string
		if key != "" {
			header = []string{"Idempotency-Key", key}
		}
		start := time.Now()
		resp := e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`, header...)
		took := time.Since(start)
		t.Logf("key %q: %d after %v", key, resp.Status, took.Round(time.Millisecond))
		wantError(t, resp, 503, "unavailable")
		if resp.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		if limit := sale.OrderBudget + 2*time.Second; took > limit {
			t.Errorf("key %q: answered after %v; want within %v", key, took, limit)
		}
	}
}

// With the queue's Redis hung, the admin reads of the queue (GET /v1/queue,
// and the dashboard's data, GET /v1/dashboard) answer 503 with
// Retry-After within sale.ReadBudget (plus slack for a loaded machine), so
// that an operator looking during the incident learns it, and the
// dashboard's polls do not wait behind one another: the first after the
// pause waited 10s, asynq's calls for the counts each taking up to
// go-redis's 3s read timeout times four tries. Each path on a Redis of its
// own: the first call is the one that waited longest. Once Redis answers
// again, so do they.
func TestAdminReadsOnAHungRedis(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/v1/queue", "/v1/dashboard"} {
		t.Run(strings.TrimPrefix(path, "/v1/"), func(t *testing.T) {
			t.Parallel()
			r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
			e := apitest.New(t, &apitest.Options{Sale: &saletest.Options{RedisURL: r.URL(0), APIClient: true}})
			t.Cleanup(func() { _ = r.Resume() }) // runs before saletest's clean-up, which needs the node
			e.CreateProduct(t, "p1", 100, 0)
			wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`))
			if err := r.Pause(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp := e.Do(t, "GET", path, "", apitest.Admin()...)
			took := time.Since(start)
			t.Logf("GET %s: %d after %v", path, resp.Status, took.Round(time.Millisecond))
			wantError(t, resp, 503, "unavailable")
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("GET %s: 503 without Retry-After", path)
			}
			if limit := sale.ReadBudget + 2*time.Second; took > limit {
				t.Errorf("GET %s: answered after %v; want within %v", path, took, limit)
			}
			if err := r.Resume(); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 20*time.Second, func() error {
				if resp := e.Do(t, "GET", path, "", apitest.Admin()...); resp.Status != http.StatusOK {
					return fmt.Errorf("GET %s once Redis answers: %d %s", path, resp.Status, resp.Body)
				}
				return nil
			})
		})
	}
}

func TestReadyzWhenPostgresIsDown(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	closed, err := inventory.Open(context.Background(), e.DatabaseURL, &inventory.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	h, err := api.New(e.Service, api.Config{Logger: discardLogger(), ReadyChecks: map[string]func(context.Context) error{
		"postgres": closed.Ping,
		"redis":    func(ctx context.Context) error { return e.Redis.Ping(ctx).Err() },
	}})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	if w.Code != 503 || !strings.Contains(w.Body.String(), `"postgres":"unavailable"`) || !strings.Contains(w.Body.String(), `"redis":"ok"`) {
		t.Fatalf("/readyz with PostgreSQL down: %d %s", w.Code, w.Body)
	}
}

// A check that hangs (a stalled server) does not use up the others' time:
// each is reported for itself.
func TestReadyzWhenOneCheckHangs(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	// Map order is random: run it a few times so that the hanging check
	// comes first at least once, as it would have to for a serial run to
	// starve the other.
	for range 4 {
		h, err := api.New(e.Service, api.Config{Logger: discardLogger(), ReadyChecks: map[string]func(context.Context) error{
			"hangs": func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			"redis": func(ctx context.Context) error {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return e.Redis.Ping(ctx).Err()
			},
		}})
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
		if w.Code != 503 || !strings.Contains(w.Body.String(), `"hangs":"unavailable"`) || !strings.Contains(w.Body.String(), `"redis":"ok"`) {
			t.Fatalf("/readyz with one check hanging: %d %s", w.Code, w.Body)
		}
		// The checks' bound is 2s: a probe is answered then, not when
		// the probe itself gives up (slack for a loaded machine).
		if took := time.Since(start); took > 6*time.Second {
			t.Fatalf("/readyz with one check hanging answered after %v; want about 2s", took)
		}
	}
}

func TestManyConcurrentOrdersGetDistinctIDs(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	e.CreateProduct(t, "p1", 1000, 0)
	const n = 50
	ids := make(chan string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := e.Do(t, "POST", "/v1/orders", fmt.Sprintf(`{"product_id":"p1","user_id":"u%d","quantity":1}`, i))
			if r.Status != 202 {
				t.Errorf("order %d: %d %s", i, r.Status, r.Body)
				return
			}
			var p placed
			if err := json.Unmarshal(r.Body, &p); err != nil {
				t.Errorf("order %d: %s: %v", i, r.Body, err)
				return
			}
			ids <- p.OrderID
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("order id %s given twice", id)
		}
		seen[id] = true
	}
	if len(seen) != n {
		t.Fatalf("%d ids, want %d", len(seen), n)
	}
}

// An Idempotency-Key sent empty is outside its limits (1-255 printable
// ASCII characters: README, openapi.json's minLength 1), so it is 400 like
// a key with a space, not an order without a key: a client whose key
// variable came out empty, or a proxy that blanked the header, would
// otherwise get a new order at every retry, the double order the key is
// there to prevent. Over HTTP, a key of only spaces arrives empty (net/http
// trims a header value), while in-process " " is already refused. Two
// Idempotency-Key lines are refused too: the first (Header.Get's) could
// join a retry to another order.
func TestEmptyOrRepeatedIdempotencyKeyIsRefused(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	e.CreateProduct(t, "p1", 100, 0)
	body := `{"product_id":"p1","user_id":"u1","quantity":1}`
	wantError(t, e.Do(t, "POST", "/v1/orders", body, "Idempotency-Key", ""), 400, "invalid_request")
	wantError(t, e.Do(t, "POST", "/v1/products/p1/restock", `{"quantity":1}`,
		append(apitest.Admin(), "Idempotency-Key", "")...), 400, "invalid_request")

	// Over a real connection: "Idempotency-Key:   " reaches the handler as
	// "". Two Idempotency-Key lines: which names the order? Refused too.
	srv := httptest.NewServer(e.Handler)
	defer srv.Close()
	for _, keyLines := range []string{"Idempotency-Key:   \r\n", "Idempotency-Key: k1\r\nIdempotency-Key: k2\r\n"} {
		wantError(t, rawPost(t, srv.Listener.Addr().String(), "/v1/orders", keyLines, body), 400, "invalid_request")
	}

	// No header at all is an order without a key, as before.
	wantPlaced(t, e.Do(t, "POST", "/v1/orders", body))
}

// rawPost sends a POST of a JSON body to addr over a connection of its own,
// with the header lines given as they are (what net/http's client would
// not send: repeated or blank lines), and returns the answer.
func rawPost(t *testing.T, addr, path, headerLines, body string) *apitest.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		path, headerLines, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &apitest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// A ?wait= under the cap is the wait: a queued order comes back queued
// after about that long, not after MaxWait.
func TestShortWaitIsKept(t *testing.T) {
	t.Parallel()
	const maxWait = 20 * time.Second
	e := apitest.New(t, &apitest.Options{API: api.Config{MaxWait: maxWait}})
	e.CreateProduct(t, "p1", 10, 0)
	p := wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`))
	for _, tc := range []struct {
		wait string
		want time.Duration
	}{{"200ms", 200 * time.Millisecond}, {"1", time.Second}} {
		start := time.Now()
		r := e.Do(t, "GET", "/v1/orders/"+p.OrderID+"?wait="+tc.wait, "")
		var o orderBody
		r.JSON(t, &o)
		// Slack for a loaded machine, well under MaxWait.
		if d := time.Since(start); r.Status != 200 || o.Status != "queued" || d < tc.want || d > tc.want+5*time.Second {
			t.Errorf("?wait=%s: %d %s after %v; want queued after about %v (MaxWait %v)", tc.wait, r.Status, r.Body, d, tc.want, maxWait)
		}
	}
}

// ?wait= is refused when negative, however large, and capped at
// sale.MaxWait even when Config.MaxWait asks for more: the server's write
// timeout only outlasts sale.MaxWait, and a longer poll had its connection
// cut instead of an answer. (No service: both are settled before it.)
func TestWaitParameterBounds(t *testing.T) {
	t.Parallel()
	h, _ := bare(t, api.Config{MaxWait: time.Hour})
	path := "/v1/orders/01JABCDEFGHJKMNPQRSTVWXYZ0"
	for _, bad := range []string{"-1", "-99999999999999999999999", "-1h"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path+"?wait="+bad, nil))
		r := &apitest.Response{Status: w.Code, Header: w.Result().Header, Body: w.Body.Bytes()}
		wantError(t, r, 400, "invalid_request")
		if want := "cut to " + sale.MaxWait.String(); !strings.Contains(string(r.Body), want) {
			t.Errorf("?wait=%s: %s; want the message to name the cap, %q", bad, r.Body, want)
		}
	}
}

// A request whose context ends before the service answers (the server's
// base context, cancelled when a shutdown outlasts its bound, while the
// client still waits) answers 503 unavailable with Retry-After, as the API
// table promises for every 503: the client is to send it again elsewhere.
func TestCancelledRequestAnswers503WithRetryAfter(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	e.CreateProduct(t, "p1", 10, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct{ method, target, body string }{
		{"GET", "/v1/products/p1", ""},
		{"GET", "/v1/queue", ""},
		{"POST", "/v1/orders", `{"product_id":"p1","user_id":"alice","quantity":1}`},
	} {
		r := e.Send(apitest.NewRequest(c.method, c.target, c.body, apitest.Admin()...).WithContext(ctx))
		wantError(t, r, 503, "unavailable")
		if got := r.Header.Get("Retry-After"); got != "1" {
			t.Errorf("%s %s cancelled: Retry-After %q, want 1", c.method, c.target, got)
		}
	}
}
