package loadtest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// A send that meets a kept-alive connection the server closed comes back
// as a failure, for the run to retry on its record: net/http would re-send
// it silently otherwise (an Idempotency-Key makes a POST idempotent to it).
func TestClientDoesNotResendSilently(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 2 {
			// The second request, on the kept-alive connection: close it
			// without an answer.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"order_id":"o1","status":"queued"}`))
	}))
	defer srv.Close()
	c := newClient(Config{APIs: []string{srv.URL}, RequestTimeout: DefaultRequestTimeout})
	ctx := context.Background()
	if a := c.postOrder(ctx, srv.URL, "k1", []byte(`{}`)); a.Status != http.StatusAccepted {
		t.Fatalf("first send: %s", a.describe())
	}
	if a := c.postOrder(ctx, srv.URL, "k2", []byte(`{}`)); a.Status != 0 {
		t.Errorf("second send, its connection closed unanswered: %s; want no answer", a.describe())
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("the server saw %d requests, want 2 (no silent re-send)", n)
	}
}

// An error an operator must act on says what the server said: the API's
// error message, or the start of the body of something else in front of it
// (a proxy's 401 page).
func TestExplainSaysWhatTheServerSaid(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		ctype, body, want string
	}{
		{"application/json", `{"error":{"code":"unauthorized","message":"admin endpoints are disabled (no admin token configured)"}}`,
			"401 unauthorized: admin endpoints are disabled (no admin token configured)"},
		{"text/html", "<html><h1>401 Authorization Required</h1></html>\n", `401: body "<html><h1>401 Authorization Required</h1></html>"`},
		{"text/plain", long, `401: body "` + long[:200] + `"...`},
		{"text/plain", "", "401"},
		// A message that would drive the operator's terminal is quoted.
		{"application/json", `{"error":{"code":"unauthorized","message":"\u001b[2Jgone"}}`, `401 unauthorized: "\x1b[2Jgone"`},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", tc.ctype)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(tc.body))
		}))
		c := newClient(Config{APIs: []string{srv.URL}, RequestTimeout: DefaultRequestTimeout})
		if got := c.createProduct(context.Background(), srv.URL, []byte(`{}`)).explain(); got != tc.want {
			t.Errorf("a 401 with %s %.40q: %q, want %q", tc.ctype, tc.body, got, tc.want)
		}
		c.close()
		srv.Close()
	}
}

// With loopbackOnly the transport's dialer refuses any address that is not
// a loopback one, whatever the URL passed the config's check: here
// 0.0.0.0, which Linux connects to this machine (so nothing leaves it even
// if the guard failed), but which is not a loopback address.
func TestTransportDialsLoopbackOnly(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	get := func(tr *http.Transport, url string) error {
		t.Helper()
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	// The address reaches the server when loopback is not required...
	if err := get(NewTransport(1, 1, false), "http://0.0.0.0:"+port+"/"); err != nil {
		t.Fatalf("GET 0.0.0.0 without loopbackOnly: %v, want an answer", err)
	}
	// ...and is refused when it is, while the loopback address is not.
	if err := get(NewTransport(1, 1, true), "http://0.0.0.0:"+port+"/"); !errors.Is(err, errNotLoopback) {
		t.Errorf("GET 0.0.0.0 with loopbackOnly: %v, want errNotLoopback", err)
	}
	if err := get(NewTransport(1, 1, true), srv.URL+"/"); err != nil {
		t.Errorf("GET %s with loopbackOnly: %v, want an answer", srv.URL, err)
	}
}
