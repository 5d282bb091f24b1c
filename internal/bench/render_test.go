package bench

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/loadtest"
)

// sample is a complete run whose ratios are easy to compute by hand.
func sample() Results {
	ok := func(submitted, settled, p99 float64, api, worker int64) ScenarioResult {
		return ScenarioResult{Ran: true, Orders: 20_000, Products: 1, Stock: 5_000,
			SubmittedPerSec: submitted, SettledPerSec: settled, SettleSeconds: 20_000 / settled,
			Outcomes:   loadtest.Outcomes{Succeeded: 5_000, SoldOut: 10_000, SoldOutFastPath: 5_000},
			Submit:     loadtest.Latency{Count: 20_000, P50: 2, P95: 8, P99: p99},
			Final:      loadtest.Latency{Count: 20_000, P50: 100, P99: 900},
			APIPeakRSS: api * megabyte, WorkerPeakRSS: worker * megabyte, MaxQueueDepth: 1234,
			Verified: true, OK: true, Violations: map[loadtest.ViolationCode]int{}}
	}
	r := Results{
		Date: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Elapsed: 4*time.Minute + 20*time.Second,
		Command: "make bench",
		Machine: Machine{Cores: 2, CPU: "Test CPU", MemoryBytes: 8 << 30, Kernel: "6.1", GoVersion: "go1.26.0",
			RedisVersion: "7.0.15", PostgresVersion: "15.2", LoadAvg: "0.10"},
		Settings: Settings{Orders: 20_000, HotStock: 5_000, SpreadProducts: 1_000, SpreadStock: 5,
			APIs: 2, Workers: 3, WorkerConcurrency: 64, Concurrency: 64},
		Ceiling: CeilingResult{Ran: true, Tasks: 20_000, Producers: 2, Consumers: 3, Concurrency: 64,
			Enqueued: 20_000, Processed: 20_000, EnqueuePerSec: 50_000, EndToEndPerSec: 8_000,
			EndToEndSeconds: 2.5, ProducerPeakRSS: 20 * megabyte, ConsumerPeakRSS: 22 * megabyte},
		Front: FrontResult{Ran: true, Orders: 20_000, Servers: 2, Consumers: 3, ConsumerConcurrency: 64, Senders: 64, Pollers: 64,
			Accepted: 20_000, Answered: 20_000, Processed: 20_000, SubmittedPerSec: 10_000, EndToEndPerSec: 4_000,
			EndToEndSeconds: 5, Submit: loadtest.Latency{Count: 20_000, P50: 3, P95: 9, P99: 15},
			ServerPeakRSS: 18 * megabyte, ConsumerPeakRSS: 21 * megabyte, ServerCPUSeconds: 3, ConsumerCPUSeconds: 1, LoadGenCPUSeconds: 2},
		Hot:      ok(9_000, 6_000, 12, 40, 30),
		Spread:   ok(9_500, 6_600, 14, 42, 35),
		Backlog:  ok(12_000, 3_000, 10, 41, 33),
		OneByOne: ok(9_000, 1_000, 11, 40, 28),
		LockInRequest: ScenarioResult{Ran: true, Orders: 20_000, Products: 1, Stock: 5_000,
			SubmittedPerSec: 7_000, SettledPerSec: 50, SettleSeconds: 3,
			Outcomes:     loadtest.Outcomes{Succeeded: 150, Rejected: 19_850},
			SubmitStatus: map[string]int64{"202": 150, "429": 19_850},
			Submit:       loadtest.Latency{Count: 20_000, P50: 5, P95: 20, P99: 40},
			APIPeakRSS:   25 * megabyte, MaxQueueDepth: -1, Verified: true, OK: true},
	}
	r.Backlog.DrainPerSec, r.Backlog.DrainSeconds, r.Backlog.DrainCommitSeconds = 7_000, 20_000.0/7_000, 2.5
	r.Hot.SubmitByStatus = map[string]loadtest.Latency{"409": {Count: 15_000, P50: 1, P99: 6}, "202": {Count: 5_000, P50: 4, P99: 20}}
	r.Hot.APICPUSeconds, r.Hot.WorkerCPUSeconds, r.Hot.LoadGenCPUSeconds, r.Hot.WallSeconds = 20, 10, 5, 4
	return r
}

func checkByName(t *testing.T, checks []Check, name string) Check {
	t.Helper()
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, checks)
	return Check{}
}

func TestChecksComputesRatiosAndGoals(t *testing.T) {
	checks := Checks(sample())
	for _, tc := range []struct {
		name, value string
		verdict     Verdict
	}{
		{"hot settled/s ÷ queue ceiling end-to-end/s", "6,000 / 8,000 = 0.75×", Met},
		{"backlog drain/s ÷ queue ceiling end-to-end/s", "7,000 / 8,000 = 0.88×", Met},
		{"spread settled/s ÷ hot settled/s", "6,600 / 6,000 = 1.10×", Met},
		{"hot settled/s ÷ one-by-one settled/s", "6,000 / 1,000 = 6.00×", Met},
		{"units sold/s: hot ÷ lock-in-request", "1,500 / 50 = 30.00×", NoGoal},
		{"HTTP front end-to-end/s ÷ queue ceiling end-to-end/s", "4,000 / 8,000 = 0.50×", NoGoal},
		{"hot settled/s ÷ HTTP front end-to-end/s", "6,000 / 4,000 = 1.50×", NoGoal},
		{"HTTP front: every order accepted, answered and processed once", "20,000 accepted, 20,000 answered, 20,000 processed, 0 failed requests", NoGoal},
		{"units sold of the hot stock: hot vs lock-in-request", "5,000 of 5,000 vs 150 of 5,000 (19,850 turned away with 429)", NoGoal},
		{"submit p99 under the burst (hot, spread, backlog)", "hot 12.0 ms, spread 14.0 ms, backlog 10.0 ms", Met},
		{"peak RSS of any API process", "42 MB", Met},
		{"peak RSS of any worker process", "35 MB", Met},
		{"loadtest invariants held", "5 of 5", Met},
	} {
		c := checkByName(t, checks, tc.name)
		if c.Value != tc.value || c.Verdict != tc.verdict {
			t.Errorf("%s: got %q %s, want %q %s", tc.name, c.Value, c.Verdict, tc.value, tc.verdict)
		}
	}
}

func TestChecksReportMissedAndUnmeasured(t *testing.T) {
	r := sample()
	r.Hot.SettledPerSec = 4_000 // 0.5× the ceiling, 4× one-by-one
	r.Spread.Submit.P99 = 30    // above 25 ms
	r.OneByOne.WorkerPeakRSS = 120 * megabyte
	r.Backlog = ScenarioResult{Err: "cluster did not start"}
	r.LockInRequest.OK = false
	r.LockInRequest.Violations = map[loadtest.ViolationCode]int{loadtest.CodeOversell: 1, loadtest.CodeServerError: 2}
	r.Spread.OK = false // fast, but it broke an invariant: its ratio is no measurement
	r.Spread.Violations = map[loadtest.ViolationCode]int{loadtest.CodeOrderLost: 1}
	r.Front.Processed-- // a task lost: its rate is no floor
	checks := Checks(r)
	for _, tc := range []struct {
		name    string
		verdict Verdict
		value   string // substring
	}{
		{"hot settled/s ÷ queue ceiling end-to-end/s", Missed, "0.50×"},
		{"hot settled/s ÷ one-by-one settled/s", Missed, "4.00×"},
		{"backlog drain/s ÷ queue ceiling end-to-end/s", Unknown, "not measured"},
		{"spread settled/s ÷ hot settled/s", Unknown, "not measured"},
		{"units sold/s: hot ÷ lock-in-request", Unknown, "not measured"},
		{"hot settled/s ÷ HTTP front end-to-end/s", Unknown, "not measured"},
		{"HTTP front: every order accepted, answered and processed once", NoGoal, "19,999 processed"},
		{"submit p99 under the burst (hot, spread, backlog)", Missed, "spread 30.0 ms (part failed), backlog n/a"},
		{"peak RSS of any worker process", Missed, "120 MB"},
		{"loadtest invariants held", Missed, "lock-in-request oversell×1 server_error×2"},
	} {
		c := checkByName(t, checks, tc.name)
		if c.Verdict != tc.verdict || !strings.Contains(c.Value, tc.value) {
			t.Errorf("%s: got %q %s, want %s and a value containing %q", tc.name, c.Value, c.Verdict, tc.verdict, tc.value)
		}
	}
}

// A fast p99 from a part that failed is no measurement (from a review: three
// failed parts made the goal "met").
func TestP99GoalNeedsPartsThatHeld(t *testing.T) {
	r := sample()
	for _, s := range []*ScenarioResult{&r.Hot, &r.Spread, &r.Backlog} {
		s.OK = false
		s.Violations = map[loadtest.ViolationCode]int{loadtest.CodeIncomplete: 1, loadtest.CodeOrderNotFinal: 3}
	}
	c := checkByName(t, Checks(r), "submit p99 under the burst (hot, spread, backlog)")
	if c.Verdict != Unknown || !strings.Contains(c.Value, "hot 12.0 ms (part failed)") {
		t.Errorf("got %q %s, want %s, the parts marked failed", c.Value, c.Verdict, Unknown)
	}
	r.Hot.Submit.P99 = 40 // too slow, failed or not
	if c := checkByName(t, Checks(r), "submit p99 under the burst (hot, spread, backlog)"); c.Verdict != Missed {
		t.Errorf("a failed part with p99 40 ms: got %q %s, want %s", c.Value, c.Verdict, Missed)
	}
}

// squeeze collapses runs of spaces, so that checks do not depend on the
// padding of table columns.
func squeeze(s string) string {
	for strings.Contains(s, "  ") {
		s = strings.ReplaceAll(s, "  ", " ")
	}
	return s
}

func TestRenderHasEveryTableAndFigure(t *testing.T) {
	out := squeeze(Render(sample()))
	for _, want := range []string{
		"## make bench\n",
		"Measured 2026-01-02 03:04 UTC with `make bench` (took 4m20s).",
		"2 cores (Test CPU), 8.0 GiB memory, Linux 6.1; go1.26.0; Redis 7.0.15 and PostgreSQL 15.2",
		"### Throughput", "### Outcomes", "### Latency and memory", "### Ratios and goals (issue 5)",
		"| queue ceiling   | 20,000 no-op asynq tasks; 2 producer and 3 consumer processes × 64 | 50,000 (enqueue) | 8,000 (end to end)",
		"| hot             | 1 product, stock 5,000",
		"| 7,000 (drain)",
		"2.86 (drain); last commit 2.50",
		"| lock-in-request | 20,000 | 150 ",
		"| 19,850 ",
		"6,000 / 8,000 = 0.75×",
		"| hot | 4.00 | 20.0 | 10.0 | 5.0 | 1.50 |", // CPU: 30s / 20,000 orders
		"| hot | 2.0 | 8.0 | 12.0 | 202: 4.0 / 20.0; 409: 1.0 / 6.0 | 100.0 |", // by answer, sorted by status
		"| spread | 2.0 | 8.0 | 14.0 | - | 100.0 |",
		"| queue ceiling | - | - | - | - | - | - | - | 20 MB (producer) | 22 MB (consumer) |", // RSS under its own headings
		"| HTTP front | 20,000 orders, each a POST that enqueues a no-op task and a GET answered from memory (64 POSTs and 64 GETs in flight); 2 gin servers, 3 no-op consumer processes × 64 | 10,000 | 4,000 (end to end) | 5.00 | every order once |",
		"| HTTP front | 3.0 | 9.0 | 15.0 | - | - | - | - | 18 MB (server) | 21 MB (consumer) |",
		"| HTTP front | 5.00 | 3.0 (servers) | 1.0 (consumers) | 2.0 | 0.20 |",
		"### CPU",
	} {
		if !strings.Contains(out, squeeze(want)) {
			t.Errorf("rendered section lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "**Note:**") {
		t.Errorf("got a note line without a note")
	}
	r := sample()
	r.Note = "shared machine"
	r.Spread = ScenarioResult{Err: "timeout"}
	r.Front.Answered--
	out = Render(r)
	for _, want := range []string{"**Note:** shared machine", "1,000 products, stock 5 each; not measured: timeout", "ORDERS MISSING OR FAILED"} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered section lacks %q:\n%s", want, out)
		}
	}
}

func TestTableAlignsAndEscapes(t *testing.T) {
	got := table([]string{"a", "bb"}, [][]string{{"x|y", "1"}, {"z"}})
	want := "" +
		"| a    | bb |\n" +
		"|------|----|\n" +
		"| x\\|y | 1  |\n" +
		"| z    |    |\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestCountAndRate(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0"}, {7, "7"}, {999, "999"}, {1000, "1,000"}, {20000, "20,000"}, {1234567, "1,234,567"}, {-4500, "-4,500"}} {
		if got := count(tc.n); got != tc.want {
			t.Errorf("count(%d): got %q, want %q", tc.n, got, tc.want)
		}
	}
	if got := rate(1796.6); got != "1,797" {
		t.Errorf("rate(1796.6): got %q, want 1,797", got)
	}
	if got := rate(0); got != "n/a" {
		t.Errorf("rate(0): got %q, want n/a", got)
	}
}

func TestReplaceSection(t *testing.T) {
	const sec = "## make bench\n\nnew body\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"empty file", "", "# Benchmarks\n\n## make bench\n\nnew body\n"},
		{"no section yet", "# Benchmarks\n\nIntro.\n", "# Benchmarks\n\nIntro.\n\n## make bench\n\nnew body\n"},
		{"section last",
			"# Benchmarks\n\n## make bench\n\nold\n\n### Old table\n\n| a |\n",
			"# Benchmarks\n\n## make bench\n\nnew body\n"},
		{"section between others",
			"# B\n\n## Lock micro-benchmarks\n\nkeep 1\n\n## make bench\n\nold\n### sub\nold\n\n## Notes\n\nkeep 2\n",
			"# B\n\n## Lock micro-benchmarks\n\nkeep 1\n\n## make bench\n\nnew body\n\n## Notes\n\nkeep 2\n"},
		{"heading in a code fence is not a heading",
			"# B\n\n## make bench\n\nold\n```\n## not a heading\n```\n## Next\nkeep\n",
			"# B\n\n## make bench\n\nnew body\n\n## Next\nkeep\n"},
		{"a level-1 heading ends it", "## make bench\nold\n# Appendix\nkeep\n", "## make bench\n\nnew body\n\n# Appendix\nkeep\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ReplaceSection(tc.doc, SectionHeading, sec); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestConfigRefusesWhatABenchMustNotDo(t *testing.T) {
	base := Config{Binary: "flashsale", Helper: []string{"bench"}, LogDir: "logs"}
	if _, err := base.withDefaults(); err != nil {
		t.Fatalf("defaults: got %v, want no error", err)
	}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
	}{
		{"remote Redis", func(c *Config) { c.RedisURL = "redis://10.0.0.5:6379" }},
		{"remote PostgreSQL", func(c *Config) { c.DatabaseURL = "postgres://postgres@db.example.com/postgres" }},
		{"negative Redis DB", func(c *Config) { c.RedisDB = -1 }},
		{"Redis DB 16", func(c *Config) { c.RedisDB = 16 }},
		{"unknown part", func(c *Config) { c.Only = []string{"warp"} }},
		{"no binary", func(c *Config) { c.Binary = "" }},
		{"negative stock", func(c *Config) { c.HotStock = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			if _, err := c.withDefaults(); err == nil {
				t.Errorf("got no error, want one")
			}
		})
	}
	c, _ := base.withDefaults()
	u, err := c.redisURL()
	if err != nil || u != "redis://127.0.0.1:6379/13" {
		t.Errorf("redisURL: got %q, %v, want redis://127.0.0.1:6379/13", u, err)
	}
}

func TestProcessAlive(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run true: %v", err)
	}
	for _, tc := range []struct {
		mark string
		want bool
	}{
		{"pid 1 run x", true},
		{"pid " + strconv.Itoa(cmd.Process.Pid) + " run x", false},
		{"something else", true},
	} {
		if got := processAlive(tc.mark); got != tc.want {
			t.Errorf("processAlive(%q): got %v, want %v", tc.mark, got, tc.want)
		}
	}
}

func TestCPUReadsAreSane(t *testing.T) {
	// Spin until getrusage reports 50ms of CPU (bounded in wall time).
	start, deadline := selfCPU(), time.Now().Add(10*time.Second)
	for selfCPU()-start < 50*time.Millisecond && time.Now().Before(deadline) {
	}
	self := selfCPU()
	if self-start < 50*time.Millisecond {
		t.Fatalf("getrusage: got %v of CPU after spinning for 10s, want ≥ 50ms", self-start)
	}
	// /proc counts in 10ms ticks and may lag getrusage by a tick or two.
	if proc := procCPU(os.Getpid()); proc < self-50*time.Millisecond || proc > self+50*time.Millisecond {
		t.Errorf("/proc/self/stat: got %v, want within 50ms of getrusage's %v", proc, self)
	}
	if got := procCPU(-1); got != 0 {
		t.Errorf("procCPU(-1): got %v, want 0", got)
	}
}

// The section names the source it measured.
func TestRenderNamesTheCommit(t *testing.T) {
	r := sample()
	r.Commit = "0123abcd4567 + changes"
	if out := Render(r); !strings.Contains(out, "with `make bench` at commit 0123abcd4567 + changes (took 4m20s).") {
		t.Errorf("no commit in the header:\n%.300s", out)
	}
}

// A backlog whose workers started before every order was queued says so.
func TestRenderSaysWhatTheBacklogQueued(t *testing.T) {
	r := sample()
	r.Backlog.QueuedAtStart = 19_500
	if out := squeeze(Render(r)); !strings.Contains(out, "hot, 19,500 of 20,000 queued before the workers start (the queue stopped growing)") {
		t.Errorf("backlog setup not told:\n%s", out)
	}
	r.Backlog.QueuedAtStart = 20_000
	if out := squeeze(Render(r)); !strings.Contains(out, "hot, all queued before the workers start") {
		t.Errorf("backlog setup with every order queued not told:\n%s", out)
	}
}
