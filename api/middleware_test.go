package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/api"
	"github.com/flashsale/flashsale/api/apitest"
	"github.com/flashsale/flashsale/sale"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// bare returns the handler with no service under it, for tests of what
// happens before a handler calls the service; log collects its logs.
func bare(t *testing.T, cfg api.Config) (*gin.Engine, *apitest.LogBuffer) {
	t.Helper()
	log := &apitest.LogBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h, err := api.New(nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, log
}

func get(t *testing.T, client *http.Client, url string) (*http.Response, []byte, error) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestPanicBecomesALogged500(t *testing.T) {
	t.Parallel()
	h, log := bare(t, api.Config{})
	// Routes added to the engine after New go through its middleware, as
	// cmd/flashsale's /metrics does.
	h.GET("/test/panic", func(c *gin.Context) { panic("boom: test panic") })
	h.GET("/test/panic-after-write", func(c *gin.Context) {
		c.Writer.WriteHeader(http.StatusOK)
		_, _ = c.Writer.WriteString(`{"partial":`)
		c.Writer.Flush()
		panic("boom after write")
	})
	h.GET("/test/abort", func(c *gin.Context) { panic(http.ErrAbortHandler) })
	srv := httptest.NewServer(h)
	defer srv.Close()
	// net/http's own recovery logs a panic that reaches it; keep it quiet.
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	client := srv.Client()

	for range 3 {
		resp, body, err := get(t, client, srv.URL+"/test/panic")
		if err != nil {
			t.Fatal(err)
		}
		r := &apitest.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
		wantError(t, r, 500, "internal")
		if strings.Contains(string(body), "boom") {
			t.Fatalf("the panic value reached the client: %s", body)
		}
		// The server still serves.
		if resp, body, err := get(t, client, srv.URL+"/healthz"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("/healthz after a panic: %v %s", err, body)
		}
	}
	logs := log.String()
	if !strings.Contains(logs, `"msg":"panic in handler"`) || !strings.Contains(logs, "boom: test panic") ||
		!strings.Contains(logs, `"level":"ERROR"`) || !strings.Contains(logs, `"stack":`) {
		t.Fatalf("the panic was not logged at error level with its stack: %s", logs)
	}
	var access bool
	for line := range strings.SplitSeq(logs, "\n") {
		var rec struct {
			Level  string `json:"level"`
			Msg    string `json:"msg"`
			Status int    `json:"status"`
			Route  string `json:"route"`
		}
		// A 5xx is logged at error level, where operators look.
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http request" && rec.Status == 500 && rec.Route == "/test/panic" && rec.Level == "ERROR" {
			access = true
		}
	}
	if !access {
		t.Fatalf("the access log has no 500 at error level for the panic: %s", logs)
	}

	// A panic after the answer started cannot change its status: the
	// client gets a truncated answer, and the server goes on.
	resp, body, _ := get(t, client, srv.URL+"/test/panic-after-write")
	if resp == nil || resp.StatusCode != 200 || json.Valid(body) {
		t.Fatalf("panic after write: %v %s; want a truncated 200", resp, body)
	}
	// http.ErrAbortHandler aborts the connection on purpose.
	if _, _, err := get(t, client, srv.URL+"/test/abort"); err == nil {
		t.Fatal("ErrAbortHandler: the request succeeded, want the connection aborted")
	}
	if resp, body, err := get(t, client, srv.URL+"/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz after the panics: %v %s", err, body)
	}
}

// A readiness check that panics counts as that check failing: /readyz
// answers 503 with every check's result, the panicking one "unavailable",
// and logs the panic at error level with the check's name and where it
// panicked; the server goes on. The checks run on goroutines of their own,
// which the recovery middleware does not guard: the panic once ended the
// process, and then was raised again in the handler, a 500 whose body lost
// the other checks' results.
func TestPanicInAReadinessCheckCountsAsItsFailure(t *testing.T) {
	t.Parallel()
	h, log := bare(t, api.Config{ReadyChecks: map[string]func(context.Context) error{
		"fine":  func(context.Context) error { return nil },
		"flaky": func(context.Context) error { panic("boom: test check panic") },
		"down":  func(context.Context) error { return errors.New("test check down") },
	}})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	var body struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("/readyz with a check panicking: %d %s: %v", w.Code, w.Body, err)
	}
	want := map[string]string{"fine": "ok", "flaky": "unavailable", "down": "unavailable"}
	if w.Code != 503 || body.Status != "unavailable" || !maps.Equal(body.Checks, want) {
		t.Fatalf("/readyz with a check panicking: %d %s; want 503, status unavailable, checks %v", w.Code, w.Body, want)
	}
	if w.Header().Get("Retry-After") == "" || w.Header().Get("X-Request-ID") == "" {
		t.Errorf("the 503 lacks Retry-After or the middleware's headers: %v", w.Header())
	}
	logs := log.String()
	if !strings.Contains(logs, `"level":"ERROR","msg":"readiness check panicked","check":"flaky","panic":"boom: test check panic"`) ||
		!strings.Contains(logs, "TestPanicInAReadinessCheckCountsAsItsFailure") {
		t.Fatalf("the panic was not logged at error level with its check and where it panicked: %s", logs)
	}
	if !strings.Contains(logs, `"msg":"http request","method":"GET","route":"/readyz","status":503`) {
		t.Fatalf("the access log has no 503 for /readyz: %s", logs)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
	if w.Code != 200 {
		t.Fatalf("/healthz after the panic: %d %s", w.Code, w.Body)
	}
}

func TestUnmatchedRequestsGetJSONErrors(t *testing.T) {
	t.Parallel()
	h, _ := bare(t, api.Config{})
	tests := []struct {
		method, target string
		status         int
		code           string
	}{
		{"GET", "/nope", 404, "not_found"},
		{"GET", "/v1", 404, "not_found"},
		{"PUT", "/v1/orders", 405, "method_not_allowed"},
		{"HEAD", "/v1/orders", 405, "method_not_allowed"},
		{"OPTIONS", "/v1/products", 405, "method_not_allowed"},
		{"PATCH", "/v1/products/p1", 405, "method_not_allowed"},
		{"GET", "/v1/products/p1/restock", 405, "method_not_allowed"},
		{"POST", "/v1/products/p1/restock/x", 404, "not_found"},
		// Bodies over the limit are refused before any handler runs.
		{"POST", "/v1/orders", 413, "payload_too_large"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.target, strings.NewReader("{}"))
		if tt.status == 413 {
			req.ContentLength = api.DefaultBodyLimit + 1
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		r := &apitest.Response{Status: w.Code, Header: w.Result().Header, Body: w.Body.Bytes()}
		if r.Status != tt.status {
			t.Errorf("%s %s: status %d, want %d; %s", tt.method, tt.target, r.Status, tt.status, r.Body)
			continue
		}
		if tt.method == "HEAD" {
			continue // no body
		}
		if code, err := r.CheckError(); err != nil || code != tt.code {
			t.Errorf("%s %s: code %q, %v; want %q", tt.method, tt.target, code, err, tt.code)
		}
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	h, _ := bare(t, api.Config{})
	for in, keep := range map[string]bool{
		"abc-123":                true,
		"":                       false,
		"has space":              false,
		strings.Repeat("a", 65):  false,
		"new\nline":              false,
		`"><script>alert(1)</sc`: false,
	} {
		req := httptest.NewRequest("GET", "/healthz", nil)
		req.Header.Set("X-Request-ID", in)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		got := w.Header().Get("X-Request-ID")
		if keep && got != in || !keep && (got == in || len(got) != 16) {
			t.Errorf("X-Request-ID %q answered as %q", in, got)
		}
	}
}

// The access log gives a request's duration in milliseconds (duration_ms,
// a number), as operators read it; it gave nanoseconds (slog.Duration in
// JSON) under "duration".
func TestAccessLogDurationInMilliseconds(t *testing.T) {
	t.Parallel()
	h, log := bare(t, api.Config{})
	start := time.Now()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
	took := float64(time.Since(start)) / float64(time.Millisecond)
	var rec map[string]any
	if err := json.Unmarshal([]byte(log.String()), &rec); err != nil || rec["msg"] != "http request" {
		t.Fatalf("want one access log line: %v; %s", err, log.String())
	}
	ms, ok := rec["duration_ms"].(float64)
	if !ok || ms <= 0 || ms > took {
		t.Fatalf("duration_ms = %v, want a number of milliseconds within (0, %v]; %s", rec["duration_ms"], took, log.String())
	}
	if _, ok := rec["duration"]; ok {
		t.Fatalf("the line still has duration: %s", log.String())
	}
}

// The access log's remote is the peer's address: no proxy is trusted, so
// a client cannot write it with X-Forwarded-For or X-Real-IP (and hide
// behind another address in the log of a refused sign-in).
func TestAccessLogRemoteIsThePeer(t *testing.T) {
	t.Parallel()
	h, log := bare(t, api.Config{})
	req := httptest.NewRequest("GET", "/healthz", nil)
	req.RemoteAddr = "192.0.2.7:4321"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Real-IP", "203.0.113.10")
	h.ServeHTTP(httptest.NewRecorder(), req)
	var rec map[string]any
	if err := json.Unmarshal([]byte(log.String()), &rec); err != nil || rec["msg"] != "http request" {
		t.Fatalf("want one access log line: %v; %s", err, log.String())
	}
	if rec["remote"] != "192.0.2.7" {
		t.Fatalf("remote = %v, want the peer 192.0.2.7; %s", rec["remote"], log.String())
	}
}

func TestServerTimeoutsAreSet(t *testing.T) {
	t.Parallel()
	srv := api.NewServer(http.NotFoundHandler(), api.ServerOptions{})
	if srv.ReadHeaderTimeout != api.DefaultReadHeaderTimeout || srv.ReadTimeout != api.DefaultReadTimeout ||
		srv.WriteTimeout != api.DefaultWriteTimeout || srv.IdleTimeout != api.DefaultIdleTimeout ||
		srv.MaxHeaderBytes != api.DefaultMaxHeaderBytes || srv.ErrorLog == nil {
		t.Fatalf("defaults: %+v", srv)
	}
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s = %v: no protection against slow clients", name, d)
		}
	}
	if srv.WriteTimeout <= sale.MaxWait {
		t.Errorf("WriteTimeout %v does not outlast the longest long poll (%v)", srv.WriteTimeout, sale.MaxWait)
	}
	// The base context is the one cancelled at shutdown to end long polls.
	type key struct{}
	base := context.WithValue(context.Background(), key{}, "base")
	set := api.NewServer(http.NotFoundHandler(), api.ServerOptions{ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second,
		WriteTimeout: time.Minute, IdleTimeout: 3 * time.Second, MaxHeaderBytes: 1024,
		BaseContext: func(net.Listener) context.Context { return base }})
	if set.ReadHeaderTimeout != time.Second || set.ReadTimeout != 2*time.Second || set.WriteTimeout != time.Minute ||
		set.IdleTimeout != 3*time.Second || set.MaxHeaderBytes != 1024 ||
		set.BaseContext == nil || set.BaseContext(nil) != base {
		t.Fatalf("options not applied: %+v", set)
	}
}

// serve runs srv on a free local port until the test ends.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// closedWithin reads from conn until the server closes it, and fails the
// test unless that happens within limit. It returns what was read.
func closedWithin(t *testing.T, conn net.Conn, limit time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(limit))
	b, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %v", limit)
	}
	return string(b), time.Since(start)
}

func TestSlowClientsAreDisconnected(t *testing.T) {
	t.Parallel()
	h, _ := bare(t, api.Config{})
	const timeout = 300 * time.Millisecond
	srv := api.NewServer(h, api.ServerOptions{ReadHeaderTimeout: timeout, ReadTimeout: 2 * timeout,
		IdleTimeout: timeout, Logger: discardLogger()})
	addr := serve(t, srv)

	t.Run("headers sent slowly", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stop := make(chan struct{})
		defer close(stop)
		go func() { // slowloris: a header line every 50ms, forever
			if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
				return
			}
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := io.WriteString(conn, "X-Slow: 1\r\n"); err != nil {
						return
					}
				}
			}
		}()
		got, d := closedWithin(t, conn, 10*time.Second)
		if strings.HasPrefix(got, "HTTP/1.1 200") {
			t.Fatalf("the slow request was served: %q", got)
		}
		t.Logf("disconnected after %v (read header timeout %v)", d, timeout)
	})

	t.Run("body sent slowly", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			if _, err := io.WriteString(conn, "POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"); err != nil {
				return
			}
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := io.WriteString(conn, " "); err != nil {
						return
					}
				}
			}
		}()
		got, d := closedWithin(t, conn, 10*time.Second)
		// The body read fails at the read timeout: a 400 (or nothing, if
		// the server gave up on the connection first), never a 2xx or 5xx.
		if got != "" && !strings.HasPrefix(got, "HTTP/1.1 400") {
			t.Fatalf("slow body answered %q", got)
		}
		t.Logf("slow body: disconnected after %v with %q", d, firstLine(got))
	})

	t.Run("idle keep-alive connection", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("first request: %v, %v", resp, err)
		}
		// Then say nothing: the server closes the connection.
		closedWithin(t, conn, 10*time.Second)
	})
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

func TestSecretsStayOutOfLogsAndAnswers(t *testing.T) {
	t.Parallel()
	e := apitest.New(t, nil)
	e.CreateProduct(t, "p1", 5, 0)
	const wrong = "wrong-token-d41d8cd9"
	answers := []*apitest.Response{
		e.Do(t, "POST", "/v1/products", `{"id":"x","name":"x","stock":1}`, apitest.Admin()...),
		e.Do(t, "POST", "/v1/products", `{"id":"x","name":"x","stock":1}`, "Authorization", "Bearer "+wrong),
		e.Do(t, "POST", "/v1/products", `{"id":"x","name":"x","stock":1}`, "Authorization", "Bearer "+apitest.AdminToken+"0"),
		e.Do(t, "GET", "/v1/queue", "", "Authorization", "Bearer "+wrong),
		e.Do(t, "GET", "/v1/queue", "", apitest.Admin()...),
		e.Do(t, "POST", "/v1/orders", `{"product_id":"p1","user_id":"u","quantity":1}`, "Authorization", "Bearer "+apitest.AdminToken),
	}
	logs := e.Log.String()
	if logs == "" {
		t.Fatal("nothing was logged: the test would prove nothing")
	}
	for _, secret := range []string{apitest.AdminToken, wrong} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs show %q", secret)
		}
		for _, a := range answers {
			if strings.Contains(string(a.Body), secret) || strings.Contains(a.Header.Get("WWW-Authenticate"), secret) {
				t.Errorf("an answer shows %q: %s", secret, a.Body)
			}
		}
	}
}

func TestMetricsLabelsStayBounded(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	h, _ := bare(t, api.Config{Registerer: reg})
	for i := range 200 {
		req := httptest.NewRequest("GET", fmt.Sprintf("/random/%d", i), nil)
		req.Method = fmt.Sprintf("M%d", i) // any token is a valid method
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if n := len(f.GetMetric()); n > 5 {
			t.Errorf("%s has %d series after 200 requests with made-up methods and paths; want a handful", f.GetName(), n)
		}
	}
}

// The request counter is labelled by route pattern, method and status
// code, and every request is timed under its route and method: what the
// error-rate and latency dashboards read.
func TestMetricsCountByRouteAndCode(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	h, _ := bare(t, api.Config{Registerer: reg})
	for _, target := range []string{"/healthz", "/healthz", "/nope"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", target, nil))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts, timed := map[string]float64{}, map[string]uint64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetName() {
			case "flashsale_http_requests_total":
				counts[labels["route"]+" "+labels["method"]+" "+labels["code"]] += m.GetCounter().GetValue()
			case "flashsale_http_request_duration_seconds":
				timed[labels["route"]+" "+labels["method"]] += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if want := map[string]float64{"/healthz GET 200": 2, "unmatched GET 404": 1}; !maps.Equal(counts, want) {
		t.Errorf("flashsale_http_requests_total = %v, want %v", counts, want)
	}
	if want := map[string]uint64{"/healthz GET": 2, "unmatched GET": 1}; !maps.Equal(timed, want) {
		t.Errorf("flashsale_http_request_duration_seconds counts = %v, want %v", timed, want)
	}
}

// AdminOnly guards a plain handler (the worker's /metrics) like the admin
// endpoints: the right bearer token passes, anything else is 401, and with
// no token configured nothing passes.
func TestAdminOnly(t *testing.T) {
	t.Parallel()
	inner := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	tests := []struct {
		name, token, header string
		want                int
	}{
		{"right token", "s3cret", "Bearer s3cret", http.StatusOK},
		{"scheme in other case", "s3cret", "bearer s3cret", http.StatusOK},
		// RFC 9110's credentials: the scheme, then one or more spaces.
		{"several spaces after the scheme", "s3cret", "Bearer   s3cret", http.StatusOK},
		{"token only", "s3cret", "s3cret", http.StatusUnauthorized},
		{"empty token", "s3cret", "Bearer  ", http.StatusUnauthorized},
		{"wrong token", "s3cret", "Bearer nope", http.StatusUnauthorized},
		{"prefix of the token", "s3cret", "Bearer s3c", http.StatusUnauthorized},
		{"no header", "s3cret", "", http.StatusUnauthorized},
		{"no token configured", "", "Bearer ", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			api.AdminOnly(tc.token, inner).ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("got %d, want %d", rec.Code, tc.want)
			}
			if tc.want == http.StatusUnauthorized && (!strings.Contains(rec.Body.String(), `"code":"unauthorized"`) ||
				!strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json")) {
				t.Errorf("body %q of type %q, want the JSON error", rec.Body.String(), rec.Header().Get("Content-Type"))
			}
			// RFC 9110 §11.6.1: a 401 says which scheme to use.
			if got := rec.Header().Get("WWW-Authenticate"); tc.want == http.StatusUnauthorized && got != `Bearer realm="flashsale"` {
				t.Errorf("WWW-Authenticate %q, want Bearer realm=\"flashsale\"", got)
			}
			// As the API says it: no token configured is not a wrong one.
			if disabled := strings.Contains(rec.Body.String(), "no admin token configured"); disabled != (tc.token == "") {
				t.Errorf("body %q: says admin endpoints are disabled: %v, want %v", rec.Body.String(), disabled, tc.token == "")
			}
		})
	}
}

// A path with a stray trailing slash is an unknown path: 404 in the error
// body, through the middleware as every answer (nosniff, request id,
// access log, metrics). gin answered it with a redirect written before any
// middleware ran, so with none of them (from a review). The monitor's
// address without its slash still leads to it, with its query string,
// through the middleware too.
func TestTrailingSlashGoesThroughTheMiddleware(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	h, log := bare(t, api.Config{Registerer: reg, Monitor: http.NotFoundHandler()})
	tests := []struct {
		method, target string
		status         int
		location       string // of a redirect
	}{
		{"POST", "/v1/orders/", 404, ""},
		{"GET", "/v1/orders/01J0000000000000000000000/", 404, ""},
		{"GET", "/v1/products/", 404, ""},
		{"POST", "/v1/products/p1/restock/", 404, ""},
		{"GET", "/healthz/", 404, ""},
		{"GET", "/monitoring", 301, "/monitoring/"},
		// The query string goes along (it was dropped).
		{"GET", "/monitoring?queue=q%3A1&page=2", 301, "/monitoring/?queue=q%3A1&page=2"},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tt.method, tt.target, strings.NewReader(`{}`)))
		r := &apitest.Response{Status: w.Code, Header: w.Result().Header, Body: w.Body.Bytes()}
		if r.Status != tt.status || r.Header.Get("Location") != tt.location {
			t.Errorf("%s %s: %d to %q, want %d to %q; %s", tt.method, tt.target, r.Status, r.Header.Get("Location"), tt.status, tt.location, r.Body)
			continue
		}
		if code, err := r.CheckError(); tt.status == 404 && (err != nil || code != "not_found") {
			t.Errorf("%s %s: code %q, %v; want not_found", tt.method, tt.target, code, err)
		}
		if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s: X-Content-Type-Options %q, want nosniff", tt.method, tt.target, got)
		}
		if got := r.Header.Get("X-Request-ID"); len(got) != 16 {
			t.Errorf("%s %s: X-Request-ID %q, want one made for it", tt.method, tt.target, got)
		}
	}
	var logged []string
	for line := range strings.SplitSeq(log.String(), "\n") {
		var rec struct {
			Level  string `json:"level"`
			Msg    string `json:"msg"`
			Method string `json:"method"`
			Status int    `json:"status"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http request" {
			logged = append(logged, fmt.Sprint(rec.Method, " ", rec.Status))
			// Below 500 at debug level: a sale's thousands of 4xx
			// answers are no errors of the server.
			if rec.Level != "DEBUG" {
				t.Errorf("access log line %q at level %s, want DEBUG", line, rec.Level)
			}
		}
	}
	var want []string
	for _, tt := range tests {
		want = append(want, fmt.Sprint(tt.method, " ", tt.status))
	}
	if !slices.Equal(logged, want) {
		t.Errorf("access log lines %q, want %q", logged, want)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var counted float64
	for _, f := range families {
		if f.GetName() == "flashsale_http_requests_total" {
			for _, m := range f.GetMetric() {
				counted += m.GetCounter().GetValue()
			}
		}
	}
	if counted != float64(len(tests)) {
		t.Errorf("flashsale_http_requests_total counted %v requests, want %d", counted, len(tests))
	}
}

// Ready with no logger (nil) still answers a failed check, and a panicking
// one, with 503: it logged on the nil logger, and its recovery from the
// check's panic panicked again, taking the process down.
func TestReadyWithoutALogger(t *testing.T) {
	t.Parallel()
	h := api.Ready(map[string]func(context.Context) error{
		"down":   func(context.Context) error { return errors.New("down") },
		"broken": func(context.Context) error { panic("broken") },
	}, nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"down":"unavailable"`) ||
		!strings.Contains(w.Body.String(), `"broken":"unavailable"`) {
		t.Fatalf("Ready(nil logger) with failing checks: %d %s; want 503 naming both", w.Code, w.Body)
	}
}
