package api

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/internal/logging"
)

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// requestID takes the caller's X-Request-ID when it is sane, or makes one,
// returns it in X-Request-ID, and puts it in the context's log attributes.
func requestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader("X-Request-ID")
		if !requestIDPattern.MatchString(id) {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			id = hex.EncodeToString(b)
		}
		c.Header("X-Request-ID", id)
		c.Request = c.Request.WithContext(logging.With(c.Request.Context(), slog.String("request_id", id)))
		c.Next()
	}
}

// accessLog logs every request ("http request": method, route, status,
// duration_ms, remote): 5xx at error level, the rest at debug level (a
// flash sale makes thousands of requests a second; set
// FLASHSALE_LOG_LEVEL=debug to see them).
func (s *server) accessLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		status := c.Writer.Status()
		level := slog.LevelDebug
		if status >= 500 {
			level = slog.LevelError
		}
		if !s.log.Enabled(c, level) {
			return
		}
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		s.log.LogAttrs(c, level, "http request",
			slog.String("method", c.Request.Method), slog.String("route", route),
			slog.Int("status", status), slog.Float64("duration_ms", milliseconds(time.Since(start))),
			slog.String("remote", c.ClientIP()))
	}
}

// milliseconds is d in milliseconds, to the microsecond: what operators
// read and aggregate (slog.Duration writes nanoseconds in JSON).
func milliseconds(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// recovery turns a panic into a logged 500 with the JSON error body.
func (s *server) recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.ErrorContext(c, "panic in handler", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if !c.Writer.Written() {
					abort(c, http.StatusInternalServerError, "internal", "internal error")
				} else {
					c.Abort()
				}
			}
		}()
		c.Next()
	}
}

// newMetricsMiddleware counts requests by route, method and status code,
// with latency histograms.
func newMetricsMiddleware(reg prometheus.Registerer) (gin.HandlerFunc, error) {
	if reg == nil {
		return func(c *gin.Context) { c.Next() }, nil
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashsale_http_requests_total",
		Help: "HTTP requests by route, method and status code.",
	}, []string{"route", "method", "code"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flashsale_http_request_duration_seconds",
		Help:    "HTTP request latency by route and method.",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"route", "method"})
	for _, c := range []prometheus.Collector{requests, latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		method := metricMethod(c.Request.Method)
		requests.WithLabelValues(route, method, strconv.Itoa(c.Writer.Status())).Inc()
		latency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
	}, nil
}

// metricMethod bounds the method label: a client may send any token as a
// method, and each new label value would be a new time series kept forever.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}
