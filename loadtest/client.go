package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
)

// maxBody bounds how much of one response body is read.
const maxBody = 1 << 20

// maxBackoff caps any wait between two tries, Retry-After included.
const maxBackoff = time.Second

var errNotLoopback = errors.New("loadtest: refusing to connect to a non-loopback address")

// client sends the contract's requests to the API servers, round robin.
type client struct {
	hc         *http.Client
	apis       []string
	token      string
	reqTimeout time.Duration
	submitRR   atomic.Uint64
	pollRR     atomic.Uint64
	adminRR    atomic.Uint64
}

// newClient returns a client whose transport keeps enough idle connections
// per host for every submitter and poller, so the tool is not the bottleneck.
// It never uses a proxy and never follows redirects: it only talks to apis.
func newClient(c Config) *client {
	tr := NewTransport(c.Concurrency+c.SettleConcurrency+8, len(c.APIs), c.LoopbackOnly)
	return &client{
		hc: &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		apis:       c.APIs,
		token:      c.AdminToken,
		reqTimeout: c.RequestTimeout,
	}
}

// NewTransport is the load generator's HTTP transport: conns connections
// kept per host for hosts hosts, keep-alive, no proxy, no compression, and
// with loopbackOnly, dials refused to any address but a loopback one.
func NewTransport(conns, hosts int, loopbackOnly bool) *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if loopbackOnly {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("%w: %s", errNotLoopback, address)
			}
			return nil
		}
	}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		MaxIdleConns:          conns * hosts,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

func (c *client) next(rr *atomic.Uint64) string {
	return c.apis[(rr.Add(1)-1)%uint64(len(c.apis))]
}

// after returns the API that follows api in the list: a retry goes to
// another server than the one that failed, as a client behind a load
// balancer would do.
func (c *client) after(api string) string {
	for i, a := range c.apis {
		if a == api {
			return c.apis[(i+1)%len(c.apis)]
		}
	}
	return c.apis[0]
}

// answer is one HTTP exchange's result. Status 0 means no answer (Err set).
type answer struct {
	api    string
	Status int
	Body   []byte
	// ErrorCode and ErrorMessage are the API's error body's code and
	// message, when a 4xx or 5xx answer has one.
	ErrorCode    string
	ErrorMessage string
	RetryAfter   time.Duration
	Err          error
}

// describe says in a few words what came back, for reports.
func (a answer) describe() string {
	if a.Status == 0 {
		return fmt.Sprintf("no answer: %v", a.Err)
	}
	return strings.TrimSpace(fmt.Sprintf("%d %s", a.Status, a.ErrorCode))
}

// maxExplained bounds how much of a body that is not the API's error JSON
// explain quotes.
const maxExplained = 200

// explain is describe with what the server said: its error message (say,
// "missing or wrong admin token"), or, from something else in front of it
// (a proxy), the start of its body. For errors an operator must act on.
func (a answer) explain() string {
	d := a.describe()
	if a.Status == 0 {
		return d
	}
	if msg := a.ErrorMessage; msg != "" {
		// As the API writes it, unless it holds what a terminal would
		// act on (escape sequences) or is longer than a message.
		if len(msg) > maxExplained || strings.IndexFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return d + fmt.Sprintf(": %q", strings.ToValidUTF8(msg[:min(len(msg), maxExplained)], ""))
		}
		return d + ": " + msg
	}
	body := strings.TrimSpace(string(a.Body))
	if body == "" {
		return d
	}
	more := ""
	if len(body) > maxExplained {
		body, more = strings.ToValidUTF8(body[:maxExplained], ""), "..."
	}
	return d + fmt.Sprintf(": body %q%s", body, more)
}

// do sends one request with the per-request timeout plus extra.
func (c *client) do(ctx context.Context, api, method, path string, body []byte, hdr map[string]string, extra time.Duration) answer {
	a := answer{api: api}
	ctx, cancel := context.WithTimeout(ctx, c.reqTimeout+extra)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, api+path, rd)
	if err != nil {
		a.Err = err
		return a
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "flashsale-loadtest/1")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// net/http re-sends a request with a body silently, when a kept-alive
	// connection turns out closed, if it can rewind the body and the
	// request is idempotent, which an Idempotency-Key makes it. Such a send
	// would be missing from the run's record of sends (retries, each
	// answer): without GetBody the failure comes back here, and the run
	// retries it itself, on the record.
	req.GetBody = nil
	resp, err := c.hc.Do(req)
	if err != nil {
		a.Err = err
		return a
	}
	defer resp.Body.Close()
	a.Status = resp.StatusCode
	a.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
	a.Body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		// The status arrived; the body did not. Keep the status, note why.
		a.Err = fmt.Errorf("read body: %w", err)
	}
	if a.Status >= 400 {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(a.Body, &e) == nil {
			a.ErrorCode, a.ErrorMessage = e.Error.Code, e.Error.Message
		}
	}
	return a
}

func (c *client) admin() map[string]string {
	if c.token == "" {
		return nil
	}
	return map[string]string{"Authorization": "Bearer " + c.token}
}

func (c *client) postOrder(ctx context.Context, api, key string, body []byte) answer {
	return c.do(ctx, api, http.MethodPost, "/v1/orders", body, map[string]string{"Idempotency-Key": key}, 0)
}

func (c *client) getOrder(ctx context.Context, api, id string, wait time.Duration) answer {
	path := "/v1/orders/" + url.PathEscape(id)
	if wait > 0 {
		path += "?wait=" + url.QueryEscape(wait.String())
	}
	return c.do(ctx, api, http.MethodGet, path, nil, nil, wait)
}

func (c *client) createProduct(ctx context.Context, api string, body []byte) answer {
	return c.do(ctx, api, http.MethodPost, "/v1/products", body, c.admin(), 0)
}

func (c *client) getProduct(ctx context.Context, api, id string) answer {
	return c.do(ctx, api, http.MethodGet, "/v1/products/"+url.PathEscape(id), nil, nil, 0)
}

func (c *client) getQueue(ctx context.Context, api string) answer {
	return c.do(ctx, api, http.MethodGet, "/v1/queue", nil, c.admin(), 0)
}

// parseRetryAfter reads a Retry-After header in seconds or as an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// backoff is how long to wait before try n+1 (n ≥ 0), honouring Retry-After
// up to maxBackoff.
func backoff(n int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, maxBackoff)
	}
	return min(25*time.Millisecond<<min(n, 10), maxBackoff)
}

// sleep waits d or until ctx is done; it reports whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// statusKey is the key of a status-code mix: "202", or "error" for no answer.
func statusKey(status int) string {
	if status == 0 {
		return "error"
	}
	return strconv.Itoa(status)
}
