package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of [Config]: the numbers of issue 4.
const (
	DefaultOrders            = 20_000
	DefaultHotStock          = 5_000
	DefaultSpreadProducts    = 1_000
	DefaultSpreadStock       = 5
	DefaultAPIs              = 2
	DefaultWorkers           = 3
	DefaultWorkerConcurrency = 64
	DefaultConcurrency       = 64
	DefaultRedisURL          = "redis://127.0.0.1:6379"
	DefaultRedisDB           = 13
	DefaultDatabaseURL       = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultScenarioTimeout   = 3 * time.Minute
)

// Part names, for Config.Only.
const (
	PartCeiling       = "ceiling"
	PartFront         = "http-front"
	PartHot           = "hot"
	PartSpread        = "spread"
	PartBacklog       = "backlog"
	PartOneByOne      = "one-by-one"
	PartLockInRequest = "lock-in-request"
)

// Parts lists every part in the order a run measures them.
var Parts = []string{PartCeiling, PartFront, PartHot, PartSpread, PartBacklog, PartOneByOne, PartLockInRequest}

// Config describes a run. Zero fields take the defaults above.
type Config struct {
	// Binary is the built flashsale binary. Required.
	Binary string
	// Helper is the command (argv prefix) that runs this package's helper
	// programs: a binary whose main calls [HelperMain] when [IsHelper]
	// says so (cmd/bench, or a test binary from its TestMain). Required.
	Helper []string

	// RedisURL is the Redis to use (its DB number is ignored: RedisDB is
	// used). Default DefaultRedisURL. Must be on a loopback address.
	RedisURL string
	// RedisDB is the Redis database the run owns: it must be empty (or
	// left by an earlier bench run), is flushed between parts and at the
	// end. Default DefaultRedisDB.
	RedisDB int
	// DatabaseURL is a maintenance database of the PostgreSQL to use; the
	// run creates (and drops) databases of its own next to it. Default
	// DefaultDatabaseURL. Must be on a loopback address.
	DatabaseURL string

	// Settings are the numbers of the run (Concurrency also bounds the
	// producers' enqueues in flight, split between them).
	Settings

	// ScenarioTimeout bounds each part's load test. Default
	// DefaultScenarioTimeout.
	ScenarioTimeout time.Duration

	// Only, when not empty, runs only these parts (see Parts).
	Only []string

	// LogDir receives one log file per process. Required.
	LogDir string
	// Progress receives progress lines; nil means none.
	Progress io.Writer
}

func (c Config) withDefaults() (Config, error) {
	if c.Binary == "" {
		return c, errors.New("bench: no flashsale binary")
	}
	if len(c.Helper) == 0 {
		return c, errors.New("bench: no helper command")
	}
	if c.LogDir == "" {
		return c, errors.New("bench: no log directory")
	}
	if c.RedisURL == "" {
		c.RedisURL = DefaultRedisURL
	}
	if c.RedisDB == 0 {
		c.RedisDB = DefaultRedisDB
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = DefaultDatabaseURL
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Orders, DefaultOrders)
	def(&c.SpreadProducts, DefaultSpreadProducts)
	def(&c.APIs, DefaultAPIs)
	def(&c.Workers, DefaultWorkers)
	def(&c.WorkerConcurrency, DefaultWorkerConcurrency)
	def(&c.Concurrency, DefaultConcurrency)
	if c.HotStock == 0 {
		c.HotStock = DefaultHotStock
	}
	if c.SpreadStock == 0 {
		c.SpreadStock = DefaultSpreadStock
	}
	if c.ScenarioTimeout == 0 {
		c.ScenarioTimeout = DefaultScenarioTimeout
	}
	switch {
	case c.Orders < 1 || c.SpreadProducts < 1 || c.APIs < 1 || c.Workers < 1 || c.WorkerConcurrency < 1 || c.Concurrency < 1:
		return c, errors.New("bench: orders, products, APIs, workers and concurrencies must be positive")
	case c.HotStock < 0 || c.SpreadStock < 0:
		return c, errors.New("bench: negative stock")
	case c.RedisDB < 1 || c.RedisDB > 15:
		return c, fmt.Errorf("bench: Redis DB %d: want 1 to 15 (never DB 0, which other programs share)", c.RedisDB)
	case c.APIs+c.Workers > 16:
		return c, errors.New("bench: at most 16 processes (PostgreSQL's connections are shared)")
	}
	for _, p := range c.Only {
		if !slices.Contains(Parts, p) {
			return c, fmt.Errorf("bench: unknown part %q (want one of %s)", p, strings.Join(Parts, ", "))
		}
	}
	if err := loopbackURL(c.RedisURL); err != nil {
		return c, fmt.Errorf("bench: Redis URL: %w", err)
	}
	if err := loopbackURL(c.DatabaseURL); err != nil {
		return c, fmt.Errorf("bench: database URL: %w", err)
	}
	return c, nil
}

func (c Config) runs(part string) bool { return len(c.Only) == 0 || slices.Contains(c.Only, part) }

// redisURL is RedisURL pointed at RedisDB.
func (c Config) redisURL() (string, error) {
	u, err := url.Parse(c.RedisURL)
	if err != nil {
		return "", err
	}
	u.Path = fmt.Sprintf("/%d", c.RedisDB)
	if _, err := redis.ParseURL(u.String()); err != nil {
		return "", err
	}
	return u.String(), nil
}

// databaseURL is DatabaseURL pointed at database name.
func (c Config) databaseURL(name string) (string, error) {
	u, err := url.Parse(c.DatabaseURL)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// loopbackURL refuses a URL whose host is not a loopback address: a bench
// run talks to nothing but this machine.
func loopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("host %q is not a loopback address", host)
}
