package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// shopAPI is a small in-memory stand-in for flashsale's HTTP API (the
// endpoints loadtest calls), which decides each order as it is placed. With
// oversell set it sells whatever it is asked for, stock or not: a planted
// bug loadtest must find. It doubles our own HTTP API only; loadtest's own
// tests judge its verifier, this one the command's exit status.
type shopAPI struct {
	token    string
	oversell bool

	mu       sync.Mutex
	products map[string]*shopProduct
	orders   map[string]map[string]any // order id → its view
	keys     map[string]string         // user + "\x00" + Idempotency-Key → order id
}

type shopProduct struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Stock        int64  `json:"stock"`
	Sold         int64  `json:"sold"`
	PerUserLimit int    `json:"per_user_limit"`
}

func (s *shopAPI) serve(t *testing.T) string {
	t.Helper()
	s.products, s.orders, s.keys = map[string]*shopProduct{}, map[string]map[string]any{}, map[string]string{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/products", s.createProduct)
	mux.HandleFunc("GET /v1/products/{id}", s.getProduct)
	mux.HandleFunc("POST /v1/orders", s.createOrder)
	mux.HandleFunc("GET /v1/orders/{id}", s.getOrder)
	mux.HandleFunc("GET /v1/queue", func(w http.ResponseWriter, _ *http.Request) {
		shopJSON(w, http.StatusOK, map[string]any{"queue": "orders", "size": 0, "pending": 0})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func shopJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func shopError(w http.ResponseWriter, status int, code string) {
	shopJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": code}})
}

func (s *shopAPI) createProduct(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+s.token {
		shopError(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	var p shopProduct
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p.ID == "" || p.Stock < 0 {
		shopError(w, http.StatusBadRequest, "bad_request")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.products[p.ID]; ok {
		shopError(w, http.StatusConflict, "product_exists")
		return
	}
	s.products[p.ID] = &p
	shopJSON(w, http.StatusCreated, p)
}

func (s *shopAPI) getProduct(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.products[r.PathValue("id")]
	if !ok {
		shopError(w, http.StatusNotFound, "not_found")
		return
	}
	shopJSON(w, http.StatusOK, p)
}

func (s *shopAPI) createOrder(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ProductID string `json:"product_id"`
		UserID    string `json:"user_id"`
		Quantity  int    `json:"quantity"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.UserID == "" || body.Quantity < 1 {
		shopError(w, http.StatusBadRequest, "bad_request")
		return
	}
	key := body.UserID + "\x00" + r.Header.Get("Idempotency-Key")
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.products[body.ProductID]
	if !ok {
		shopError(w, http.StatusNotFound, "not_found")
		return
	}
	id, seen := s.keys[key]
	if !seen {
		id = "ord-" + strconv.Itoa(len(s.orders)+1)
		status, q := "sold_out", int64(body.Quantity)
		if p.Stock >= q || s.oversell {
			p.Stock -= q
			p.Sold += q
			status = "succeeded"
		}
		s.keys[key] = id
		s.orders[id] = map[string]any{
			"order_id": id, "product_id": body.ProductID, "user_id": body.UserID, "quantity": body.Quantity,
			"status": status, "reason": "", "updated_at": time.Now().UTC(),
		}
	}
	w.Header().Set("Location", "/v1/orders/"+id)
	shopJSON(w, http.StatusAccepted, map[string]string{"order_id": id, "status": "queued"})
}

func (s *shopAPI) getOrder(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[r.PathValue("id")]
	if !ok {
		shopError(w, http.StatusNotFound, "not_found")
		return
	}
	shopJSON(w, http.StatusOK, o)
}

// flashsale loadtest exits 1 when the run violates an invariant, and 0
// when it holds them all: a script or CI step reads a failed run from the
// exit status alone. Before, nothing here checked that status: a run that
// found an oversell could have exited 0 unnoticed. The same stand-in API
// sells within its stock (exit 0) or past it (exit 1, an oversell).
func TestLoadtestExitStatusSaysIfTheInvariantsHeld(t *testing.T) {
	t.Parallel()
	const token = "a-long-enough-admin-token"
	for _, tc := range []struct {
		name     string
		oversell bool
		code     int
	}{
		{"stock kept", false, 0},
		{"oversold", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			api := (&shopAPI{token: token, oversell: tc.oversell}).serve(t)
			var stdout, stderr strings.Builder
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			code := run(ctx, []string{"loadtest", "-api", api, "-admin-token", token, "-orders", "20", "-stock", "5",
				"-concurrency", "4", "-quiet", "-loopback-only", "-run-id", "exit-" + strconv.FormatBool(tc.oversell)}, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("loadtest against an API whose stock is %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.name, code, tc.code, stdout.String(), stderr.String())
			}
			if violated := strings.Contains(stderr.String(), "invariants violated"); violated != tc.oversell {
				t.Errorf("stderr says invariants violated: %v, want %v:\n%s", violated, tc.oversell, stderr.String())
			}
			if tc.oversell && !strings.Contains(stdout.String(), "oversell") {
				t.Errorf("the report does not name the oversell:\n%s", stdout.String())
			}
		})
	}
}
