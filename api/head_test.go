package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flashsale/flashsale/api"
	"github.com/flashsale/flashsale/api/apitest"
	"github.com/flashsale/flashsale/sale"
)

// Every GET answers HEAD with the same status and headers and no body, over
// a real server (net/http drops a HEAD's body, not a recorder): health
// probes, link checkers and caches send HEAD, and gin answered 405 to every
// one (RFC 9110 §9.3.2: a general-purpose server must support GET and HEAD).
// The monitor routes GET only, as asynqmon does: a HEAD reaches it as a GET.
func TestHeadAnswersAsGet(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "head_test_total", Help: "A metric to read."}))
	monitor := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<html>monitor</html>")
	})
	env := apitest.New(t, &apitest.Options{API: api.Config{
		Monitor: monitor,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}})
	env.CreateProduct(t, "p1", 5, 0)
	placed := env.PlaceOrder(t, sale.PlaceOrderRequest{ProductID: "p1", UserID: "u1", Quantity: 1})
	srv := httptest.NewServer(env.Handler)
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	admin := apitest.Admin()
	tests := []struct {
		path   string
		header []string
		status int
	}{
		{"/healthz", nil, http.StatusOK},
		{"/readyz", nil, http.StatusOK},
		{"/v1/products", nil, http.StatusOK},
		{"/v1/products/p1", nil, http.StatusOK},
		{"/v1/products/nope", nil, http.StatusNotFound},
		{"/v1/orders/" + placed.OrderID, nil, http.StatusOK},
		{"/v1/orders/" + placed.OrderID + "?wait=1ms", nil, http.StatusOK},
		{"/v1/orders/01J00000000000000000000000", nil, http.StatusNotFound},
		{"/v1/queue", admin, http.StatusOK},
		{"/v1/queue", nil, http.StatusUnauthorized},
		{"/metrics", admin, http.StatusOK},
		{"/", nil, http.StatusOK},
		{"/assets/dashboard.js", nil, http.StatusOK},
		{"/assets/nope.js", nil, http.StatusNotFound},
		{"/login", nil, http.StatusOK},
		{"/openapi.json", nil, http.StatusOK},
		{"/v1/dashboard", admin, http.StatusOK},
		{api.MonitorPath, nil, http.StatusMovedPermanently},
		{api.MonitorPath + "/", admin, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(strings.TrimPrefix(tc.path, "/")+" "+http.StatusText(tc.status), func(t *testing.T) {
			send := func(method string) (*http.Response, []byte) {
				t.Helper()
				req, err := http.NewRequest(method, srv.URL+tc.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i+1 < len(tc.header); i += 2 {
					req.Header.Set(tc.header[i], tc.header[i+1])
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", method, tc.path, err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("%s %s: read the body: %v", method, tc.path, err)
				}
				return resp, body
			}
			get, getBody := send(http.MethodGet)
			head, headBody := send(http.MethodHead)
			if get.StatusCode != tc.status {
				t.Fatalf("GET %s: %d %s, want %d", tc.path, get.StatusCode, getBody, tc.status)
			}
			if head.StatusCode != get.StatusCode {
				t.Errorf("HEAD %s: %d (Allow %q), want GET's %d", tc.path, head.StatusCode, head.Header.Get("Allow"), get.StatusCode)
			}
			for _, h := range []string{"Content-Type", "Cache-Control", "Location", "WWW-Authenticate", "X-Content-Type-Options"} {
				if g, hd := get.Header.Get(h), head.Header.Get(h); g != hd {
					t.Errorf("HEAD %s: %s %q, GET's %q", tc.path, h, hd, g)
				}
			}
			if len(headBody) != 0 {
				t.Errorf("HEAD %s: a body of %d bytes", tc.path, len(headBody))
			}
			if len(getBody) == 0 && tc.status != http.StatusMovedPermanently {
				t.Errorf("GET %s: no body", tc.path)
			}
		})
	}
}
