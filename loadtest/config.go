package loadtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// Limits on Config values; a run outside them is refused with [ErrInvalidConfig].
const (
	// MaxOrders is the largest accepted [Config.Orders].
	MaxOrders = 5_000_000
	// MaxConcurrency is the largest accepted [Config.Concurrency] and
	// [Config.SettleConcurrency].
	MaxConcurrency = 10_000
	// MaxPollWait is the longest ?wait= the API accepts.
	MaxPollWait = 30 * time.Second
)

// Defaults applied by Run to zero-valued Config fields.
const (
	DefaultConcurrency         = 64
	DefaultTimeout             = 10 * time.Minute
	DefaultPollWait            = 10 * time.Second
	DefaultRequestTimeout      = 10 * time.Second
	DefaultMaxRetries          = 3
	DefaultQueueSampleInterval = time.Second
	DefaultVerifyTimeout       = 30 * time.Second
	// MinSettleConcurrency is the fewest long-polls a run keeps in flight
	// by default: SettleConcurrency defaults to max(Concurrency, this).
	MinSettleConcurrency = 32
)

// ErrInvalidConfig is returned (wrapped, with the reason) by [Run] when the
// Config is unusable. Nothing has been sent when it is returned.
var ErrInvalidConfig = errors.New("loadtest: invalid config")

// Config describes one load-test run. The zero value of every field other than
// APIs and Orders is usable; the defaults are given per field. Fields mirror
// the flags of `flashsale loadtest`.
type Config struct {
	// APIs are the base URLs of the API servers (--api URL,URL,...), e.g.
	// "http://127.0.0.1:8080". Requests go round robin over them. Required;
	// only http and https URLs without query or fragment are accepted.
	APIs []string

	// LoopbackOnly refuses APIs whose host is not a loopback address and
	// makes the dialer refuse any connection to a non-loopback address
	// (bench runs set it). "localhost" counts as loopback.
	LoopbackOnly bool

	// Orders is the number of distinct orders (--orders N), each with its own
	// Idempotency-Key. Required, 1..MaxOrders.
	Orders int

	// Concurrency is the number of submitting workers (--concurrency C): in a
	// closed burst at most C requests are in flight; with Rate set it bounds
	// the requests in flight. Default DefaultConcurrency.
	Concurrency int

	// SettleConcurrency bounds the concurrent long-polls of the settle phase.
	// Default max(Concurrency, 32).
	SettleConcurrency int

	// Users is the number of distinct buyers (--users U). Default Orders (every
	// order from its own buyer). Orders are dealt to buyers evenly in an order
	// shuffled by Seed.
	Users int

	// Products is the number of products created (--products P). Default 1.
	// Order i goes to product i mod P unless Hot is set.
	Products int

	// Hot puts every order on the first product (--hot). The other products
	// are still created and verified (they must end untouched).
	Hot bool

	// Stock is the number of units each product is created with (--stock S).
	// Zero is valid: every order must then end sold out.
	Stock int64

	// PerUserLimit is each product's per_user_limit (--per-user-limit L).
	// Zero leaves it out of the create request (the server's default applies,
	// and Verify checks the limit the server reports, if any).
	PerUserLimit int

	// MaxQuantity is the largest quantity of one order (--max-quantity Q).
	// Default 1 (single-unit orders); above 1 each order's quantity is picked
	// from 1..Q by Seed.
	MaxQuantity int

	// DupRate is the fraction of orders, 0..1, that are sent a second time
	// with the same Idempotency-Key and body (--dup-rate F). The duplicate is
	// sent about Concurrency requests after its original, so it may race it.
	DupRate float64

	// Rate switches from a closed burst to an open arrival rate of Rate
	// requests per second (--rate R). Submit latency is then measured from
	// each request's intended send time, so a slow server cannot hide its
	// queueing (no coordinated omission). Zero means a closed burst.
	Rate float64

	// AdminToken is sent as "Authorization: Bearer <token>" to the admin
	// endpoints (--admin-token).
	AdminToken string

	// RunID prefixes every product id, user id and Idempotency-Key, so that
	// repeated runs never collide (--run-id). Default: "lt" followed by the
	// UTC time and 4 random hex digits. Letters, digits, '-' and '_' only,
	// beginning with a letter or digit (as the API's ids must), at most 40
	// characters.
	RunID string

	// Seed makes the order plan (buyers, quantities, duplicates) reproducible
	// (--seed). The same Seed and Config give the same plan; 0 is a valid seed.
	Seed uint64

	// Timeout bounds the create, submit and settle phases together (the
	// overall timeout). When it passes, sending stops, unsettled orders stay
	// unsettled, and the run is verified and reported as incomplete (which is
	// a violation). Default DefaultTimeout.
	Timeout time.Duration

	// VerifyTimeout bounds the verify phase (reading the products and every
	// settled order back), which starts after Timeout may already have
	// passed. Default DefaultVerifyTimeout.
	VerifyTimeout time.Duration

	// PollWait is the ?wait= of each long-poll, at most MaxPollWait. Default
	// DefaultPollWait.
	PollWait time.Duration

	// RequestTimeout bounds one HTTP request (a long-poll gets PollWait on
	// top). Default DefaultRequestTimeout.
	RequestTimeout time.Duration

	// MaxRetries is how often one POST /v1/orders is re-sent, with the same
	// Idempotency-Key, after a connection error or a 5xx answer; also the
	// retry budget of admin requests. Default DefaultMaxRetries; negative
	// disables retries.
	MaxRetries int

	// QueueSampleInterval is how often GET /v1/queue is sampled during submit
	// and settle. Default DefaultQueueSampleInterval; negative disables
	// sampling.
	QueueSampleInterval time.Duration

	// OnSettled, if set, is called once, when the settle phase has ended
	// and before the verify phase (which reads every product and final
	// order once more): a caller measuring what the burst cost stops its
	// clocks there.
	OnSettled func()
	// Progress receives progress output while the run goes: a progress bar
	// when it is a terminal (an *os.File for which golang.org/x/term says
	// so), plain periodic lines otherwise. Nil disables progress output.
	Progress io.Writer

	// ProgressInterval is how often progress is written. Default 200ms for a
	// progress bar and 2s for plain lines.
	ProgressInterval time.Duration

	// JSONPath, when set, is where Run writes the JSON report (--json FILE),
	// also when violations were found. See [Report.WriteJSON].
	JSONPath string
}

// validRunID reports whether id is 1-40 of [A-Za-z0-9_-], the first a
// letter or digit: it begins the product and user ids, which the API
// refuses otherwise (a run stopped at its setup with a 400).
func validRunID(id string) bool {
	if len(id) < 1 || len(id) > 40 || id[0] == '-' || id[0] == '_' {
		return false
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !ok {
			return false
		}
	}
	return true
}

// withDefaults returns c with defaults applied and the API URLs normalised,
// or an error wrapping ErrInvalidConfig.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if len(c.APIs) == 0 {
		return bad("no API URL given")
	}
	apis := make([]string, 0, len(c.APIs))
	for _, raw := range c.APIs {
		u, err := normaliseAPI(raw, c.LoopbackOnly)
		if err != nil {
			return bad("api %q: %v", raw, err)
		}
		apis = append(apis, u)
	}
	c.APIs = apis
	if c.Orders < 1 || c.Orders > MaxOrders {
		return bad("orders %d outside 1..%d", c.Orders, MaxOrders)
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		return bad("concurrency %d outside 1..%d", c.Concurrency, MaxConcurrency)
	}
	if c.SettleConcurrency == 0 {
		c.SettleConcurrency = max(c.Concurrency, MinSettleConcurrency)
	}
	if c.SettleConcurrency < 1 || c.SettleConcurrency > MaxConcurrency {
		return bad("settle concurrency %d outside 1..%d", c.SettleConcurrency, MaxConcurrency)
	}
	if c.Users == 0 {
		c.Users = c.Orders
	}
	if c.Users < 1 {
		return bad("users %d < 1", c.Users)
	}
	if c.Products == 0 {
		c.Products = 1
	}
	if c.Products < 1 || c.Products > 1_000_000 {
		return bad("products %d outside 1..1000000", c.Products)
	}
	if c.Stock < 0 {
		return bad("stock %d < 0", c.Stock)
	}
	if c.PerUserLimit < 0 {
		return bad("per-user limit %d < 0", c.PerUserLimit)
	}
	if c.MaxQuantity == 0 {
		c.MaxQuantity = 1
	}
	if c.MaxQuantity < 1 || c.MaxQuantity > APIMaxQuantity {
		return bad("max quantity %d outside 1..%d (the API refuses larger orders)", c.MaxQuantity, APIMaxQuantity)
	}
	if c.DupRate < 0 || c.DupRate > 1 || c.DupRate != c.DupRate {
		return bad("dup rate %v outside 0..1", c.DupRate)
	}
	if c.Rate < 0 || c.Rate != c.Rate || c.Rate > 1e7 {
		return bad("rate %v outside 0..1e7", c.Rate)
	}
	if c.RunID == "" {
		c.RunID = newRunID(time.Now())
	}
	if !validRunID(c.RunID) {
		return bad("run id %q: want 1-40 of [A-Za-z0-9_-], beginning with a letter or digit", c.RunID)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.VerifyTimeout == 0 {
		c.VerifyTimeout = DefaultVerifyTimeout
	}
	if c.PollWait == 0 {
		c.PollWait = DefaultPollWait
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Timeout < 0 || c.VerifyTimeout < 0 || c.PollWait < 0 || c.RequestTimeout < 0 {
		return bad("negative timeout")
	}
	if c.PollWait > MaxPollWait {
		return bad("poll wait %v > %v", c.PollWait, MaxPollWait)
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.MaxRetries > 100 {
		return bad("max retries %d > 100", c.MaxRetries)
	}
	if c.QueueSampleInterval == 0 {
		c.QueueSampleInterval = DefaultQueueSampleInterval
	}
	return c, nil
}

// normaliseAPI checks one --api URL and returns it without a trailing slash.
func normaliseAPI(raw string, loopbackOnly bool) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", errors.New("scheme must be http or https")
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("want scheme://host[:port][/path] only")
	}
	if loopbackOnly && !isLoopbackHost(u.Hostname()) {
		return "", errors.New("host is not a loopback address")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// isLoopbackHost reports whether host is "localhost" or a loopback IP literal.
// It does not resolve names.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newRunID returns a fresh run id such as "lt20260102t150405-1a2b".
func newRunID(now time.Time) string {
	var b [2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24).
	return "lt" + now.UTC().Format("20060102t150405") + "-" + hex.EncodeToString(b[:])
}

// APIMaxQuantity is the largest quantity of one order the API accepts
// (sale.MaxQuantity, in the API's contract): the load test sends only
// orders the API should take, so that any other refusal is a violation.
const APIMaxQuantity = 100
