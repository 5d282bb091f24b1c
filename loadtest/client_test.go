package loadtest

import (
	"context"
	"net/http"
	"net/http/httptest"
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
