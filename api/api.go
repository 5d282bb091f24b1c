// Package api is the HTTP surface of flashsale: it binds and validates
// requests, calls the sale service, and maps its errors to HTTP. Business
// rules live in package sale and below.
//
// Every error answer has the body {"error":{"code":"...","message":"..."}}.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/sale"
)

// Service is what the API needs from the sale service.
type Service interface {
	CreateProduct(ctx context.Context, p inventory.NewProduct) (inventory.Product, error)
	Product(ctx context.Context, id string) (inventory.Product, error)
	Products(ctx context.Context, after string, limit int) ([]inventory.Product, error)
	Restock(ctx context.Context, id string, quantity int64, key string) (p inventory.Product, replay bool, err error)
	PlaceOrder(ctx context.Context, r sale.PlaceOrderRequest) (sale.Placed, error)
	Order(ctx context.Context, id string) (sale.OrderView, error)
	WaitOrder(ctx context.Context, id string, wait time.Duration) (sale.OrderView, error)
	QueueStats(ctx context.Context) (queue.Stats, error)
}

// DefaultBodyLimit is the largest request body accepted, in bytes.
const DefaultBodyLimit = 4 << 10

// Config configures the HTTP handler. Zero fields take the defaults.
type Config struct {
	// AdminToken guards the admin endpoints (Authorization: Bearer <token>);
	// empty refuses every admin call.
	AdminToken string
	// BodyLimit is the largest accepted body; default DefaultBodyLimit.
	BodyLimit int64
	// Logger receives access and error logs; default slog.Default().
	Logger *slog.Logger
	// Registerer receives the HTTP metrics; nil = none.
	Registerer prometheus.Registerer
	// ReadyChecks are run by /readyz; any error answers 503.
	ReadyChecks map[string]func(context.Context) error
	// Monitor, if set, is served under MonitorPath+"/" to admins (bearer
	// token or admin session cookie), GET requests only: the queue monitor.
	Monitor http.Handler
	// Metrics, if set, is served at GET /metrics to admins (bearer token,
	// as a Prometheus scrape sends it): the Prometheus exposition.
	Metrics http.Handler
	// MaxWait caps the ?wait= of GET /v1/orders/{id}; default and at most
	// sale.MaxWait.
	MaxWait time.Duration
}

type server struct {
	svc       Service
	cfg       Config
	log       *slog.Logger
	adminHash [sha256.Size]byte
}

// New returns the HTTP handler of the v1 API.
func New(svc Service, cfg Config) (*gin.Engine, error) {
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = DefaultBodyLimit
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxWait <= 0 || cfg.MaxWait > sale.MaxWait {
		cfg.MaxWait = sale.MaxWait
	}
	s := &server{svc: svc, cfg: cfg, log: cfg.Logger, adminHash: sha256.Sum256([]byte(cfg.AdminToken))}
	r := gin.New()
	// Trust no proxy's X-Forwarded-For: the "remote" in the access log is
	// the peer's address, not something a client can write.
	if err := r.SetTrustedProxies(nil); err != nil {
		return nil, err
	}
	r.HandleMethodNotAllowed = true
	// Paths are exact: /v1/orders/ is 404 like any other unknown path, in
	// the error body and through the middleware (request id, nosniff,
	// access log, metrics). gin's redirects to the path without (or with)
	// the slash were written before any middleware ran, and a 307 of a POST
	// makes the client send its order twice to find the documented path.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.ContextWithFallback = true
	mw, err := newMetricsMiddleware(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r.Use(noSniff, requestID(), s.accessLog(), mw, s.recovery(), s.limitBody())
	r.NoRoute(func(c *gin.Context) { abort(c, http.StatusNotFound, "not_found", "no such endpoint") })
	r.NoMethod(func(c *gin.Context) {
		abort(c, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this endpoint")
	})

	get(r, "/healthz", s.healthz)
	get(r, "/readyz", gin.WrapH(Ready(s.cfg.ReadyChecks, s.log)))
	v1 := r.Group("/v1")
	v1.POST("/products", s.admin, s.createProduct)
	get(v1, "/products", s.listProducts)
	get(v1, "/products/:id", s.getProduct)
	v1.POST("/products/:id/restock", s.admin, s.restock)
	v1.POST("/orders", s.placeOrder)
	get(v1, "/orders/:id", s.getOrder)
	get(v1, "/queue", s.admin, s.queueStats)
	if cfg.Metrics != nil {
		get(r, "/metrics", s.admin, gin.WrapH(cfg.Metrics))
	}
	if err := s.routeUI(r); err != nil {
		return nil, err
	}
	return r, nil
}

// get routes a GET and a HEAD request for path to handlers. HTTP's HEAD is
// a GET without the body (RFC 9110 §9.3.2: every general-purpose server
// must support GET and HEAD), which health probes, link checkers and
// caches send; gin, unlike net/http's ServeMux, routes a HEAD only where a
// HEAD route is registered, and answered 405 to it on every path. The
// handlers run as for a GET (status and headers are the same), and
// net/http's server drops the body they write for a HEAD request.
func get(r gin.IRoutes, path string, handlers ...gin.HandlerFunc) {
	r.GET(path, handlers...)
	r.HEAD(path, handlers...)
}

// errorBody is the body of every error answer.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func abort(c *gin.Context, status int, code, msg string) {
	c.AbortWithStatusJSON(status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}

// fail maps a service error to its HTTP answer.
func (s *server) fail(c *gin.Context, err error) {
	switch {
	case c.Request.Context().Err() != nil:
		// The client went away or the server is shutting down: nobody is
		// waiting for an error log about it.
		s.log.DebugContext(c, "request cancelled", "err", err)
		c.Header("Retry-After", "1")
		abort(c, http.StatusServiceUnavailable, "unavailable", "the request was cancelled")
	case errors.Is(err, sale.ErrRateLimited):
		wait := time.Second
		var rl *sale.RateLimitedError
		if errors.As(err, &rl) {
			wait = rl.RetryAfter
		}
		c.Header("Retry-After", retryAfter(wait))
		abort(c, http.StatusTooManyRequests, "rate_limited", "too many orders from this user; retry after Retry-After seconds")
	case errors.Is(err, sale.ErrInvalid):
		abort(c, http.StatusBadRequest, "invalid_request", strings.TrimPrefix(err.Error(), sale.ErrInvalid.Error()+": "))
	case errors.Is(err, sale.ErrUnknownProduct):
		abort(c, http.StatusNotFound, "product_not_found", "no product with this id")
	case errors.Is(err, sale.ErrNotFound):
		abort(c, http.StatusNotFound, "not_found", "not found")
	case errors.Is(err, sale.ErrProductExists):
		abort(c, http.StatusConflict, "product_exists", "a product with this id exists")
	case errors.Is(err, sale.ErrSoldOut):
		abort(c, http.StatusConflict, "sold_out", "the product is sold out")
	case errors.Is(err, sale.ErrIdempotencyMismatch):
		abort(c, http.StatusUnprocessableEntity, "idempotency_mismatch", "this Idempotency-Key was used with a different request")
	case errors.Is(err, sale.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		s.log.WarnContext(c, "dependency unavailable", "err", err)
		c.Header("Retry-After", "1")
		abort(c, http.StatusServiceUnavailable, "unavailable", "the service is temporarily unavailable; retry shortly")
	default:
		s.log.ErrorContext(c, "request failed", "err", err)
		abort(c, http.StatusInternalServerError, "internal", "internal error")
	}
}

// retryAfter renders a Retry-After header: whole seconds, rounded up, at
// least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(int64((d+time.Second-1)/time.Second), 1), 10)
}

// admin refuses the request unless it carries the admin bearer token. The
// scheme is matched ignoring case (RFC 9110); the tokens are compared as
// SHA-256 digests in constant time, so neither their content nor their
// length shows in the timing.
func (s *server) admin(c *gin.Context) {
	if s.cfg.AdminToken == "" {
		abort(c, http.StatusUnauthorized, "unauthorized", "admin endpoints are disabled (no admin token configured)")
		return
	}
	if !bearerMatches(c.Request, s.adminHash) {
		c.Header("WWW-Authenticate", `Bearer realm="flashsale"`)
		abort(c, http.StatusUnauthorized, "unauthorized", "missing or wrong admin token")
		return
	}
	c.Header("Cache-Control", "no-store") // admin answers stay out of caches
	c.Next()
}

// noSniff tells browsers to take every answer as the type it says it is.
func noSniff(c *gin.Context) {
	c.Header("X-Content-Type-Options", "nosniff")
	c.Next()
}

// bearerMatches reports whether r carries "Authorization: Bearer <token>"
// whose SHA-256 is want, compared in constant time (digests, so the token's
// length does not show in the timing either).
func bearerMatches(r *http.Request, want [sha256.Size]byte) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	// RFC 9110 lets one or more spaces follow the scheme.
	token = strings.TrimLeft(token, " ")
	got := sha256.Sum256([]byte(token))
	return ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// AdminOnly wraps h so that it answers only requests carrying the admin
// bearer token, like the API's admin endpoints; with no token it refuses
// every request. The worker's metrics listener uses it.
func AdminOnly(token string, h http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" || !bearerMatches(r, want) {
			msg := "missing or wrong admin token"
			if token == "" {
				msg = "admin endpoints are disabled (no admin token configured)"
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="flashsale"`)
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(errorBody{Error: errorDetail{Code: "unauthorized", Message: msg}})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// limitBody caps request bodies: a declared Content-Length over the limit
// is 413 at once; a body that turns out longer (chunked, or a wrong length)
// fails to read, and decodeJSON answers 413.
func (s *server) limitBody() gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.ContentLength > s.cfg.BodyLimit {
			rerr := tooLarge(s.cfg.BodyLimit)
			abort(c, rerr.status, rerr.code, rerr.message)
			return
		}
		if c.Request.Body != nil {
			c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.BodyLimit)
		}
		c.Next()
	}
}

func (s *server) healthz(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) }

// Ready answers a readiness probe: 200 {"status":"ok","checks":{...}} when
// every check passes, else 503 with Retry-After and each failed check
// "unavailable". The checks run side by side, each with the whole 2s: a
// slow one cannot use up another's time and have it reported unavailable.
// A failed check is logged on log, if not nil (a warning; a panic, which
// counts as a failure, at error level). The API serves it at /readyz; a worker serves
// it on its metrics listener.
func Ready(checks map[string]func(context.Context) error, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		results := map[string]string{}
		ok := true
		var mu sync.Mutex
		var wg sync.WaitGroup
		for name, check := range checks {
			wg.Go(func() {
				err := runCheck(ctx, log, name, check)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					ok = false
					results[name] = "unavailable"
				} else {
					results[name] = "ok"
				}
			})
		}
		wg.Wait()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		status, body := http.StatusOK, map[string]any{"status": "ok", "checks": results}
		if !ok {
			w.Header().Set("Retry-After", "1")
			status, body["status"] = http.StatusServiceUnavailable, "unavailable"
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// runCheck runs one readiness check and logs its failure. A check that
// panics has failed: its goroutine is not the handler's, which the
// recovery middleware guards, so the panic would end the process; raised
// again in the handler, it made /readyz a 500 without the other checks'
// results. It is logged at error level, with the stack where it panicked,
// as the middleware logs a handler's panic. ctx carries the request's log
// attributes (its id).
func runCheck(ctx context.Context, log *slog.Logger, name string, check func(context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			log.ErrorContext(ctx, "readiness check panicked", "check", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = fmt.Errorf("readiness check %q panicked: %v", name, v)
		}
	}()
	if err := check(ctx); err != nil {
		log.WarnContext(ctx, "readiness check failed", "check", name, "err", err)
		return err
	}
	return nil
}
