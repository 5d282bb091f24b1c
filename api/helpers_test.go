package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/sale/saletest"
	"github.com/flashsale/flashsale/soldout"
)

const testToken = "test-admin-token"

// testDeps are the real services behind a test's API: a fresh database, and
// a queue and key prefix of the test's own on the shared Redis.
type testDeps struct {
	store   *inventory.Store
	gate    *soldout.Gate
	connOpt asynq.RedisConnOpt
	queue   string
}

// newService wires a real sale.Service (see saletest) and returns what the
// tests reach under it.
func newService(t *testing.T) (*sale.Service, testDeps) {
	t.Helper()
	return newServiceOn(t, "")
}

// newServiceOn is newService on the Redis at redisURL (empty: the shared
// one).
func newServiceOn(t *testing.T, redisURL string) (*sale.Service, testDeps) {
	t.Helper()
	e := saletest.New(t, &saletest.Options{RedisURL: redisURL})
	if redisURL == "" {
		redisURL = testenv.RedisURL()
	}
	connOpt, err := queue.ParseRedisURL(redisURL, 8)
	if err != nil {
		t.Fatal(err)
	}
	return e.Service, testDeps{store: e.Store, gate: e.Gate, connOpt: connOpt, queue: e.Queue}
}

// newHandler builds the API on svc with cfg (admin token testToken unless
// cfg sets one).
func newHandler(t *testing.T, svc Service, cfg Config) *gin.Engine {
	t.Helper()
	if cfg.AdminToken == "" {
		cfg.AdminToken = testToken
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := New(svc, cfg)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	return h
}

// request is one HTTP call in a test.
type request struct {
	method, path, body string
	header             map[string]string
}

func do(t *testing.T, h http.Handler, r request) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, r.method, r.path, body)
	if r.body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}
