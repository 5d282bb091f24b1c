// Package testenv gives tests isolated pieces of the real services: a fresh
// PostgreSQL database, a unique Redis namespace on the shared Redis, or
// private redis-server / PostgreSQL processes for tests that kill, pause or
// restart servers.
//
// The shared services are found through TEST_REDIS_URL (default
// redis://127.0.0.1:6379/0) and TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable). A test fails,
// never skips, when a service cannot be reached.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
)

// RedisURL is the shared Redis used by tests.
func RedisURL() string {
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// DatabaseURL is the maintenance database of the shared PostgreSQL.
func DatabaseURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Namespace returns a short identifier unique to this test run, usable in
// key prefixes, queue names and database names ([a-z0-9_]).
func Namespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: random: %v", err)
	}
	name := strings.ToLower(nonWord.ReplaceAllString(t.Name(), "_"))
	if len(name) > 24 {
		name = name[len(name)-24:]
	}
	return strings.Trim(name, "_") + "_" + hex.EncodeToString(b)
}

var nonWord = regexp.MustCompile(`[^A-Za-z0-9]+`)

// Redis connects to the shared Redis and checks it answers. Keys the test
// writes must carry a prefix from [Namespace]; the client is closed at cleanup.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatalf("testenv: TEST_REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		t.Fatalf("testenv: Redis at %s is unreachable (start it, or set TEST_REDIS_URL): %v", opt.Addr, err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// QueueNamespace returns a namespace of the test's own (Namespace) for
// flashsale's processes on rdb: key prefix ns+":" and asynq queue "q_"+ns.
// At cleanup it removes the prefix's keys, the queue's, and the queue's
// entry in asynq's list of queues.
func QueueNamespace(t testing.TB, rdb redis.UniversalClient) string {
	t.Helper()
	ns := Namespace(t)
	DeleteKeys(t, rdb, ns+":")
	DeleteKeys(t, rdb, "asynq:{q_"+ns+"}")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rdb.SRem(ctx, "asynq:queues", "q_"+ns)
	})
	return ns
}

// DeleteKeys removes every key matching prefix+"*" at cleanup, and fails
// the test if it cannot: a key left behind (a sweep cursor outlives its
// test by a day, asynq's daily counters by months) is a leak into the
// shared Redis. A scan of the whole keyspace on a loaded machine can take a
// while, and a single call fail: it tries again until deleteKeysBound.
// (Before, a failed scan was ignored: six keys of four worker tests were
// once found left after a clean-clone CI run.)
func DeleteKeys(t testing.TB, rdb redis.UniversalClient, prefix string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), deleteKeysBound)
		defer cancel()
		var err error
		for {
			if err = deleteKeys(ctx, rdb, prefix); err == nil || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		if err != nil {
			t.Errorf("testenv: keys %s* may be left in the shared Redis: %v", prefix, err)
		}
	})
}

// deleteKeysBound bounds the clean-up of one test's keys.
const deleteKeysBound = time.Minute

func deleteKeys(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			if err := rdb.Del(ctx, keys...).Err(); err != nil {
				return err
			}
			keys = keys[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(keys) > 0 {
		return rdb.Del(ctx, keys...).Err()
	}
	return nil
}

// NewDatabase creates an empty database on the shared PostgreSQL, drops it at
// cleanup, and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabaseOn(t, DatabaseURL())
}

func newDatabaseOn(t testing.TB, maintenanceURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, maintenanceURL)
	if err != nil {
		t.Fatalf("testenv: PostgreSQL is unreachable (start it, or set TEST_DATABASE_URL): %v", err)
	}
	defer conn.Close(ctx)
	name := "fs_" + Namespace(t)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, maintenanceURL)
		if err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(maintenanceURL)
	if err != nil {
		t.Fatalf("testenv: database URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// PrivateRedis starts a redis-server of the test's own on a free port and
// kills it at cleanup.
func PrivateRedis(t testing.TB, opts localsvc.RedisOptions) *localsvc.Redis {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	r, err := localsvc.StartRedis(opts)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = r.Kill() })
	return r
}

// PrivatePostgres starts a PostgreSQL server of the test's own (initdb on a
// free port, about two seconds) and stops it at cleanup.
func PrivatePostgres(t testing.TB) *localsvc.Postgres {
	t.Helper()
	// Not t.TempDir: its parent is private to root, and PostgreSQL runs as
	// the postgres user when the tests run as root.
	dir, err := os.MkdirTemp("", "flashsale-pg-*")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p, err := localsvc.StartPostgres(localsvc.PostgresOptions{Dir: dir})
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		_ = p.Kill()
		_ = os.RemoveAll(dir)
	})
	return p
}

// PrivateDatabase creates an empty database on a private PostgreSQL and
// returns its URL.
func PrivateDatabase(t testing.TB, p *localsvc.Postgres) string {
	t.Helper()
	return newDatabaseOn(t, p.URL("postgres"))
}

// RefuseConnections makes the database at url refuse new connections
// (ALTER DATABASE ... ALLOW_CONNECTIONS false: they fail at connection
// start with SQLSTATE 55000) and ends its open ones, until the returned
// func, or cleanup, allows them again. The server itself stays up: for an
// outage where it is gone (connections refused), stop a PrivatePostgres.
func RefuseConnections(t testing.TB, url string) (allow func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	db := cfg.Database
	cfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	name := pgx.Identifier{db}.Sanitize()
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+name+" WITH ALLOW_CONNECTIONS false"); err != nil {
		_ = admin.Close(ctx)
		t.Fatalf("testenv: refuse connections to %s: %v", db, err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db); err != nil {
		t.Errorf("testenv: end connections to %s: %v", db, err)
	}
	var once sync.Once
	allow = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := admin.Exec(ctx, "ALTER DATABASE "+name+" WITH ALLOW_CONNECTIONS true"); err != nil {
				t.Errorf("testenv: allow connections to %s: %v", db, err)
			}
			if err := admin.Close(ctx); err != nil {
				t.Errorf("testenv: %v", err)
			}
		})
	}
	t.Cleanup(allow)
	return allow
}

// Eventually calls cond every few milliseconds until it returns nil or the
// deadline passes, then fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 2 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// PrivateRedisCluster starts a Redis Cluster of n private masters (no
// replicas), the hash slots split evenly, waits until every node reports
// cluster_state:ok, and returns the nodes' addresses. The processes are
// killed at cleanup.
func PrivateRedisCluster(t testing.TB, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var addrs []string
	for i := range n {
		node := PrivateRedis(t, localsvc.RedisOptions{Args: []string{
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"}})
		addrs = append(addrs, node.Addr())
		c := redis.NewClient(&redis.Options{Addr: node.Addr()})
		lo, hi := i*16384/n, (i+1)*16384/n-1
		err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err()
		if err == nil && i > 0 {
			first, firstPort, _ := strings.Cut(addrs[0], ":")
			err = c.Do(ctx, "CLUSTER", "MEET", first, firstPort).Err()
		}
		_ = c.Close()
		if err != nil {
			t.Fatalf("testenv: form a Redis Cluster: %v", err)
		}
	}
	host, port, _ := strings.Cut(addrs[0], ":")
	Eventually(t, 20*time.Second, func() error {
		for i, a := range addrs {
			c := redis.NewClient(&redis.Options{Addr: a})
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && i > 0 && !strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", n)) {
				// A handshake that did not finish within the node timeout
				// (a loaded machine) is dropped, and nothing meets again:
				// once, a node stayed out. Meeting again is harmless.
				_ = c.Do(ctx, "CLUSTER", "MEET", host, port).Err()
			}
			_ = c.Close()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", n)) {
				return fmt.Errorf("node %s: %s", a, info)
			}
		}
		return nil
	})
	return addrs
}

// PrivateSentinel starts a private Redis server and a Sentinel that
// monitors it as "mymaster", and returns the Sentinel's address. Both are
// killed at cleanup.
func PrivateSentinel(t testing.TB) string {
	t.Helper()
	return PrivateSentinelWithPasswords(t, "", "")
}

// PrivateSentinelWithPasswords is [PrivateSentinel] with passwords: the
// Redis server requires masterPassword and the Sentinel sentinelPassword
// (empty: none).
func PrivateSentinelWithPasswords(t testing.TB, sentinelPassword, masterPassword string) string {
	t.Helper()
	var ro localsvc.RedisOptions
	if masterPassword != "" {
		ro.Args = []string{"--requirepass", masterPassword}
	}
	master := PrivateRedis(t, ro)
	s, err := localsvc.StartSentinel(localsvc.SentinelOptions{Dir: t.TempDir(), Master: master.Addr(),
		MasterPassword: masterPassword, Password: sentinelPassword})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = s.Kill() })
	return s.Addr()
}

// UnreachableRedis returns a client of a local address where no Redis
// listens, which fails at once without retrying, for tests of what happens
// when Redis is down. The port stays reserved until cleanup ([reservePort]):
// a port that was only free a moment ago could be taken by a private Redis
// of a test running in parallel, and the "down" Redis then answered (seen
// twice in about 80 runs of queue's TestUnavailableWhenRedisIsDown). The
// client is closed at cleanup.
func UnreachableRedis(t testing.TB) *redis.Client {
	t.Helper()
	port := reservePort(t)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// reservePort binds a TCP socket to a port of 127.0.0.1 without listening
// on it, until cleanup: a connection to the port is refused, and no other
// socket can bind it meanwhile (the reservation does not set SO_REUSEADDR,
// so even one that does is refused; localsvc's callers then retry on
// another port). By hand with syscall: package net binds only to listen or
// to connect.
func reservePort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("testenv: reserve a port: socket: %v", err)
	}
	syscall.CloseOnExec(fd)
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("testenv: reserve a port: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("testenv: reserve a port: getsockname: %v", err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// LogBuffer collects log output; it is safe for concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// HoldLock runs stmt (a LOCK TABLE, a SELECT ... FOR UPDATE) in a
// transaction of its own on the database at url and keeps it open, so
// that what the test starts next waits on the lock it took; release (also
// run at the test's end, and a no-op after the first call) rolls it back.
// pid is the holding session's backend pid, for WaitsOn.
func HoldLock(t testing.TB, url, stmt string) (pid uint32, release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(ctx) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, stmt); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if err := tx.Rollback(ctx); err != nil {
				t.Errorf("release %q: %v", stmt, err)
			}
		})
	}
	t.Cleanup(release)
	return conn.PgConn().PID(), release
}

// WaitsOn reports whether some session of the database conn is connected
// to waits for a lock held by holder (a backend pid, say a transaction's
// PgConn().PID()): a statement blocked on a row or table the test holds.
func WaitsOn(ctx context.Context, conn *pgx.Conn, holder uint32) (bool, error) {
	var waiting bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l
		WHERE NOT l.granted AND $1::int = ANY (pg_blocking_pids(l.pid)))`, int(holder)).Scan(&waiting)
	return waiting, err
}
