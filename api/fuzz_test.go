package api_test

// Fuzz targets for hostile input. Each drives the real handler over a real
// service (PostgreSQL and Redis, per process) and checks that every input
// gets a 2xx, a redirect, or a 4xx with the JSON error body: never a 5xx,
// never a panic (the recovery middleware would turn one into a 500).
//
//	make fuzz                     # each target briefly
//	go test -run '^$' -fuzz '^FuzzPlaceOrder$' -fuzztime 60s ./api/
//
// The seed corpus is in testdata/fuzz/<target>/.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/api/apitest"
	"github.com/flashsale/flashsale/ratelimit"
	"github.com/flashsale/flashsale/sale/saletest"
)

// checkAnswer fails the test unless r is a 2xx with a JSON body, a 3xx, or
// a 4xx with the JSON error body.
func checkAnswer(t *testing.T, what string, r *apitest.Response) {
	t.Helper()
	switch {
	case r.Status >= 500 || r.Status < 200:
		t.Fatalf("%s: status %d; body %s", what, r.Status, r.Body)
	case r.Status >= 400:
		if _, err := r.CheckError(); err != nil {
			t.Fatalf("%s: status %d: %v", what, r.Status, err)
		}
	case r.Status < 300:
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") || !json.Valid(r.Body) {
			t.Fatalf("%s: status %d with a body that is not JSON: %s", what, r.Status, r.Body)
		}
	}
}

func FuzzPlaceOrder(f *testing.F) {
	e := apitest.New(f, &apitest.Options{Sale: &saletest.Options{
		// Exercise the limiter too; it also keeps the queue small.
		RateLimit: &ratelimit.Options{Rate: 20, Per: time.Second},
	}})
	e.CreateProduct(f, "p1", 1_000_000_000, 0)
	e.CreateProduct(f, "gone", 0, 0)
	e.MarkSoldOut(f, "gone")
	f.Add([]byte(`{"product_id":"p1","user_id":"u1","quantity":1}`), "")
	f.Add([]byte(`{"product_id":"gone","user_id":"u1","quantity":1}`), "key-1")
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		req := httptest.NewRequest("POST", "/v1/orders", bytes.NewReader(body))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		checkAnswer(t, "POST /v1/orders", e.Send(req))
	})
}

func FuzzProductRequests(f *testing.F) {
	e := apitest.New(f, nil)
	e.CreateProduct(f, "p1", 10, 0)
	f.Add([]byte(`{"id":"sku-1","name":"Phone","stock":100,"per_user_limit":1}`))
	f.Add([]byte(`{"quantity":10}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, target := range []string{
			"/v1/products",
			// An unknown product: every valid restock body ends in 404
			// without the restock's settle wait.
			"/v1/products/nope/restock",
		} {
			req := httptest.NewRequest("POST", target, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+apitest.AdminToken)
			checkAnswer(t, "POST "+target, e.Send(req))
		}
	})
}

func FuzzPathParams(f *testing.F) {
	e := apitest.New(f, nil)
	e.CreateProduct(f, "p1", 10, 0)
	f.Add("p1", "1s")
	f.Add("01JABCDEFGHJKMNPQRSTVWXYZ0", "10s")
	f.Fuzz(func(t *testing.T, id, param string) {
		targets := []struct{ method, target, body string }{
			{"GET", "/v1/products/" + id, ""},
			{"GET", "/v1/orders/" + id + "?wait=" + url.QueryEscape(param), ""},
			{"GET", "/v1/orders/" + id + "?wait=" + param, ""},
			{"GET", "/v1/products?after=" + id + "&limit=" + param, ""},
		}
		// Restocking p1 itself would wait for the sold-out flags to settle.
		if dec, err := url.PathUnescape(id); err == nil && dec != "p1" {
			targets = append(targets, struct{ method, target, body string }{
				"POST", "/v1/products/" + id + "/restock", `{"quantity":1}`})
		}
		for _, tt := range targets {
			req := request(tt.method, tt.target, tt.body)
			if req == nil {
				continue // net/http refuses such a request line before any handler
			}
			checkAnswer(t, tt.method+" "+tt.target, e.Send(req))
		}
	})
}

// request builds a request for a raw request target as net/http's server
// would parse it from a request line, or nil when it would refuse it.
func request(method, target, body string) *http.Request {
	if target == "" || strings.ContainsAny(target, " \t\r\n") {
		return nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	req := httptest.NewRequest(method, "/", strings.NewReader(body))
	req.URL = u
	req.RequestURI = target
	req.Header.Set("Authorization", "Bearer "+apitest.AdminToken)
	return req
}
