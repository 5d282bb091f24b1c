package bench_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/bench"
	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/internal/testenv"
)

// TestMain lets this test binary serve as the harness's helper programs:
// the harness runs it again with a helper's name as the first argument.
func TestMain(m *testing.M) {
	if bench.IsHelper(os.Args[1:]) {
		os.Exit(bench.HelperMain(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// testRedisDB is the Redis database the test's run owns (make bench uses
// 13); BENCH_TEST_REDIS_DB overrides it.
func testRedisDB(t *testing.T) int {
	t.Helper()
	v := os.Getenv("BENCH_TEST_REDIS_DB")
	if v == "" {
		return 12
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("BENCH_TEST_REDIS_DB=%q: %v", v, err)
	}
	return n
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The whole harness at a tiny scale against the real Redis and PostgreSQL:
// every part runs, the invariants hold, the figures add up, the tables
// render, and nothing is left behind.
func TestRunEveryPartAtTinyScale(t *testing.T) {
	testenv.Redis(t) // fail at once, with a clear message, when Redis is down
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	// -race: the test packages of `make test` are built so, which makes
	// this build mostly a link.
	binary, err := cluster.Build(ctx, root, t.TempDir(), true)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const orders, hotStock, spreadProducts, spreadStock = 200, 50, 10, 5
	redisDB := testRedisDB(t)
	logDir := t.TempDir()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(logDir, "*", "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("--- %s (tail) ---\n%s", l, b)
		}
	})
	res, err := bench.Run(ctx, bench.Config{
		Binary: binary, Helper: []string{self},
		RedisURL: testenv.RedisURL(), RedisDB: redisDB, DatabaseURL: testenv.DatabaseURL(),
		Settings:        bench.Settings{Orders: orders, HotStock: hotStock, SpreadProducts: spreadProducts, SpreadStock: spreadStock},
		ScenarioTimeout: 40 * time.Second,
		LogDir:          logDir,
		Progress:        logWriter{t},
	})
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	c := res.Ceiling
	if !c.OK() || c.Processed != orders || c.EndToEndPerSec <= 0 || c.EnqueuePerSec <= 0 {
		t.Errorf("queue ceiling: got %+v, want %d tasks enqueued and processed once, with rates", c, orders)
	}
	if f := res.Front; !f.OK() || f.Processed != orders || f.EndToEndPerSec <= 0 || f.SubmittedPerSec <= 0 || f.Submit.P99 <= 0 || f.ServerPeakRSS <= 0 {
		t.Errorf("HTTP front: got %+v, want %d orders accepted, answered and processed once, with rates, latency and RSS", f, orders)
	}
	for _, s := range []struct {
		name  string
		res   bench.ScenarioResult
		stock int64
	}{
		{"hot", res.Hot, hotStock},
		{"spread", res.Spread, spreadProducts * spreadStock},
		{"backlog", res.Backlog, hotStock},
		{"one-by-one", res.OneByOne, hotStock},
	} {
		r := s.res
		if !r.Ran || !r.Verified || !r.OK {
			t.Errorf("%s: got ran=%v verified=%v ok=%v err=%q violations=%v, want a verified run without violations",
				s.name, r.Ran, r.Verified, r.OK, r.Err, r.Violations)
			continue
		}
		if r.Outcomes.Succeeded != s.stock || r.Outcomes.Final() != orders {
			t.Errorf("%s: got %+v, want %d succeeded and all %d orders final", s.name, r.Outcomes, s.stock, orders)
		}
		if r.SettledPerSec <= 0 || r.Submit.P99 <= 0 || r.APIPeakRSS <= 0 || r.WorkerPeakRSS <= 0 {
			t.Errorf("%s: got settled/s %v, submit p99 %v, RSS %d/%d, want all measured",
				s.name, r.SettledPerSec, r.Submit.P99, r.APIPeakRSS, r.WorkerPeakRSS)
		}
	}
	if b := res.Backlog; b.Ran && (b.DrainPerSec <= 0 || b.Accepted() != orders) {
		t.Errorf("backlog: got drain %v/s and %d orders through the queue, want a drain rate and all %d queued", b.DrainPerSec, b.Accepted(), orders)
	}
	l := res.LockInRequest
	switch {
	case !l.Ran || !l.OK:
		t.Errorf("lock-in-request: got ran=%v ok=%v err=%q violations=%v, want a verified run", l.Ran, l.OK, l.Err, l.Violations)
	case l.Outcomes.Succeeded < 1 || l.Outcomes.Succeeded > hotStock:
		t.Errorf("lock-in-request: got %d sold, want 1..%d", l.Outcomes.Succeeded, hotStock)
	case l.Outcomes.Succeeded+l.Outcomes.SoldOutFastPath+l.SubmitStatus["429"] != orders:
		t.Errorf("lock-in-request: got %+v and statuses %v, want every order sold, sold out or turned away", l.Outcomes, l.SubmitStatus)
	}

	out := bench.Render(*res)
	for _, want := range []string{bench.SectionHeading, "### Throughput", "| HTTP front ", "| lock-in-request |", "### Ratios and goals"} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered section lacks %q:\n%s", want, out)
		}
	}

	// Nothing left behind: no database of the run, an empty Redis DB.
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var dbs int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname LIKE $1`,
		"flashsale_bench_"+res.RunID+"%").Scan(&dbs); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 {
		t.Errorf("databases of run %s left: got %d, want 0", res.RunID, dbs)
	}
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	opt.DB = redisDB
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("Redis DB %d after the run: got %d keys (%v), want 0", redisDB, n, err)
	}
}

// A Redis DB that holds keys no bench run wrote is refused, and left as it
// was.
func TestRunRefusesARedisDBInUse(t *testing.T) {
	testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	redisDB := testRedisDB(t)
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	opt.DB = redisDB
	rdb := redis.NewClient(opt)
	key := "someone-else:" + testenv.Namespace(t)
	t.Cleanup(func() {
		rdb.Del(context.Background(), key)
		_ = rdb.Close()
	})
	if err := rdb.Set(ctx, key, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	_, err = bench.Run(ctx, bench.Config{
		Binary: "unused", Helper: []string{"unused"}, LogDir: t.TempDir(),
		RedisURL: testenv.RedisURL(), RedisDB: redisDB, DatabaseURL: testenv.DatabaseURL(),
	})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("Redis DB %d holds", redisDB)) {
		t.Errorf("got %v, want a refusal naming Redis DB %d", err, redisDB)
	}
	if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 1 {
		t.Errorf("the other program's key: got exists=%d (%v), want it kept", n, err)
	}
}
