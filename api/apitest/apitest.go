// Package apitest serves the real HTTP handler ([api.New]) over a real
// [sale.Service] ([saletest.New]: PostgreSQL and Redis, nothing mocked) and
// sends it requests in-process, for tests of the HTTP contract.
package apitest

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/flashsale/flashsale/api"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/sale/saletest"
)

// AdminToken is the admin token [New] configures unless told otherwise.
const AdminToken = "test-admin-token-5b0c"

// Options configures [New]. Nil or the zero value takes the defaults.
type Options struct {
	// Sale configures the service under the handler.
	Sale *saletest.Options
	// API configures the handler. A zero AdminToken becomes [AdminToken]
	// unless NoAdminToken is set; a nil Logger becomes one writing into
	// Env.Log at debug level.
	API          api.Config
	NoAdminToken bool
}

// Env is the handler and the service under it.
type Env struct {
	*saletest.Env
	Handler *gin.Engine
	// Log holds everything the handler logged.
	Log *LogBuffer
}

// New builds the handler on a fresh service; see [saletest.New].
func New(t testing.TB, opts *Options) *Env {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	e := &Env{Env: saletest.New(t, opts.Sale), Log: &LogBuffer{}}
	cfg := opts.API
	if cfg.AdminToken == "" && !opts.NoAdminToken {
		cfg.AdminToken = AdminToken
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(e.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h, err := api.New(e.Service, cfg)
	if err != nil {
		t.Fatalf("apitest: api.New: %v", err)
	}
	e.Handler = h
	return e
}

// Response is a recorded answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends a request to the handler. header holds name, value pairs.
func (e *Env) Do(t testing.TB, method, target, body string, header ...string) *Response {
	t.Helper()
	return e.Send(NewRequest(method, target, body, header...))
}

// NewRequest builds a request for [Env.Send]. header holds name, value
// pairs.
func NewRequest(method, target, body string, header ...string) *http.Request {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return req
}

// Admin is the header pair that authorizes an admin call with [AdminToken].
func Admin() []string { return []string{"Authorization", "Bearer " + AdminToken} }

// Send sends req to the handler.
func (e *Env) Send(req *http.Request) *Response {
	w := httptest.NewRecorder()
	e.Handler.ServeHTTP(w, req)
	return &Response{Status: w.Code, Header: w.Result().Header, Body: w.Body.Bytes()}
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// ErrorCode checks that the answer is an error with the documented JSON
// body (a non-empty code and message, nothing else) and returns its code.
func (r *Response) ErrorCode(t testing.TB) string {
	t.Helper()
	code, err := r.CheckError()
	if err != nil {
		t.Fatalf("status %d: %v", r.Status, err)
	}
	return code
}

// CheckError is [Response.ErrorCode] returning an error instead of failing.
func (r *Response) CheckError() (string, error) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return "", &shapeError{"Content-Type " + ct + ", want application/json", r.Body}
	}
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	var b ErrorBody
	if err := dec.Decode(&b); err != nil {
		return "", &shapeError{"not an error body: " + err.Error(), r.Body}
	}
	if b.Error.Code == "" || b.Error.Message == "" {
		return "", &shapeError{"empty code or message", r.Body}
	}
	return b.Error.Code, nil
}

type shapeError struct {
	what string
	body []byte
}

func (e *shapeError) Error() string { return e.what + "; body " + string(e.body) }

// JSON decodes the body into v or fails the test.
func (r *Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("status %d: body %s: %v", r.Status, r.Body, err)
	}
}

// LogBuffer collects log output; it is safe for concurrent use.
type LogBuffer = testenv.LogBuffer
