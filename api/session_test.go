package api

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynqmon"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
)

func TestSessionValue(t *testing.T) {
	t.Parallel()
	now := time.Now()
	good := sessionValue("tok", now.Add(time.Hour))
	tests := []struct {
		name, token, value string
		want               bool
	}{
		{"valid", "tok", good, true},
		{"other token", "tok2", good, false},
		{"no token configured", "", sessionValue("", now.Add(time.Hour)), false},
		{"expired", "tok", sessionValue("tok", now.Add(-time.Second)), false},
		{"too far ahead", "tok", sessionValue("tok", now.Add(SessionTTL+time.Hour)), false},
		{"tampered expiry", "tok", strings.Replace(good, good[:3], "999", 1), false},
		{"tampered mac", "tok", good[:len(good)-2] + "AA", false},
		{"no dot", "tok", "12345", false},
		{"empty", "tok", "", false},
		{"the token itself", "tok", "tok", false},
	}
	for _, tc := range tests {
		if got := validSession(tc.token, tc.value, now); got != tc.want {
			t.Errorf("%s: validSession(%q) = %v, want %v", tc.name, tc.value, got, tc.want)
		}
	}
	if strings.Contains(good, "tok") {
		t.Errorf("cookie value %q contains the token", good)
	}
}

// signIn posts the sign-in form and returns the answer.
func signIn(t *testing.T, h http.Handler, token, next string) (int, http.Header) {
	t.Helper()
	form := url.Values{"token": {token}, "next": {next}}.Encode()
	rec := do(t, h, request{method: "POST", path: "/login", body: form,
		header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
	return rec.Code, rec.Header()
}

func sessionCookie(t *testing.T, header http.Header) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: header}).Cookies() {
		if c.Name == SessionCookie {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", SessionCookie, header.Values("Set-Cookie"))
	return nil
}

func TestSignInGrantsReadOnlyAdminPages(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t)
	monitor := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("monitor " + r.URL.Path)) })
	h := newHandler(t, svc, Config{Monitor: monitor})

	if code, _ := signIn(t, h, "wrong", "/"); code != http.StatusUnauthorized {
		t.Errorf("sign in with a wrong token: got %d, want 401", code)
	}
	code, header := signIn(t, h, testToken, "/monitoring/")
	if code != http.StatusSeeOther || header.Get("Location") != "/monitoring/" {
		t.Fatalf("sign in: got %d to %q, want 303 to /monitoring/", code, header.Get("Location"))
	}
	c := sessionCookie(t, header)
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != int(SessionTTL/time.Second) {
		t.Errorf("cookie: got %+v, want HttpOnly, SameSite=Strict, Path=/, Max-Age=%d", c, int(SessionTTL/time.Second))
	}
	if strings.Contains(c.Value, testToken) {
		t.Errorf("cookie value %q contains the token", c.Value)
	}
	withCookie := map[string]string{"Cookie": c.Name + "=" + c.Value, "Accept": "application/json"}
	html := map[string]string{"Accept": "text/html,application/xhtml+xml"}

	tests := []struct {
		name string
		req  request
		want int
	}{
		{"dashboard with the cookie", request{method: "GET", path: "/v1/dashboard", header: withCookie}, 200},
		{"monitor with the cookie", request{method: "GET", path: "/monitoring/", header: withCookie}, 200},
		{"monitor API with the cookie", request{method: "GET", path: "/monitoring/api/queues", header: withCookie}, 200},
		{"monitor with the bearer token", request{method: "GET", path: "/monitoring/", header: bearer(testToken)}, 200},
		{"monitor without the slash", request{method: "GET", path: "/monitoring", header: withCookie}, http.StatusMovedPermanently},
		{"monitor, not signed in", request{method: "GET", path: "/monitoring/api/queues"}, 401},
		{"monitor page, not signed in", request{method: "GET", path: "/monitoring/", header: html}, 303},
		{"monitor is read-only", request{method: "POST", path: "/monitoring/api/queues/q:pause", header: withCookie}, 405},
		{"a wrong bearer token beats the cookie", request{method: "GET", path: "/v1/dashboard",
			header: map[string]string{"Cookie": c.Name + "=" + c.Value, "Authorization": "Bearer wrong"}}, 401},
		{"the cookie does not create products", request{method: "POST", path: "/v1/products", header: withCookie,
			body: `{"id":"p","name":"p","stock":1}`}, 401},
		{"the cookie does not read /v1/queue", request{method: "GET", path: "/v1/queue", header: withCookie}, 401},
		{"a forged cookie", request{method: "GET", path: "/v1/dashboard",
			header: map[string]string{"Cookie": SessionCookie + "=" + sessionValue("guess", time.Now().Add(time.Hour))}}, 401},
		{"an expired cookie", request{method: "GET", path: "/v1/dashboard",
			header: map[string]string{"Cookie": SessionCookie + "=" + sessionValue(testToken, time.Now().Add(-time.Minute))}}, 401},
	}
	for _, tc := range tests {
		rec := do(t, h, tc.req)
		if rec.Code != tc.want {
			t.Errorf("%s: %s %s: got %d %s, want %d", tc.name, tc.req.method, tc.req.path, rec.Code, rec.Body, tc.want)
		}
		// RFC 9110 §11.6.1: a 401 says which scheme to use.
		if got := rec.Header().Get("WWW-Authenticate"); tc.want == 401 && got != `Bearer realm="flashsale"` {
			t.Errorf("%s: WWW-Authenticate %q, want Bearer realm=\"flashsale\"", tc.name, got)
		}
		// Admin answers to a session stay out of caches, as to the token.
		if got := rec.Header().Get("Cache-Control"); tc.want == 200 && got != "no-store" {
			t.Errorf("%s: Cache-Control %q, want no-store", tc.name, got)
		}
		if tc.want == http.StatusSeeOther {
			if got := rec.Header().Get("Location"); got != "/login?next=%2Fmonitoring%2F" {
				t.Errorf("%s: redirected to %q, want the sign-in form", tc.name, got)
			}
		}
	}

	rec := do(t, h, request{method: "POST", path: "/logout"})
	// The removal names the cookie's path: one for another path is another
	// cookie, and the session would stay.
	if out := sessionCookie(t, rec.Header()); rec.Code != http.StatusSeeOther || out.MaxAge >= 0 || out.Value != "" || out.Path != c.Path {
		t.Errorf("sign out: got %d with cookie %+v, want 303 and the cookie of path %q removed", rec.Code, out, c.Path)
	}
}

// The session cookie is Secure when the browser reached us over TLS,
// directly or through a proxy that says so (X-Forwarded-Proto), so the
// browser never sends it over plain HTTP; over plain HTTP it cannot be.
func TestSessionCookieSecureBehindTLS(t *testing.T) {
	t.Parallel()
	h := newHandler(t, nil, Config{})
	form := url.Values{"token": {testToken}, "next": {"/"}}.Encode()
	for _, tc := range []struct {
		name, target, proto string
		secure              bool
	}{
		{"plain HTTP", "http://example.com", "", false},
		{"TLS", "https://example.com", "", true},
		{"proxy says https", "http://example.com", "https", true},
		{"proxy says HTTPS", "http://example.com", "HTTPS", true},
		{"proxy says http", "http://example.com", "http", false},
	} {
		for _, path := range []string{"/login", "/logout"} {
			req := httptest.NewRequest("POST", tc.target+path, strings.NewReader(form))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.proto != "" {
				req.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if c := sessionCookie(t, rec.Header()); rec.Code != http.StatusSeeOther || c.Secure != tc.secure {
				t.Errorf("%s: POST %s = %d, cookie Secure %v; want 303, Secure %v", tc.name, path, rec.Code, c.Secure, tc.secure)
			}
		}
	}
}

// A browser behind a proxy that asks for HTTP Basic authentication sends
// "Authorization: Basic ..." with every request to the site, the dashboard's
// fetch of /v1/dashboard included: that is no bearer token, wrong or right,
// so the admin session cookie decides (from a review: any Authorization
// header took the bearer check, so behind such a proxy a signed-in admin
// got 401 on every admin page, and a page request was not even sent to the
// sign-in form).
func TestSessionCookieWithAnotherAuthorizationScheme(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t)
	monitor := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("monitor")) })
	h := newHandler(t, svc, Config{Monitor: monitor})
	_, header := signIn(t, h, testToken, "/")
	c := sessionCookie(t, header)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:proxy-password"))
	for _, tc := range []struct {
		name     string
		path     string
		header   map[string]string
		want     int
		location string
	}{
		{"dashboard data, signed in", "/v1/dashboard", map[string]string{"Authorization": basic, "Cookie": c.Name + "=" + c.Value}, 200, ""},
		{"monitor, signed in", "/monitoring/", map[string]string{"Authorization": basic, "Cookie": c.Name + "=" + c.Value}, 200, ""},
		{"monitor page, not signed in", "/monitoring/", map[string]string{"Authorization": basic, "Accept": "text/html"}, 303, "/login?next=%2Fmonitoring%2F"},
		{"dashboard data, not signed in", "/v1/dashboard", map[string]string{"Authorization": basic}, 401, ""},
		// A bearer token still decides, the cookie notwithstanding.
		{"wrong bearer, lower case", "/v1/dashboard", map[string]string{"Authorization": "bearer wrong", "Cookie": c.Name + "=" + c.Value}, 401, ""},
		{"bearer without a token", "/v1/dashboard", map[string]string{"Authorization": "Bearer", "Cookie": c.Name + "=" + c.Value}, 401, ""},
		{"right bearer, lower case", "/v1/dashboard", map[string]string{"Authorization": "bearer " + testToken}, 200, ""},
		// /v1/queue takes no session: Basic is no admin there.
		{"queue with Basic and the cookie", "/v1/queue", map[string]string{"Authorization": basic, "Cookie": c.Name + "=" + c.Value}, 401, ""},
	} {
		rec := do(t, h, request{method: "GET", path: tc.path, header: tc.header})
		if rec.Code != tc.want || rec.Header().Get("Location") != tc.location {
			t.Errorf("%s: GET %s = %d to %q, want %d to %q; %s", tc.name, tc.path, rec.Code, rec.Header().Get("Location"), tc.want, tc.location, rec.Body)
		}
	}
}

func TestSignInRedirectsOnlyToAdminPages(t *testing.T) {
	t.Parallel()
	h := newHandler(t, nil, Config{})
	for next, want := range map[string]string{
		"/": "/", "/monitoring/": "/monitoring/", "https://evil.example/": "/", "//evil.example": "/",
		"/v1/products": "/", "": "/", `/\evil.example`: "/",
		// A monitor page signed out from: back to it, if its path is plain.
		"/monitoring/queues/orders": "/monitoring/queues/orders", "/monitoring/queues/orders/": "/monitoring/queues/orders/",
		"/monitoring": "/", "/monitoring/../v1/products": "/", "/monitoring//evil.example": "/",
		"/monitoring/.%2e/x": "/", `/monitoring/\evil.example`: "/", "/monitoring/a b": "/",
	} {
		if code, header := signIn(t, h, testToken, next); code != http.StatusSeeOther || header.Get("Location") != want {
			t.Errorf("next=%q: got %d to %q, want 303 to %q", next, code, header.Get("Location"), want)
		}
	}
	rec := do(t, h, request{method: "GET", path: "/login?next=/monitoring/"})
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `name="next" value="/monitoring/"`) {
		t.Errorf("GET /login: got %d, want 200 with the form carrying next", rec.Code)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("GET /login: Content-Security-Policy %q, want frame-ancestors 'none'", csp)
	}
}

func TestSignInRefusedWithoutAdminToken(t *testing.T) {
	t.Parallel()
	h, err := New(nil, Config{}) // no admin token configured
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"token": {""}}.Encode()
	rec := do(t, h, request{method: "POST", path: "/login", body: form,
		header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
	if rec.Code != http.StatusUnauthorized || len(rec.Result().Cookies()) != 0 {
		t.Errorf("sign in with no token configured: got %d, cookies %v; want 401 and none", rec.Code, rec.Result().Cookies())
	}
	rec = do(t, h, request{method: "GET", path: "/v1/dashboard", header: map[string]string{"Cookie": SessionCookie + "=" + sessionValue("", time.Now().Add(time.Hour))}})
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("dashboard with no token configured: got %d, want 401", rec.Code)
	}
}

// asynqmon v0.7.2 against asynq v0.26: the page and the API calls the page
// makes answer, through the admin check, and writes are refused.
func TestAsynqmonMounted(t *testing.T) {
	t.Parallel()
	// A Redis of its own: asynqmon lists every queue it finds, and a queue
	// another test removes meanwhile makes the listing answer 500.
	svc, deps := newServiceOn(t, testenv.PrivateRedis(t, localsvc.RedisOptions{}).URL(0))
	// Something in the queue, so that asynq knows it.
	h0 := newHandler(t, svc, Config{})
	if rec := do(t, h0, request{method: "POST", path: "/v1/products", header: bearer(testToken), body: `{"id":"m","name":"m","stock":3}`}); rec.Code != 201 {
		t.Fatalf("create: got %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, h0, request{method: "POST", path: "/v1/orders", body: `{"product_id":"m","user_id":"u","quantity":1}`}); rec.Code != 202 {
		t.Fatalf("order: got %d %s", rec.Code, rec.Body)
	}

	mon := asynqmon.New(asynqmon.Options{RootPath: MonitorPath, RedisConnOpt: deps.connOpt, ReadOnly: true})
	t.Cleanup(func() { _ = mon.Close() })
	h := newHandler(t, svc, Config{Monitor: mon})
	admin := bearer(testToken)

	rec := do(t, h, request{method: "GET", path: "/monitoring/", header: admin})
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `/monitoring/static/`) {
		t.Fatalf("GET /monitoring/: got %d %.200s, want the asynqmon page rooted at /monitoring", rec.Code, rec.Body)
	}
	for _, path := range []string{
		"/monitoring/api/queues",
		"/monitoring/api/queues/" + deps.queue,
		"/monitoring/api/queues/" + deps.queue + "/pending_tasks",
		"/monitoring/api/queue_stats",
		"/monitoring/api/servers",
		"/monitoring/api/redis_info",
	} {
		rec := do(t, h, request{method: "GET", path: path, header: admin})
		// asynqmon sets no Content-Type on its JSON answers.
		if rec.Code != 200 || !json.Valid(rec.Body.Bytes()) {
			t.Errorf("GET %s: got %d %.200s, want 200 JSON", path, rec.Code, rec.Body)
		}
	}
	rec = do(t, h, request{method: "GET", path: "/monitoring/api/queues/" + deps.queue + "/pending_tasks", header: admin})
	if !strings.Contains(rec.Body.String(), `"type":"order:place"`) {
		t.Errorf("pending tasks: got %.300s, want the queued order", rec.Body)
	}
	rec = do(t, h, request{method: "DELETE", path: "/monitoring/api/queues/" + deps.queue, header: admin})
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE a queue through the monitor: got %d, want 405", rec.Code)
	}
}

// Sign-in and sign-out forms posted from another site are refused: a page
// elsewhere could otherwise sign an admin out (or in with a token it knows).
// A request without the browser's headers (curl) is not cross-site.
func TestSessionFormsRefuseCrossSitePosts(t *testing.T) {
	t.Parallel()
	h := newHandler(t, nil, Config{})
	form := url.Values{"token": {testToken}, "next": {"/"}}.Encode()
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"no browser headers", nil, 303},
		{"same origin", map[string]string{"Sec-Fetch-Site": "same-origin"}, 303},
		{"typed in", map[string]string{"Sec-Fetch-Site": "none"}, 303},
		{"cross site", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"same site, other origin", map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
		{"origin of this host", map[string]string{"Origin": "http://example.com"}, 303},
		{"origin elsewhere", map[string]string{"Origin": "https://evil.example"}, 403},
		{"opaque origin", map[string]string{"Origin": "null"}, 403},
	} {
		for _, path := range []string{"/login", "/logout"} {
			header := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
			for k, v := range tc.header {
				header[k] = v
			}
			rec := do(t, h, request{method: "POST", path: path, body: form, header: header})
			if rec.Code != tc.want {
				t.Errorf("%s: POST %s = %d, want %d", tc.name, path, rec.Code, tc.want)
			}
			if tc.want == 403 && rec.Header().Get("Set-Cookie") != "" {
				t.Errorf("%s: POST %s refused but set a cookie", tc.name, path)
			}
		}
	}
}

// Every answer says nosniff; admin answers are not to be cached.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	h := newHandler(t, nil, Config{})
	for _, tc := range []struct {
		req     request
		noStore bool
	}{
		{request{method: "GET", path: "/healthz"}, false},
		{request{method: "GET", path: "/openapi.json"}, false},
		{request{method: "GET", path: "/v1/nope"}, false},
		{request{method: "GET", path: "/v1/queue", header: bearer(testToken)}, true},
	} {
		rec := do(t, h, tc.req)
		if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s: X-Content-Type-Options %q, want nosniff", tc.req.method, tc.req.path, got)
		}
		if got := rec.Header().Get("Cache-Control"); tc.noStore && got != "no-store" {
			t.Errorf("%s %s: Cache-Control %q, want no-store", tc.req.method, tc.req.path, got)
		}
	}
}

// A sign-in form past the body limit is 413, chunked or not, not a wrong
// token (from a review: PostForm dropped the limit's error, so the token
// read as empty: 401 and a warning of a refused sign-in).
func TestSignInFormPastTheBodyLimit(t *testing.T) {
	t.Parallel()
	h, err := New(nil, Config{AdminToken: "0123456789abcdef-token"})
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"token": {"0123456789abcdef-token"}, "pad": {strings.Repeat("a", DefaultBodyLimit)}}.Encode()
	for _, chunked := range []bool{false, true} {
		req := httptest.NewRequest("POST", "/login", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if chunked {
			req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "payload_too_large") {
			t.Errorf("chunked %v: %d %s, want 413 payload_too_large", chunked, rec.Code, rec.Body.String())
		}
	}
}

// While the queue's Redis hangs (SIGSTOP), the monitor's calls answer 503
// within MonitorTimeout, as the API's admin reads do: asynq's Inspector,
// which asynqmon reads the queue with, takes no context, and each call of
// the page waited go-redis's timeouts and retries, 10 s and more.
func TestAsynqmonAnswersInTimeWhenRedisHangs(t *testing.T) {
	t.Parallel()
	node := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	svc, deps := newServiceOn(t, node.URL(0))
	t.Cleanup(func() { _ = node.Resume() }) // before saletest's clean-up, which needs the node
	mon := asynqmon.New(asynqmon.Options{RootPath: MonitorPath, RedisConnOpt: deps.connOpt, ReadOnly: true})
	t.Cleanup(func() { _ = mon.Close() })
	h := newHandler(t, svc, Config{Monitor: mon})
	admin := bearer(testToken)
	if rec := do(t, h, request{method: "GET", path: "/monitoring/api/queue_stats", header: admin}); rec.Code != 200 {
		t.Fatalf("GET /monitoring/api/queue_stats before the pause: got %d %.200s", rec.Code, rec.Body)
	}
	if err := node.Pause(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rec := do(t, h, request{method: "GET", path: "/monitoring/api/queues", header: admin})
	took := time.Since(start)
	if limit := MonitorTimeout + 2*time.Second; rec.Code != http.StatusServiceUnavailable || !json.Valid(rec.Body.Bytes()) || took > limit {
		t.Errorf("GET /monitoring/api/queues with Redis paused: %d %.200s after %v; want 503 JSON within %v", rec.Code, rec.Body, took, limit)
	}
	// JSON as every other error of the API says it is (its answers are
	// nosniff): not the text/plain net/http guesses for a body without a
	// type.
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("GET /monitoring/api/queues with Redis paused: Content-Type %q, want application/json; charset=utf-8", ct)
	}
}

// The API's /metrics answers the admin bearer token only, as a Prometheus
// scrape sends it: not anyone, not a wrong token, and not an admin session
// cookie, which grants the dashboard and the monitor alone.
func TestMetricsNeedTheAdminBearerToken(t *testing.T) {
	t.Parallel()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("flashsale_up 1\n")) })
	h := newHandler(t, nil, Config{Metrics: metrics})
	code, header := signIn(t, h, testToken, "/")
	if code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d, want 303", code)
	}
	c := sessionCookie(t, header)
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"no credentials", nil, 401},
		{"wrong token", bearer("wrong"), 401},
		{"session cookie", map[string]string{"Cookie": c.Name + "=" + c.Value}, 401},
		{"admin token", bearer(testToken), 200},
	} {
		rec := do(t, h, request{method: "GET", path: "/metrics", header: tc.header})
		if rec.Code != tc.want {
			t.Errorf("%s: GET /metrics = %d %s, want %d", tc.name, rec.Code, rec.Body, tc.want)
		}
		if tc.want == 200 && !strings.Contains(rec.Body.String(), "flashsale_up 1") {
			t.Errorf("%s: GET /metrics body %q, want the metrics", tc.name, rec.Body)
		}
	}
}
