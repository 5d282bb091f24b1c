package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/ratelimit"
	"github.com/flashsale/flashsale/sale/saletest"
)

// notInDocument are the routes of the handler that are not part of the v1
// JSON API, so the OpenAPI document leaves them out on purpose.
var notInDocument = map[string]bool{
	"GET /":                true, // the dashboard page
	"GET /assets/*file":    true, // its script and style sheet
	"GET /login":           true, // the admin sign-in form (HTML)
	"POST /login":          true, // its submission: sets the session cookie
	"POST /logout":         true, // clears it
	"GET /monitoring/*any": true, // asynqmon, the queue monitor (its own API)
	"GET /monitoring":      true, // a redirect to it
	"GET /openapi.json":    true, // the document itself
	"GET /metrics":         true, // Prometheus, added by cmd/flashsale
}

var ginParam = regexp.MustCompile(`:([A-Za-z_]+)`)

func loadDoc(t *testing.T) *openapi3.T {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(openAPIDoc, &raw); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if v, _ := raw["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi: got %q, want 3.x", v)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openAPIDoc)
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// The routes of the router and the operations of the document are the same
// set, apart from the explicit list above.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	t.Parallel()
	doc := loadDoc(t)
	h := newHandler(t, nil, Config{Monitor: http.NotFoundHandler(), Metrics: http.NotFoundHandler()})

	var routes []string
	gets, heads := map[string]bool{}, map[string]bool{}
	for _, r := range h.Routes() {
		switch r.Method {
		case http.MethodGet:
			gets[r.Path] = true
		case http.MethodHead:
			// Every GET operation answers HEAD too, as the document's
			// description says once instead of in every path.
			heads[r.Path] = true
			continue
		}
		key := r.Method + " " + r.Path
		if notInDocument[key] {
			continue
		}
		routes = append(routes, r.Method+" "+ginParam.ReplaceAllString(r.Path, "{$1}"))
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	if !maps.Equal(gets, heads) {
		t.Errorf("the GET and HEAD routes differ:\nGET:  %v\nHEAD: %v", slices.Sorted(maps.Keys(gets)), slices.Sorted(maps.Keys(heads)))
	}
	slices.Sort(routes)
	slices.Sort(documented)
	if !slices.Equal(routes, documented) {
		t.Errorf("router and openapi.json differ:\nrouter:   %v\ndocument: %v", routes, documented)
	}
	// Every route can answer 404, 405, 413 and 500 (the router and the
	// middleware do, whatever the handler): each operation documents them
	// through the shared default response.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.Responses.Default() == nil {
				t.Errorf("%s %s has no default response", method, path)
			}
		}
	}
	// The exclusion list names only real routes, so it cannot hide a new one.
	registered := map[string]bool{}
	for _, r := range h.Routes() {
		registered[r.Method+" "+r.Path] = true
	}
	for key := range notInDocument {
		if !registered[key] {
			t.Errorf("notInDocument lists %q, which the router does not have", key)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	h := newHandler(t, nil, Config{})
	rec := do(t, h, request{method: "GET", path: "/openapi.json"})
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("GET /openapi.json: got %d %q, want 200 application/json", rec.Code, rec.Header().Get("Content-Type"))
	}
	if !bytes.Equal(rec.Body.Bytes(), openAPIDoc) {
		t.Errorf("GET /openapi.json: body differs from api/openapi.json")
	}
}

// Real answers of the API, one per documented status where a test can
// provoke it, match the document: the status is listed for the operation
// and the body and headers fit its schema.
func TestOpenAPIMatchesAnswers(t *testing.T) {
	t.Parallel()
	doc := loadDoc(t)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	svc, deps := newService(t)
	h := newHandler(t, svc, Config{ReadyChecks: map[string]func(context.Context) error{"postgres": deps.store.Ping}})
	admin := bearer(testToken)
	big := `{"id":"x","name":"` + strings.Repeat("n", DefaultBodyLimit) + `","stock":1}`

	var orderID string
	steps := []struct {
		name string
		req  request
		want int
	}{
		{"healthz", request{method: "GET", path: "/healthz"}, 200},
		{"readyz", request{method: "GET", path: "/readyz"}, 200},
		{"create", request{method: "POST", path: "/v1/products", header: admin, body: `{"id":"p1","name":"Phone","stock":5,"per_user_limit":2}`}, 201},
		{"create sold out", request{method: "POST", path: "/v1/products", header: admin, body: `{"id":"gone","name":"Gone","stock":0}`}, 201},
		{"create again", request{method: "POST", path: "/v1/products", header: admin, body: `{"id":"p1","name":"Phone","stock":5}`}, 409},
		{"create no token", request{method: "POST", path: "/v1/products", body: `{"id":"p2","name":"x","stock":5}`}, 401},
		{"create bad", request{method: "POST", path: "/v1/products", header: admin, body: `{"id":"p2","name":"x","stock":-1}`}, 400},
		{"create too big", request{method: "POST", path: "/v1/products", header: admin, body: big}, 413},
		{"list", request{method: "GET", path: "/v1/products?limit=10"}, 200},
		{"list bad", request{method: "GET", path: "/v1/products?limit=0"}, 400},
		{"get", request{method: "GET", path: "/v1/products/p1"}, 200},
		{"get unknown", request{method: "GET", path: "/v1/products/nope"}, 404},
		{"restock", request{method: "POST", path: "/v1/products/p1/restock", header: admin, body: `{"quantity":3}`}, 200},
		{"restock unknown", request{method: "POST", path: "/v1/products/nope/restock", header: admin, body: `{"quantity":3}`}, 404},
		{"restock bad", request{method: "POST", path: "/v1/products/p1/restock", header: admin, body: `{"quantity":0}`}, 400},
		{"restock keyed", request{method: "POST", path: "/v1/products/p1/restock", header: withKey(admin, "r1"), body: `{"quantity":2}`}, 200},
		{"restock keyed replay", request{method: "POST", path: "/v1/products/p1/restock", header: withKey(admin, "r1"), body: `{"quantity":2}`}, 200},
		{"restock keyed mismatch", request{method: "POST", path: "/v1/products/p1/restock", header: withKey(admin, "r1"), body: `{"quantity":3}`}, 422},
		{"order", request{method: "POST", path: "/v1/orders", header: map[string]string{"Idempotency-Key": "k1"},
			body: `{"product_id":"p1","user_id":"alice","quantity":1}`}, 202},
		{"order replay", request{method: "POST", path: "/v1/orders", header: map[string]string{"Idempotency-Key": "k1"},
			body: `{"product_id":"p1","user_id":"alice","quantity":1}`}, 202},
		{"order mismatch", request{method: "POST", path: "/v1/orders", header: map[string]string{"Idempotency-Key": "k1"},
			body: `{"product_id":"p1","user_id":"alice","quantity":2}`}, 422},
		{"order unknown product", request{method: "POST", path: "/v1/orders", body: `{"product_id":"nope","user_id":"alice","quantity":1}`}, 404},
		{"order sold out", request{method: "POST", path: "/v1/orders", body: `{"product_id":"gone","user_id":"alice","quantity":1}`}, 409},
		{"order bad", request{method: "POST", path: "/v1/orders", body: `{"product_id":"p1","user_id":"alice","quantity":101}`}, 400},
		{"order too big", request{method: "POST", path: "/v1/orders", body: big}, 413},
		{"order not JSON", request{method: "POST", path: "/v1/orders", header: map[string]string{"Content-Type": "application/xml"},
			body: `{"product_id":"p1","user_id":"alice","quantity":1}`}, 415},
		{"get order", request{method: "GET", path: "/v1/orders/{order}"}, 200},
		{"get order bad wait", request{method: "GET", path: "/v1/orders/{order}?wait=soon"}, 400},
		{"get order unknown", request{method: "GET", path: "/v1/orders/01ARZ3NDEKTSV4RRFFQ69G5FAV"}, 404},
		{"queue", request{method: "GET", path: "/v1/queue", header: admin}, 200},
		{"queue no token", request{method: "GET", path: "/v1/queue"}, 401},
		{"dashboard", request{method: "GET", path: "/v1/dashboard", header: admin}, 200},
		{"dashboard no token", request{method: "GET", path: "/v1/dashboard", header: map[string]string{"Accept": "application/json"}}, 401},
		{"dashboard browser", request{method: "GET", path: "/v1/dashboard", header: map[string]string{"Accept": "text/html"}}, 303},
	}
	// The sold-out fast path: what a worker does when it sells the last unit.
	if _, err := deps.gate.Mark(context.Background(), "gone", 0); err != nil {
		t.Fatal(err)
	}
	for _, st := range steps {
		st.req.path = strings.ReplaceAll(st.req.path, "{order}", orderID)
		rec := do(t, h, st.req)
		if rec.Code != st.want {
			t.Errorf("%s: %s %s: got %d %s, want %d", st.name, st.req.method, st.req.path, rec.Code, rec.Body, st.want)
			continue
		}
		if st.name == "order" {
			var p struct {
				OrderID string `json:"order_id"`
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &p)
			orderID = p.OrderID
		}
		if err := validateAnswer(router, st.req, rec.Code, rec.Header(), rec.Body.Bytes()); err != nil {
			t.Errorf("%s: %s %s answered %d: %v", st.name, st.req.method, st.req.path, rec.Code, err)
		}
	}
}

// validateAnswer checks an answer against the document: its status is
// listed for the operation (not only covered by "default"), and body and
// headers fit the schema.
func validateAnswer(router routers.Router, r request, status int, header http.Header, body []byte) error {
	req, err := http.NewRequest(r.method, "http://api.test"+r.path, strings.NewReader(r.body))
	if err != nil {
		return err
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("not in the document: %w", err)
	}
	if route.Operation.Responses.Status(status) == nil {
		return fmt.Errorf("status %d is not documented for %s %s", status, r.method, route.Path)
	}
	return openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: status, Header: header, Body: io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	})
}

// The answers of failure, throttling and admin-body checks match the
// document too: 429 with Retry-After, 503 (dependencies down), and 401,
// 413 and 415 on restock.
func TestOpenAPIMatchesFailureAnswers(t *testing.T) {
	t.Parallel()
	doc := loadDoc(t)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	r := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	e := saletest.New(t, &saletest.Options{RedisURL: r.URL(0), RateLimit: &ratelimit.Options{Rate: 1, Per: time.Hour}})
	e.CreateProduct(t, "p1", 5, 0)
	h := newHandler(t, e.Service, Config{ReadyChecks: map[string]func(context.Context) error{
		"redis": func(ctx context.Context) error { return e.Redis.Ping(ctx).Err() },
	}})
	admin := bearer(testToken)
	big := `{"quantity":1,"pad":"` + strings.Repeat("n", DefaultBodyLimit) + `"}`
	order := func(key string) request {
		return request{method: "POST", path: "/v1/orders", header: map[string]string{"Idempotency-Key": key},
			body: `{"product_id":"p1","user_id":"bob","quantity":1}`}
	}
	type step struct {
		name string
		req  request
		want int
	}
	run := func(steps []step) {
		for _, st := range steps {
			rec := do(t, h, st.req)
			if rec.Code != st.want {
				t.Errorf("%s: %s %s: got %d %s, want %d", st.name, st.req.method, st.req.path, rec.Code, rec.Body, st.want)
				continue
			}
			if err := validateAnswer(router, st.req, rec.Code, rec.Header(), rec.Body.Bytes()); err != nil {
				t.Errorf("%s: %s %s answered %d: %v", st.name, st.req.method, st.req.path, rec.Code, err)
			}
		}
	}
	run([]step{
		{"order", order("k1"), 202},
		{"order over the rate", order("k2"), 429},
		{"restock no token", request{method: "POST", path: "/v1/products/p1/restock", body: `{"quantity":1}`}, 401},
		{"restock too big", request{method: "POST", path: "/v1/products/p1/restock", header: admin, body: big}, 413},
		{"restock not JSON", request{method: "POST", path: "/v1/products/p1/restock",
			header: map[string]string{"Authorization": admin["Authorization"], "Content-Type": "application/xml"}, body: `{"quantity":1}`}, 415},
	})
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	run([]step{
		{"readyz, Redis down", request{method: "GET", path: "/readyz"}, 503},
		{"get order, Redis down", request{method: "GET", path: "/v1/orders/01ARZ3NDEKTSV4RRFFQ69G5FAV"}, 503},
	})
}

// withKey is header with an Idempotency-Key added.
func withKey(header map[string]string, key string) map[string]string {
	out := map[string]string{"Idempotency-Key": key}
	for k, v := range header {
		out[k] = v
	}
	return out
}
