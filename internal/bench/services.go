package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// ownerKey marks a Redis database as owned by a bench run; its value is
// "pid <pid> run <id>".
const ownerKey = "flashsale-bench:owner"

// ownerTTL bounds how long a crashed run's mark blocks the database; a run
// re-marks it at every reset, and the whole run is bounded well below.
const ownerTTL = 15 * time.Minute

// claimScript takes the database: KEYS[1] owner key; ARGV[1] our mark,
// ARGV[2] TTL in seconds, ARGV[3] a stale mark we may replace (or "").
// Returns {1} when taken (and flushed), {0, mark} when another run holds
// it, {-1, n} when it holds n keys and no mark.
var claimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and cur ~= ARGV[3] then return {0, cur} end
if not cur then
  local n = redis.call('DBSIZE')
  if n > 0 then return {-1, n} end
end
redis.call('FLUSHDB')
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {1}`)

// resetScript flushes the database if we still own it and re-marks it:
// KEYS[1] owner key; ARGV[1] our mark, ARGV[2] TTL in seconds, ARGV[3] "1"
// to re-mark (reset) or "0" to leave it empty (release). Returns 1, or 0
// when another run owns it.
var resetScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('FLUSHDB')
if ARGV[3] == '1' then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1`)

// ownedDB is a Redis database that a run owns.
type ownedDB struct {
	rdb  *redis.Client
	url  string
	mark string
}

// claimRedisDB takes the Redis database at url for this run: it must be
// empty, or marked by a bench run that is no longer alive. It is flushed.
func claimRedisDB(ctx context.Context, url, runID string) (*ownedDB, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("bench: Redis at %s is unreachable: %w", opt.Addr, err)
	}
	mark := fmt.Sprintf("pid %d run %s", os.Getpid(), runID)
	stale := ""
	if cur, err := rdb.Get(ctx, ownerKey).Result(); err == nil && !processAlive(cur) {
		stale = cur
	}
	res, err := claimScript.Run(ctx, rdb, []string{ownerKey}, mark, int(ownerTTL.Seconds()), stale).Slice()
	if err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("bench: claim Redis DB %d: %w", opt.DB, err)
	}
	switch res[0].(int64) {
	case 1:
		return &ownedDB{rdb: rdb, url: url, mark: mark}, nil
	case 0:
		_ = rdb.Close()
		return nil, fmt.Errorf("bench: Redis DB %d is in use by another bench run (%v); wait for it, or choose another DB", opt.DB, res[1])
	default:
		_ = rdb.Close()
		return nil, fmt.Errorf("bench: Redis DB %d holds %v keys that no bench run wrote; choose another (empty) DB", opt.DB, res[1])
	}
}

// processAlive reports whether the pid in a mark "pid <pid> run <id>" is a
// live process on this machine. Unparsable marks count as alive.
func processAlive(mark string) bool {
	f := strings.Fields(mark)
	if len(f) < 2 || f[0] != "pid" {
		return true
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil || pid <= 0 {
		return true
	}
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// reset empties the database between parts, keeping it marked as ours.
func (o *ownedDB) reset(ctx context.Context) error {
	n, err := resetScript.Run(ctx, o.rdb, []string{ownerKey}, o.mark, int(ownerTTL.Seconds()), "1").Int()
	if err != nil {
		return fmt.Errorf("bench: flush Redis DB: %w", err)
	}
	if n != 1 {
		return errors.New("bench: another program took the Redis DB during the run")
	}
	return nil
}

// release empties the database, mark included, and closes the client.
func (o *ownedDB) release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := resetScript.Run(ctx, o.rdb, []string{ownerKey}, o.mark, 0, "0").Err()
	return errors.Join(err, o.rdb.Close())
}

// createDatabase creates database name on the server of maintURL.
func createDatabase(ctx context.Context, maintURL, name string) error {
	conn, err := pgx.Connect(ctx, maintURL)
	if err != nil {
		return fmt.Errorf("bench: PostgreSQL is unreachable: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("bench: create database %s: %w", name, err)
	}
	return nil
}

// dropDatabase drops database name, closing its remaining connections.
func dropDatabase(maintURL, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, maintURL)
	if err != nil {
		return fmt.Errorf("bench: drop database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("bench: drop database %s: %w", name, err)
	}
	return nil
}

// machineInfo describes this machine and the services' versions; what
// cannot be read stays empty.
func machineInfo(ctx context.Context, rdb *redis.Client, maintURL string) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	m.CPU = procField("/proc/cpuinfo", "model name", ":")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal", ":"), " kB"), 10, 64); err == nil {
		m.MemoryBytes = kb << 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.LoadAvg = f[0]
		}
	}
	if info, err := rdb.Info(ctx, "server").Result(); err == nil {
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "redis_version:"); ok {
				m.RedisVersion = v
			}
		}
	}
	if conn, err := pgx.Connect(ctx, maintURL); err == nil {
		_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&m.PostgresVersion)
		_ = conn.Close(ctx)
	}
	return m
}

// procField returns the value of the first "key<sep> value" line of a
// /proc file, trimmed.
func procField(path, key, sep string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
