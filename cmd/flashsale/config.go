package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/logging"
	"github.com/flashsale/flashsale/internal/redact"
	"github.com/flashsale/flashsale/internal/redisurl"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/worker"
)

// config is every setting, read from the environment and then from flags.
type config struct {
	RedisURL          string
	LockRedisURLs     []string
	DatabaseURL       string
	HTTPAddr          string
	MetricsAddr       string
	PprofAddr         string
	AdminToken        string
	LockTTL           time.Duration
	WorkerConcurrency int
	WorkerMode        worker.Mode
	Queue             string
	KeyPrefix         string
	RateLimit         string
	ProductTimeout    time.Duration
	LogLevel          string
	LogFormat         string

	// raw is every setting the command reads as given (flag, else
	// variable, else default), by variable name: what `flashsale dev`
	// passes on to its processes.
	raw map[string]string
	// from holds, by variable name, the flag of each setting given as one.
	from map[string]string
}

// minAdminTokenLength is the shortest admin token accepted.
const minAdminTokenLength = 16

// setting describes one configuration variable.
type setting struct {
	env, flag, def, help string
	// cmds is the commands that read it: each command takes flags for,
	// checks and lists only its own settings, so that a setting it does not
	// use neither stops it nor clutters its -h.
	cmds cmdSet
	set  func(c *config, v string) error
}

// cmdSet is a set of the commands that read settings.
type cmdSet uint8

const (
	forAPI cmdSet = 1 << iota
	forWorker
	forMigrate
	// forAll: dev runs the API and workers with every setting passed on.
	forAll = forAPI | forWorker | forMigrate
)

// commandSettings is the set of the command called name: dev reads every
// setting (it passes them on to its API and workers).
func commandSettings(name string) cmdSet {
	switch name {
	case "api":
		return forAPI
	case "worker":
		return forWorker
	case "migrate":
		return forMigrate
	}
	return forAll
}

// commandNames lists the commands of set, for help texts (dev, which
// reads every setting, is not named).
func commandNames(set cmdSet) string {
	var names []string
	for _, c := range []struct {
		bit  cmdSet
		name string
	}{{forAPI, "api"}, {forWorker, "worker"}, {forMigrate, "migrate"}} {
		if set&c.bit != 0 {
			names = append(names, c.name)
		}
	}
	return strings.Join(names, ", ")
}

var settings = []setting{
	{"FLASHSALE_REDIS_URL", "redis-url", "redis://127.0.0.1:6379/0",
		"Redis for the queue (redis://, rediss://, redis-socket:///path.sock?db=N, redis-sentinel://h1,h2?master=m, redis-cluster://h1,h2)",
		forAPI | forWorker,
		func(c *config, v string) error {
			if err := checkRedisURL(v); err != nil {
				return err
			}
			c.RedisURL = v
			return nil
		}},
	{"FLASHSALE_LOCK_REDIS_URLS", "lock-redis-urls", "",
		"comma-separated Redis URLs for the lock: 1 = single node, 3 or 5 = quorum (default: the queue's Redis)",
		forWorker,
		func(c *config, v string) error {
			c.LockRedisURLs = nil
			for _, u := range strings.Split(v, ",") {
				if u = strings.TrimSpace(u); u == "" {
					continue
				}
				pu, err := url.Parse(u)
				if err != nil || (pu.Scheme != "redis" && pu.Scheme != "rediss") || pu.Host == "" {
					return fmt.Errorf("%s is not a redis:// URL", redact.URL(u))
				}
				// As the worker's lock clients read it (an unknown option,
				// a bad database number), at start rather than after the
				// worker has connected to PostgreSQL and the queue.
				ro, err := redis.ParseURL(u)
				if err == nil {
					err = redisurl.CheckValues(ro, pu.Query())
				}
				if err != nil {
					return fmt.Errorf("%s: %v", redact.URL(u), err)
				}
				c.LockRedisURLs = append(c.LockRedisURLs, u)
			}
			return nil
		}},
	{"FLASHSALE_DATABASE_URL", "database-url", "postgres://postgres@127.0.0.1:5432/flashsale?sslmode=disable",
		"PostgreSQL URL (pgx settings such as pool_max_conns may be added)",
		forAll,
		func(c *config, v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || strings.Trim(u.Path, "/") == "" {
				return fmt.Errorf("want postgres://user@host:port/database")
			}
			c.DatabaseURL = v
			return nil
		}},
	{"FLASHSALE_HTTP_ADDR", "http-addr", "127.0.0.1:8080", "API listen address",
		forAPI,
		func(c *config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return fmt.Errorf("want host:port: %v", err)
			}
			c.HTTPAddr = v
			return nil
		}},
	{"FLASHSALE_METRICS_ADDR", "metrics-addr", "",
		"worker: address of its /metrics (admin token), /healthz and /readyz endpoints (empty = off); the API serves /metrics on its own address",
		forWorker,
		func(c *config, v string) error {
			if v != "" {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return fmt.Errorf("want host:port: %v", err)
				}
			}
			c.MetricsAddr = v
			return nil
		}},
	{"FLASHSALE_PPROF_ADDR", "pprof-addr", "", "listen address of net/http/pprof for profiling (empty = off; never expose it)",
		forAPI | forWorker,
		func(c *config, v string) error {
			if v != "" {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return fmt.Errorf("want host:port: %v", err)
				}
			}
			c.PprofAddr = v
			return nil
		}},
	{"FLASHSALE_ADMIN_TOKEN", "admin-token", "", "bearer token for admin endpoints, at least 16 characters; empty = admin endpoints refuse every call",
		forAPI | forWorker,
		func(c *config, v string) error {
			// Failed sign-ins are not throttled: the token's length is the
			// defence against guessing (openssl rand -hex 16).
			if v != "" && len(v) < minAdminTokenLength {
				return fmt.Errorf("%d characters; use at least %d (a long random secret, e.g. openssl rand -hex 16)", len(v), minAdminTokenLength)
			}
			c.AdminToken = v
			return nil
		}},
	{"FLASHSALE_LOCK_TTL", "lock-ttl", "10s", "lock time-to-live (a Go duration, 100ms to 10m)",
		forWorker,
		func(c *config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 100*time.Millisecond || d > 10*time.Minute {
				return fmt.Errorf("want a duration from 100ms to 10m")
			}
			c.LockTTL = d
			return nil
		}},
	{"FLASHSALE_WORKER_CONCURRENCY", "concurrency", "64",
		"order tasks one worker process holds at once (asynq concurrency)",
		forWorker,
		func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 4096 {
				return fmt.Errorf("want an integer from 1 to 4096")
			}
			c.WorkerConcurrency = n
			return nil
		}},
	{"FLASHSALE_WORKER_MODE", "mode", "batch",
		"batch: group commit per worker process; single: one lock hold and transaction per order (baseline)",
		forWorker,
		func(c *config, v string) error {
			if v != string(worker.ModeBatch) && v != string(worker.ModeSingle) {
				return fmt.Errorf("want batch or single")
			}
			c.WorkerMode = worker.Mode(v)
			return nil
		}},
	{"FLASHSALE_QUEUE", "queue", "orders", "asynq queue name of the orders",
		forAPI | forWorker,
		func(c *config, v string) error {
			if v == "" || strings.ContainsAny(v, "{}: ") {
				return fmt.Errorf("want a name without braces, colons or spaces")
			}
			c.Queue = v
			return nil
		}},
	{"FLASHSALE_KEY_PREFIX", "key-prefix", "flashsale:", "prefix of flashsale's own Redis keys (locks, sold-out flags, notifications)",
		forAPI | forWorker,
		func(c *config, v string) error {
			// Not empty: the packages under it would put their own default
			// back on some keys (sold-out flags, the worker's) and not on
			// others (locks, notifications).
			if v == "" {
				return fmt.Errorf("want a prefix such as flashsale:")
			}
			c.KeyPrefix = v
			return nil
		}},
	{"FLASHSALE_RATE_LIMIT", "rate-limit", "", "per-user order rate limit such as 10/s or 100/m (empty = off)",
		forAPI,
		func(c *config, v string) error {
			if v != "" {
				if _, err := parseRate(v); err != nil {
					return err
				}
			}
			c.RateLimit = v
			return nil
		}},
	{"FLASHSALE_PRODUCT_TIMEOUT", "product-timeout", "5s",
		"bound on each PostgreSQL statement of a product call (a Go duration, 100ms to 20s); past it the call answers 503; a restock as a whole answers within 2 × (this + 2.1s)",
		forAPI,
		func(c *config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 100*time.Millisecond || d > maxProductTimeout {
				return fmt.Errorf("want a duration from 100ms to %v", maxProductTimeout)
			}
			c.ProductTimeout = d
			return nil
		}},
	{"FLASHSALE_LOG_LEVEL", "log-level", "info", "debug, info, warn or error",
		forAll,
		func(c *config, v string) error {
			if _, ok := logging.ParseLevel(v); !ok {
				return fmt.Errorf("want debug, info, warn or error")
			}
			c.LogLevel = v
			return nil
		}},
	{"FLASHSALE_LOG_FORMAT", "log-format", "auto", "json, text, or auto (text on a terminal)",
		forAll,
		func(c *config, v string) error {
			if v != "auto" && v != "json" && v != "text" {
				return fmt.Errorf("want auto, json or text")
			}
			c.LogFormat = v
			return nil
		}},
}

// devHelp replaces, in dev's -h, the help of the settings dev treats
// differently, by variable; the usage lists it after the variable's line.
var devHelp = map[string]string{
	"FLASHSALE_ADMIN_TOKEN": "bearer token for admin endpoints, at least 16 characters; empty = a random token for this run, printed at start",
}

func checkRedisURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errNotURL
	}
	switch u.Scheme {
	case "redis", "rediss", "redis-sentinel", "redis-cluster", "redis-socket":
		// The whole URL, as the processes will read it: a parameter the
		// queue does not read is a mistake to show now, not at start.
		_, err := queue.ParseRedisURL(v, 0)
		return err
	}
	return fmt.Errorf("unsupported scheme %q", u.Scheme)
}

// errNotURL says a URL does not parse without quoting it: url.Parse's
// error holds the whole URL, password included.
var errNotURL = errors.New("not a valid URL (a password with special characters must be percent-encoded)")

// secretSetting reports whether a variable's value may hold a secret (a
// password in a URL, the admin token), which errors must not show.
func secretSetting(env string) bool {
	switch env {
	case "FLASHSALE_REDIS_URL", "FLASHSALE_LOCK_REDIS_URLS", "FLASHSALE_DATABASE_URL", "FLASHSALE_ADMIN_TOKEN":
		return true
	}
	return false
}

// shown is a value as error messages may show it: for secret settings, each
// comma-separated URL with its password replaced by ***, and anything that
// does not parse as a URL hidden.
func shown(env, v string) string {
	if !secretSetting(env) {
		return v
	}
	if env == "FLASHSALE_ADMIN_TOKEN" {
		return "(hidden)"
	}
	return redact.URLs(v)
}

// rate is a number of events per period.
type rate struct {
	n   int
	per time.Duration
}

// parseRate reads "N/s", "N/m" or "N/h".
func parseRate(v string) (rate, error) {
	var out rate
	num, unit, ok := strings.Cut(v, "/")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 1 {
		return out, fmt.Errorf("want N/s, N/m or N/h")
	}
	switch unit {
	case "s":
		out.per = time.Second
	case "m":
		out.per = time.Minute
	case "h":
		out.per = time.Hour
	default:
		return out, fmt.Errorf("want N/s, N/m or N/h")
	}
	out.n = n
	return out, nil
}

// parseFlags parses args into fs and refuses any word that is not a flag:
// the flag package stops at the first one, so every flag after it would be
// ignored without a word. A mistake in the command line (an unknown flag,
// a value of the wrong type, a stray word) ends the process with status 2,
// as an unknown command does; before, it was 1, which `flashsale loadtest`
// also returns for violated invariants, so a script could not tell a
// mistyped flag from a failed run. -h is flag.ErrHelp, as it is.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, err: fmt.Errorf("unexpected argument %q: only flags are taken here (see -h)", fs.Arg(0))}
	}
	return nil
}

// loadConfig reads the environment, then the flags of fs (which override
// it, also when given empty), for the settings the command called name
// reads (commandSettings); the others stay unset. A bad value is an error
// naming the flag if it was given as one (the variable is then not read),
// else the variable.
func loadConfig(fs *flag.FlagSet, name string, args []string) (config, error) {
	c := config{from: map[string]string{}}
	cmds := commandSettings(name)
	flagVals := map[string]*string{}
	for _, s := range settings {
		if s.cmds&cmds != 0 {
			help := s.help
			if h, ok := devHelp[s.env]; ok && name == "dev" {
				help = h
			}
			flagVals[s.flag] = fs.String(s.flag, "", fmt.Sprintf("%s (env %s, default %q)", help, s.env, s.def))
		}
	}
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	// A flag given wins over its variable even when empty: -rate-limit ""
	// turns off a rate limit the environment sets.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	c.raw = make(map[string]string, len(settings))
	for _, s := range settings {
		if s.cmds&cmds == 0 {
			continue
		}
		v, src := *flagVals[s.flag], "-"+s.flag
		if given[s.flag] {
			c.from[s.env] = src
		} else if ev, ok := os.LookupEnv(s.env); ok {
			v, src = ev, s.env
		} else {
			v, src = s.def, s.env+" (default)"
		}
		if err := s.set(&c, v); err != nil {
			return c, c.flagMistake(s.env, badSetting(s, src, v, given[s.flag], err))
		}
		c.raw[s.env] = v
	}
	if cmds&forWorker == 0 {
		return c, nil
	}
	if len(c.LockRedisURLs) == 0 {
		if u, _ := url.Parse(c.RedisURL); u != nil && (u.Scheme == "redis" || u.Scheme == "rediss") {
			// The lock's client reads the URL as go-redis does, which
			// refuses options asynq's queue ignores: checked here, naming
			// the setting the URL came from. Before, the worker connected
			// to PostgreSQL and then failed naming FLASHSALE_LOCK_REDIS_URLS,
			// a variable the operator had not set.
			if _, err := redis.ParseURL(c.RedisURL); err != nil {
				return c, fmt.Errorf("bad %s=%q: it is also the lock's Redis (%s is not set): %v",
					c.name("FLASHSALE_REDIS_URL"), shown("FLASHSALE_REDIS_URL", c.RedisURL), "FLASHSALE_LOCK_REDIS_URLS", err)
			}
			c.LockRedisURLs = []string{c.RedisURL}
		} else {
			return c, fmt.Errorf("%s must be set when the queue's Redis (%s) is not a single redis:// node", c.name("FLASHSALE_LOCK_REDIS_URLS"), c.name("FLASHSALE_REDIS_URL"))
		}
	}
	if n := len(c.LockRedisURLs); n != 1 && n != 3 && n != 5 {
		return c, c.flagMistake("FLASHSALE_LOCK_REDIS_URLS", fmt.Errorf("bad %s: %d nodes; use 1, 3 or 5 independent nodes (an even count tolerates no more failures than one node fewer, and every node past 5 adds a round trip to each lock for failures a quorum of 5 already rides out)", c.name("FLASHSALE_LOCK_REDIS_URLS"), n))
	}
	// A server named twice (the same host:port, any database) is one node
	// casting two votes: its failure alone costs the quorum, and releases
	// fail on the second copy (the first one already deleted the key), each
	// logged. Before, it was taken as independent nodes without a word.
	if len(c.LockRedisURLs) > 1 {
		seen := map[string]string{}
		for _, u := range c.LockRedisURLs {
			opt, err := redis.ParseURL(u) // checked by the setting
			if err != nil {
				return c, fmt.Errorf("bad %s: %s: %v", c.name("FLASHSALE_LOCK_REDIS_URLS"), redact.URL(u), err)
			}
			addr := strings.ToLower(opt.Addr)
			if prev, ok := seen[addr]; ok {
				return c, c.flagMistake("FLASHSALE_LOCK_REDIS_URLS", fmt.Errorf("bad %s: %s and %s are one server (%s); a quorum needs 3 or 5 independent nodes",
					c.name("FLASHSALE_LOCK_REDIS_URLS"), redact.URL(prev), redact.URL(u), addr))
			}
			seen[addr] = u
		}
	}
	return c, nil
}

// badSetting is the error for value v of setting s, given as src (its
// flag if byFlag, else its variable), which s.set refused with err. An empty
// value, which the setting has no meaning for, gets a message of its own
// saying how to get the setting's value back.
func badSetting(s setting, src, v string, byFlag bool, err error) error {
	switch {
	case v != "":
		return fmt.Errorf("bad %s=%q: %v", src, shown(s.env, v), err)
	case byFlag:
		return fmt.Errorf("bad %s=\"\": it cannot be empty; leave the flag out to use %s or the default %q", src, s.env, s.def)
	default:
		return fmt.Errorf("bad %s=\"\": it cannot be empty; unset it for the default %q", s.env, s.def)
	}
}

// flagMistake is err, the refusal of the value of the setting of variable
// env, as a mistake in the command line (exit status 2, see parseFlags)
// when that value was given as a flag; from the environment it is left as
// it is (exit status 1).
func (c config) flagMistake(env string, err error) error {
	if _, ok := c.from[env]; ok {
		return &exitError{code: 2, err: err}
	}
	return err
}

// name is how the setting of variable env was given, for error messages:
// its flag if one was passed, else the variable.
func (c config) name(env string) string {
	if f, ok := c.from[env]; ok {
		return f
	}
	return env
}

// envHelp lists the variables for usage messages.
func envHelp() string {
	var b strings.Builder
	for _, s := range settings {
		fmt.Fprintf(&b, "  %-30s %s (default %q; %s)\n", s.env, s.help, s.def, commandNames(s.cmds))
		if h, ok := devHelp[s.env]; ok {
			fmt.Fprintf(&b, "  %-30s dev: %s\n", "", h)
		}
	}
	return b.String()
}

// maxProductTimeout is the longest FLASHSALE_PRODUCT_TIMEOUT: a restock as a
// whole answers within 2 × (it + the sold-out gate's Settle, 2.1s), 44.2s,
// inside the API's write timeout (api.DefaultWriteTimeout, 45s); a longer
// bound would let the server cut the restock's answer off.
const maxProductTimeout = 20 * time.Second
