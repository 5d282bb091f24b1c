package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/api/apitest"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
)

type productBody struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Stock        int64  `json:"stock"`
	Sold         int64  `json:"sold"`
	PerUserLimit int    `json:"per_user_limit"`
}

func TestCreateProductContract(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	admin := apitest.Admin()
	tests := []struct {
		name   string
		body   string
		header []string
		status int
		code   string // "" for 201
	}{
		{"valid", `{"id":"sku-1","name":"Phone","stock":100,"per_user_limit":1}`, admin, 201, ""},
		{"no limit", `{"id":"sku-2","name":"Phone «X» 📱","stock":0}`, admin, 201, ""},
		{"limit 0", `{"id":"sku-3","name":"P","stock":5,"per_user_limit":0}`, admin, 201, ""},
		{"max stock", fmt.Sprintf(`{"id":"sku-4","name":"P","stock":%d}`, sale.MaxStock), admin, 201, ""},
		{"lower-case scheme", `{"id":"sku-5","name":"P","stock":1}`, []string{"Authorization", "bearer " + apitest.AdminToken}, 201, ""},

		{"exists", `{"id":"sku-1","name":"Other","stock":1}`, admin, 409, "product_exists"},

		{"no token", `{"id":"x1","name":"P","stock":1}`, nil, 401, "unauthorized"},
		{"wrong token", `{"id":"x1","name":"P","stock":1}`, []string{"Authorization", "Bearer nope"}, 401, "unauthorized"},
		{"token prefix", `{"id":"x1","name":"P","stock":1}`, []string{"Authorization", "Bearer " + apitest.AdminToken[:5]}, 401, "unauthorized"},
		{"token plus more", `{"id":"x1","name":"P","stock":1}`, []string{"Authorization", "Bearer " + apitest.AdminToken + "x"}, 401, "unauthorized"},
		{"token, no scheme", `{"id":"x1","name":"P","stock":1}`, []string{"Authorization", apitest.AdminToken}, 401, "unauthorized"},
		{"basic scheme", `{"id":"x1","name":"P","stock":1}`, []string{"Authorization", "Basic " + apitest.AdminToken}, 401, "unauthorized"},
		{"empty bearer", `{"id":"x1","name":"P","stock":1}`, []string{"Authorization", "Bearer "}, 401, "unauthorized"},
		{"bad body, no token", `{`, nil, 401, "unauthorized"}, // authorization comes first

		{"missing name", `{"id":"x1","stock":1}`, admin, 400, "invalid_request"},
		{"missing stock", `{"id":"x1","name":"P"}`, admin, 400, "invalid_request"},
		{"missing id", `{"name":"P","stock":1}`, admin, 400, "invalid_request"},
		{"null", `null`, admin, 400, "invalid_request"},
		{"unknown field", `{"id":"x1","name":"P","stock":1,"price":3}`, admin, 400, "invalid_request"},
		{"sold is not an input", `{"id":"x1","name":"P","stock":1,"sold":3}`, admin, 400, "invalid_request"},
		{"duplicate stock", `{"id":"x1","name":"P","stock":1,"stock":1000}`, admin, 400, "invalid_request"},
		{"trailing data", `{"id":"x1","name":"P","stock":1}[]`, admin, 400, "invalid_request"},
		{"stock as string", `{"id":"x1","name":"P","stock":"1"}`, admin, 400, "invalid_request"},
		{"stock fraction", `{"id":"x1","name":"P","stock":1.5}`, admin, 400, "invalid_request"},
		{"stock beyond int64", `{"id":"x1","name":"P","stock":9223372036854775808}`, admin, 400, "invalid_request"},
		{"stock negative", `{"id":"x1","name":"P","stock":-1}`, admin, 400, "invalid_request"},
		{"stock above max", fmt.Sprintf(`{"id":"x1","name":"P","stock":%d}`, sale.MaxStock+1), admin, 400, "invalid_request"},
		{"limit negative", `{"id":"x1","name":"P","stock":1,"per_user_limit":-1}`, admin, 400, "invalid_request"},
		{"limit huge", `{"id":"x1","name":"P","stock":1,"per_user_limit":99999999999999999999}`, admin, 400, "invalid_request"},
		{"id with slash", `{"id":"a/b","name":"P","stock":1}`, admin, 400, "invalid_request"},
		{"id unicode", `{"id":"é","name":"P","stock":1}`, admin, 400, "invalid_request"},
		{"id too long", `{"id":"` + strings.Repeat("i", 65) + `","name":"P","stock":1}`, admin, 400, "invalid_request"},
		{"empty name", `{"id":"x1","name":"","stock":1}`, admin, 400, "invalid_request"},
		{"name too long", `{"id":"x1","name":"` + strings.Repeat("n", sale.MaxNameLength+1) + `","stock":1}`, admin, 400, "invalid_request"},
		{"NUL in name", `{"id":"x1","name":"a\u0000b","stock":1}`, admin, 400, "invalid_request"},
		{"newline in name", `{"id":"x1","name":"a\nb","stock":1}`, admin, 400, "invalid_request"},
		{"name not UTF-8", "{\"id\":\"x1\",\"name\":\"a\xe9b\",\"stock\":1}", admin, 400, "invalid_request"},
		{"name as number", `{"id":"x1","name":5,"stock":1}`, admin, 400, "invalid_request"},
		// A lone surrogate escape is ASCII, valid UTF-8, and would be stored
		// as U+FFFD (from a review); an escaped pair is one character.
		{"lone high surrogate escape", `{"id":"x1","name":"Phone \ud83d","stock":1}`, admin, 400, "invalid_request"},
		{"lone low surrogate escape", `{"id":"x1","name":"\ude00 Phone","stock":1}`, admin, 400, "invalid_request"},
		{"surrogates the wrong way round", `{"id":"x1","name":"\ude00\ud83d","stock":1}`, admin, 400, "invalid_request"},
		{"surrogate pair escape", `{"id":"sku-6","name":"Phone \ud83d\ude00","stock":1}`, admin, 201, ""},
		{"escaped backslash before u", `{"id":"sku-7","name":"C:\\ud83d","stock":1}`, admin, 201, ""},
		{"XML", `<p/>`, append([]string{"Content-Type", "application/xml"}, admin...), 415, "unsupported_media_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.Do(t, "POST", "/v1/products", tt.body, tt.header...)
			if tt.code != "" {
				wantError(t, r, tt.status, tt.code)
				if tt.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
				return
			}
			if r.Status != 201 {
				t.Fatalf("status = %d, want 201; body %s", r.Status, r.Body)
			}
			var p productBody
			r.JSON(t, &p)
			if p.ID == "" || r.Header.Get("Location") != "/v1/products/"+p.ID || p.Sold != 0 {
				t.Fatalf("created: %s, Location %q", r.Body, r.Header.Get("Location"))
			}
			// The product as created is the one asked for, limit included
			// (0, none, when left out).
			var sent productBody
			if err := json.Unmarshal([]byte(tt.body), &sent); err != nil {
				t.Fatal(err)
			}
			if p != sent {
				t.Errorf("created %+v, asked for %+v", p, sent)
			}
		})
	}
	for id, want := range map[string]string{"sku-6": "Phone 😀", "sku-7": `C:\ud83d`} {
		var p productBody
		e.Do(t, "GET", "/v1/products/"+id, "").JSON(t, &p)
		if p.Name != want {
			t.Errorf("product %s: name %q, want %q", id, p.Name, want)
		}
	}
	// Nothing refused was created.
	wantError(t, e.Do(t, "GET", "/v1/products/x1", ""), 404, "not_found")
}

func TestProductReadsAndRestock(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	admin := apitest.Admin()
	for i := range 5 {
		e.CreateProduct(t, fmt.Sprintf("p%d", i), int64(10*i), i)
	}
	r := e.Do(t, "GET", "/v1/products/p3", "")
	var p productBody
	r.JSON(t, &p)
	if r.Status != 200 || p != (productBody{ID: "p3", Name: "p3", Stock: 30, PerUserLimit: 3}) {
		t.Fatalf("GET p3: %d %s", r.Status, r.Body)
	}
	for _, id := range []string{"nope", "a%2Fb", "%2Fp3", "%C3%A9", "%00", "..", "p3%00", strings.Repeat("p", 65), "p3%20"} {
		wantError(t, e.Do(t, "GET", "/v1/products/"+id, ""), 404, "not_found")
	}

	var list struct {
		Products []productBody `json:"products"`
	}
	r = e.Do(t, "GET", "/v1/products?limit=2&after=p1", "")
	r.JSON(t, &list)
	if r.Status != 200 || len(list.Products) != 2 || list.Products[0].ID != "p2" || list.Products[1].ID != "p3" {
		t.Fatalf("page after p1: %d %s", r.Status, r.Body)
	}
	r = e.Do(t, "GET", "/v1/products", "")
	r.JSON(t, &list)
	if r.Status != 200 || len(list.Products) != 5 {
		t.Fatalf("all products: %d %s", r.Status, r.Body)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "limit=-1", "limit=99999999999999999999", "after=a%2Fb", "after=%00", "after=%C3%A9"} {
		wantError(t, e.Do(t, "GET", "/v1/products?"+q, ""), 400, "invalid_request")
	}

	// Restock.
	restock := func(id, body string, header ...string) *apitest.Response {
		return e.Do(t, "POST", "/v1/products/"+id+"/restock", body, header...)
	}
	r = restock("p1", `{"quantity":5}`, admin...)
	r.JSON(t, &p)
	if r.Status != 200 || p.Stock != 15 {
		t.Fatalf("restock p1 by 5: %d %s", r.Status, r.Body)
	}
	wantError(t, restock("p1", `{"quantity":5}`), 401, "unauthorized")
	wantError(t, restock("p1", `{"quantity":5}`, "Authorization", "Bearer wrong"), 401, "unauthorized")
	wantError(t, restock("nope", `{"quantity":5}`, admin...), 404, "not_found")
	wantError(t, restock("a%2Fb", `{"quantity":5}`, admin...), 404, "not_found")
	for _, body := range []string{`{}`, `{"quantity":0}`, `{"quantity":-5}`, `{"quantity":"5"}`, `{"quantity":1.5}`,
		`{"quantity":5,"quantity":5}`, `{"Quantity":5}`, `{"quantity":5} {}`, `null`, ``,
		fmt.Sprintf(`{"quantity":%d}`, sale.MaxStock)} {
		wantError(t, restock("p1", body, admin...), 400, "invalid_request")
	}
	r = e.Do(t, "GET", "/v1/products/p1", "")
	r.JSON(t, &p)
	if p.Stock != 15 {
		t.Fatalf("stock after refused restocks = %d, want 15", p.Stock)
	}
	// With an Idempotency-Key, a restock sent again adds nothing.
	keyed := append(append([]string{}, admin...), "Idempotency-Key", "restock-7")
	for i, want := range []string{"", "true"} {
		r = restock("p1", `{"quantity":7}`, keyed...)
		r.JSON(t, &p)
		if r.Status != 200 || p.Stock != 22 || r.Header.Get("Idempotent-Replayed") != want {
			t.Fatalf("keyed restock, send %d: %d %s, Idempotent-Replayed %q; want 200, stock 22, %q", i+1, r.Status, r.Body, r.Header.Get("Idempotent-Replayed"), want)
		}
	}
	wantError(t, restock("p1", `{"quantity":8}`, keyed...), 422, "idempotency_mismatch")
	wantError(t, restock("p1", `{"quantity":8}`, append(append([]string{}, admin...), "Idempotency-Key", "bad key")...), 400, "invalid_request")

	// The queue's counts are admin-only.
	wantError(t, e.Do(t, "GET", "/v1/queue", ""), 401, "unauthorized")
	wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"u","quantity":1}`))
	var st struct {
		Queue   string `json:"queue"`
		Pending int    `json:"pending"`
		Size    int    `json:"size"`
	}
	r = e.Do(t, "GET", "/v1/queue", "", admin...)
	r.JSON(t, &st)
	if r.Status != 200 || st.Queue != e.Queue || st.Pending != 1 || st.Size != 1 {
		t.Fatalf("queue stats: %d %s", r.Status, r.Body)
	}
}

func TestNoAdminTokenRefusesEveryAdminCall(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, &apitest.Options{NoAdminToken: true})
	e.CreateProduct(t, "p1", 1, 0)
	for _, auth := range [][]string{nil, {"Authorization", "Bearer "}, {"Authorization", "Bearer"}, {"Authorization", "Bearer x"}, {"Authorization", ""}} {
		wantError(t, e.Do(t, "POST", "/v1/products", `{"id":"x","name":"x","stock":1}`, auth...), 401, "unauthorized")
		wantError(t, e.Do(t, "POST", "/v1/products/p1/restock", `{"quantity":1}`, auth...), 401, "unauthorized")
		wantError(t, e.Do(t, "GET", "/v1/queue", "", auth...), 401, "unauthorized")
	}
	// Public reads still work.
	if r := e.Do(t, "GET", "/v1/products/p1", ""); r.Status != 200 {
		t.Fatalf("GET product: %d %s", r.Status, r.Body)
	}
}

// Product calls answer 503 within sale.Options.ProductTimeout when
// PostgreSQL hangs rather than fails: a table locked (a migration) or a
// product row held by a stuck transaction kept them waiting until the lock
// went, with no answer. A restock cut at the bound adds nothing: sent again
// with its key once the row is free, it adds its units once and takes
// orders.
func TestProductCallsAnswer503WhenPostgreSQLHangs(t *testing.T) {
	t.Parallel()
	const timeout = 250 * time.Millisecond
	e := apitest.New(t, &apitest.Options{Sale: &saletest.Options{ProductTimeout: timeout}})
	// Created under the service: it has not seen them, so an order checks
	// its product in PostgreSQL.
	e.CreateProduct(t, "p1", 5, 0)
	e.CreateProduct(t, "gone", 0, 0)
	e.MarkSoldOut(t, "gone")
	admin := apitest.Admin()
	// Slack for a loaded machine (a restock waits for two bounds and
	// Settle), and under the default bound of 5s.
	const within = 3 * time.Second

	_, release := testenv.HoldLock(t, e.DatabaseURL, `LOCK TABLE products IN ACCESS EXCLUSIVE MODE`)
	for _, c := range []struct {
		method, target, body string
		header               []string
	}{
		{"GET", "/v1/products", "", nil},
		{"GET", "/v1/products/p1", "", nil},
		{"POST", "/v1/orders", `{"product_id":"p1","user_id":"u","quantity":1}`, nil},
		{"POST", "/v1/products", `{"id":"p2","name":"P","stock":1}`, admin},
		{"POST", "/v1/products/p1/restock", `{"quantity":1}`, admin},
	} {
		wantUnavailableWithin(t, e, within, release, c.method, c.target, c.body, c.header...)
	}
	release()

	keyed := append(append([]string{}, admin...), "Idempotency-Key", "restock-1")
	_, release = testenv.HoldLock(t, e.DatabaseURL, `SELECT 1 FROM products WHERE id = 'gone' FOR UPDATE`)
	wantUnavailableWithin(t, e, within, release, "POST", "/v1/products/gone/restock", `{"quantity":3}`, keyed...)
	release()
	// Sent again until answered: each of its statements has the same
	// 250ms bound, which a loaded machine can pass (a 503, as any cut
	// one). Only a send after such a 503 may be a replay; the units are
	// added once whatever.
	var r *apitest.Response
	cut := 0
	testenv.Eventually(t, 20*time.Second, func() error {
		r = e.Do(t, "POST", "/v1/products/gone/restock", `{"quantity":3}`, keyed...)
		if r.Status == 503 {
			cut++
			return fmt.Errorf("restock sent again after one cut at the bound: %d %s", r.Status, r.Body)
		}
		return nil
	})
	var p productBody
	r.JSON(t, &p)
	if r.Status != 200 || p.Stock != 3 || (cut == 0 && r.Header.Get("Idempotent-Replayed") != "") {
		t.Fatalf("restock sent again after one cut at the bound (and %d more): %d %s, Idempotent-Replayed %q; want 200, stock 3, not a replay",
			cut, r.Status, r.Body, r.Header.Get("Idempotent-Replayed"))
	}
	wantPlaced(t, e.Do(t, "POST", "/v1/orders", `{"product_id":"gone","user_id":"u","quantity":1}`))
}

// wantUnavailableWithin sends a request and wants 503 unavailable, with
// Retry-After, within d. Past d it releases the lock the request waits
// on, to report when it answered then.
func wantUnavailableWithin(t *testing.T, e *apitest.Env, d time.Duration, release func(), method, target, body string, header ...string) {
	t.Helper()
	req := apitest.NewRequest(method, target, body, header...)
	start := time.Now()
	got := make(chan *apitest.Response, 1)
	go func() { got <- e.Send(req) }()
	select {
	case resp := <-got:
		wantError(t, resp, 503, "unavailable")
		if resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s %s: 503 without Retry-After", method, target)
		}
	case <-time.After(d):
		release()
		resp := <-got
		t.Fatalf("%s %s: no answer within %v with PostgreSQL hanging; %d %s after %v, once the lock was released",
			method, target, d, resp.Status, resp.Body, time.Since(start).Round(time.Millisecond))
	}
}

// The bound of a product call must not reach into the request's
// gin.Context after the handler returned: gin reuses it for the next
// request, and the bound's timer, firing as the call gives up, reads it
// (context.WithTimeout on a *gin.Context: removeChild calls its Done,
// which reads c.Request while ServeHTTP writes it for the next request).
// Under -race this is a DATA RACE; without the fix it shows within a few
// dozen requests.
func TestProductTimeoutDoesNotOutliveTheRequest(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, &apitest.Options{Sale: &saletest.Options{ProductTimeout: 2 * time.Millisecond}})
	e.CreateProduct(t, "p1", 5, 0)
	_, release := testenv.HoldLock(t, e.DatabaseURL, `LOCK TABLE products IN ACCESS EXCLUSIVE MODE`)
	defer release()
	for range 200 {
		r := e.Do(t, "GET", "/v1/products/p1", "")
		wantError(t, r, 503, "unavailable")
	}
}

// A restock cut at the bound by a row lock cannot store its generation at
// once either (its clean-up waits on the same lock, with the same bound):
// the API goes on storing it in the background, so that once the lock goes
// a worker's sold-out mark at the stored generation is taken again. Before,
// the generation was never stored: marks were refused, and every order of
// the sold-out product was queued instead of answered 409, until the next
// restock (from a review).
func TestRestockCutByARowLockStoresItsGenerationLater(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, &apitest.Options{Sale: &saletest.Options{ProductTimeout: 250 * time.Millisecond,
		OnFailOpen: func(context.Context, error) {}}})
	e.CreateProduct(t, "gone", 0, 0)
	e.MarkSoldOut(t, "gone")
	_, release := testenv.HoldLock(t, e.DatabaseURL, `SELECT 1 FROM products WHERE id = 'gone' FOR UPDATE`)
	wantUnavailableWithin(t, e, 3*time.Second, release, "POST", "/v1/products/gone/restock", `{"quantity":3}`,
		append(apitest.Admin(), "Idempotency-Key", "k1")...)
	release()
	// A worker that finds it sold out marks it at the stored generation.
	ctx := context.Background()
	testenv.Eventually(t, 10*time.Second, func() error {
		p, err := e.Store.Product(ctx, "gone")
		if err != nil {
			return err
		}
		ok, err := e.Gate.Mark(ctx, "gone", p.RestockGen)
		if err == nil && !ok {
			err = fmt.Errorf("a sold-out mark at the stored generation %d (stock %d) is refused", p.RestockGen, p.Stock)
		}
		return err
	})
}

// A restock of an id outside the id rules is simply not found (404, as the
// description of the id parameter says), with or without an
// Idempotency-Key. With a key, Service.Restock looked the key up in
// PostgreSQL before checking the id: an id with a NUL byte or invalid UTF-8
// reached the query, PostgreSQL refused it (22021, invalid byte sequence),
// and the untranslated driver error became a 500.
func TestKeyedRestockOfAnInvalidIDIsNotFound(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	keyed := append(apitest.Admin(), "Idempotency-Key", "k1")
	for _, id := range []string{"%00", "p%00", "%C3", "%FF%FE", "a%2Fb"} {
		t.Run(id, func(t *testing.T) {
			wantError(t, e.Do(t, "POST", "/v1/products/"+id+"/restock", `{"quantity":5}`, keyed...), 404, "not_found")
		})
	}
}

// GET /v1/products pages by limit, 1-1000, default 100 (README, OpenAPI):
// both ends of the range are accepted, and without a limit a page is 100
// products, not all of them.
func TestListProductsLimit(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	for i := range 101 {
		e.CreateProduct(t, fmt.Sprintf("p%03d", i), 1, 0)
	}
	for _, tc := range []struct {
		query       string
		n           int
		first, last string
	}{
		{"", 100, "p000", "p099"},
		{"?limit=1", 1, "p000", "p000"},
		{"?limit=1000", 101, "p000", "p100"},
		{"?after=p099", 1, "p100", "p100"},
	} {
		var list struct {
			Products []productBody `json:"products"`
		}
		r := e.Do(t, "GET", "/v1/products"+tc.query, "")
		if r.Status != 200 {
			t.Errorf("GET /v1/products%s: %d %s; want 200", tc.query, r.Status, r.Body)
			continue
		}
		r.JSON(t, &list)
		if n := len(list.Products); n != tc.n || list.Products[0].ID != tc.first || list.Products[n-1].ID != tc.last {
			t.Errorf("GET /v1/products%s: %d products; want %d, %s to %s", tc.query, n, tc.n, tc.first, tc.last)
		}
	}
}
