package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testConfig is a small, fast run against urls.
func testConfig(urls []string) Config {
	return Config{
		APIs:                urls,
		LoopbackOnly:        true,
		Orders:              20,
		Concurrency:         4,
		Stock:               10,
		AdminToken:          fakeToken,
		RunID:               "t",
		Seed:                1,
		Timeout:             20 * time.Second,
		PollWait:            2 * time.Second,
		RequestTimeout:      5 * time.Second,
		QueueSampleInterval: 20 * time.Millisecond,
	}
}

func run(t *testing.T, cfg Config) *Report {
	t.Helper()
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

func wantOK(t *testing.T, rep *Report) {
	t.Helper()
	if !rep.OK || !rep.Verified {
		t.Fatalf("report OK=%v Verified=%v, want a clean run; violations:\n%s", rep.OK, rep.Verified, list(rep.Violations))
	}
}

func TestRunRoundRobinAcrossTwoServers(t *testing.T) {
	f := newFakeAPI()
	f.delay = time.Millisecond
	urls, posts := f.serve(t, 2)
	rep := run(t, testConfig(urls))
	wantOK(t, rep)

	for i, c := range posts {
		if got := c.Load(); got != 10 {
			t.Errorf("server %d got %d POST /v1/orders, want 10", i, got)
		}
	}
	if rep.Answered != 20 || rep.SubmitStatus["202"] != 20 {
		t.Errorf("answered %d, status mix %v, want 20 answers all 202", rep.Answered, rep.SubmitStatus)
	}
	want := Outcomes{Succeeded: 10, SoldOut: 10}
	if rep.Outcomes != want {
		t.Errorf("outcomes %+v, want %+v", rep.Outcomes, want)
	}
	if rep.Rereads != 20 || rep.Polls != 20 {
		t.Errorf("%d polls and %d re-reads after settling, want 20 and 20 (one long poll and one re-read per order)", rep.Polls, rep.Rereads)
	}
	if rep.Settled != 20 || rep.SettledPerSec <= 0 || rep.SubmittedPerSec <= 0 {
		t.Errorf("settled %d at %.1f/s, submitted %.1f/s; want 20 settled and positive rates", rep.Settled, rep.SettledPerSec, rep.SubmittedPerSec)
	}
	if rep.SubmitLatency.Count != 20 || rep.FinalLatency.Count != 20 || rep.FinalLatency.Max < rep.FinalLatency.P50 {
		t.Errorf("latency counts submit %d final %d (max %.3f p50 %.3f), want 20 and 20", rep.SubmitLatency.Count, rep.FinalLatency.Count, rep.FinalLatency.Max, rep.FinalLatency.P50)
	}
	if !rep.Queue.Available || rep.Queue.SampleCount == 0 {
		t.Errorf("queue %+v, want samples", rep.Queue)
	}
	if rep.Totals.Sold != 10 || rep.Totals.Stock != 0 || rep.Totals.Stocked != 10 {
		t.Errorf("totals %+v, want stocked 10, sold 10, stock 0", rep.Totals)
	}
}

func TestRunDupRateReusesKeys(t *testing.T) {
	f := newFakeAPI()
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	cfg.DupRate = 0.5
	rep := run(t, cfg)
	wantOK(t, rep)

	if rep.Duplicates != 10 || rep.Answered != 30 {
		t.Fatalf("duplicates %d, answered %d; want 10 and 30", rep.Duplicates, rep.Answered)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	twice := 0
	for key, n := range f.posts {
		if !strings.HasPrefix(key, "t-k") {
			t.Errorf("POST with Idempotency-Key %q, want the run's prefix t-k", key)
		}
		switch n {
		case 1:
		case 2:
			twice++
		default:
			t.Errorf("key %s posted %d times, want 1 or 2", key, n)
		}
	}
	if len(f.posts) != 20 || twice != 10 {
		t.Errorf("%d keys, %d posted twice; want 20 keys, 10 twice", len(f.posts), twice)
	}
	if len(f.orders) != 20 {
		t.Errorf("server created %d orders, want 20 (duplicates must not create orders)", len(f.orders))
	}
	if rep.Polls > 25 {
		t.Errorf("%d polls, want about one per order (duplicates share their order id)", rep.Polls)
	}
}

func TestRunCountsFastPathAsFinal(t *testing.T) {
	f := newFakeAPI()
	f.inline, f.fastPath = true, true
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	cfg.Concurrency = 1 // deterministic: orders 0..4 sell the stock
	cfg.Stock = 5
	rep := run(t, cfg)
	wantOK(t, rep)

	want := Outcomes{Succeeded: 5, SoldOutFastPath: 15}
	if rep.Outcomes != want {
		t.Fatalf("outcomes %+v, want %+v", rep.Outcomes, want)
	}
	if rep.SubmitStatus["409"] != 15 || rep.Settled != 20 || rep.FinalLatency.Count != 20 {
		t.Fatalf("409s %d, settled %d, final latencies %d; want 15, 20, 20", rep.SubmitStatus["409"], rep.Settled, rep.FinalLatency.Count)
	}
	// The submit latency split by answer: the accepted orders apart from the
	// fast path's refusals, together the whole.
	by := rep.SubmitLatencyByStatus
	if len(by) != 2 || by["202"].Count != 5 || by["409"].Count != 15 {
		t.Fatalf("submit latency by status %+v, want 5 answered 202 and 15 answered 409", by)
	}
	for k, l := range by {
		if l.Max > rep.SubmitLatency.Max || l.P50 <= 0 {
			t.Errorf("answered %s: %+v, want a positive p50 and a max within the whole's %+v", k, l, rep.SubmitLatency)
		}
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"answered 202", "answered 409"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestRunSettlesByLongPoll(t *testing.T) {
	f := newFakeAPI()
	f.delay = 20 * time.Millisecond // each order is final 20ms after the previous
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	cfg.Orders = 10
	cfg.PollWait = 5 * time.Second
	rep := run(t, cfg)
	wantOK(t, rep)

	f.mu.Lock()
	waits := f.waits
	f.mu.Unlock()
	// Long-polling returns when the order is final: one poll per order,
	// then one re-read per order after settling, which does not wait.
	if len(waits) != 2 || waits["5s"] != 10 || waits[""] != 10 {
		t.Fatalf("?wait= values seen %v, want 5s 10 times (settling) and none 10 times (re-reading)", waits)
	}
	if got := f.polls.Load(); got != 20 || rep.Polls != 10 || rep.Rereads != 10 {
		t.Fatalf("%d GET /v1/orders/{id} for 10 orders (%d polls, %d re-reads), want 20 (10 and 10)", got, rep.Polls, rep.Rereads)
	}
	if rep.FinalLatency.P50 < 20 {
		t.Fatalf("final latency p50 %.1fms, want ≥ 20ms (processing delay)", rep.FinalLatency.P50)
	}
}

func TestRunDoesNotSpinWhenWaitIsIgnored(t *testing.T) {
	f := newFakeAPI()
	f.delay, f.ignoreWait = 150*time.Millisecond, true
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	cfg.Orders, cfg.Concurrency = 2, 2
	rep := run(t, cfg)
	wantOK(t, rep)
	if got := f.polls.Load(); got > 40 {
		t.Fatalf("%d polls while the server ignored ?wait=, want backoff (≤ 40)", got)
	}
}

func TestRunRetriesAreBounded(t *testing.T) {
	f := newFakeAPI()
	f.fail500["t-k3"] = 2   // accepted on the third send
	f.fail500["t-k7"] = 100 // never accepted
	urls, _ := f.serve(t, 2)
	cfg := testConfig(urls)
	cfg.MaxRetries = 2
	rep := run(t, cfg)

	f.mu.Lock()
	k3, k7 := f.posts["t-k3"], f.posts["t-k7"]
	f.mu.Unlock()
	if k3 != 3 || k7 != 4 {
		t.Fatalf("sends of t-k3 %d, t-k7 %d; want 3 (1 + MaxRetries, same key) and 4 (and one re-send after settling)", k3, k7)
	}
	if rep.Retries != 4 || rep.Resends != 1 || rep.SubmitStatus["500"] != 5 {
		t.Fatalf("retries %d, resends %d, 500s %d; want 4, 1 and 5 (the re-send is not in the submit mix)", rep.Retries, rep.Resends, rep.SubmitStatus["500"])
	}
	if rep.Outcomes.Rejected != 1 || rep.Outcomes.Succeeded+rep.Outcomes.SoldOut != 19 {
		t.Fatalf("outcomes %+v, want 1 rejected and 19 decided", rep.Outcomes)
	}
	// Every 5xx is a violation, the re-send's too, and nothing else is.
	if len(rep.ViolationCounts) != 1 || rep.ViolationCounts[CodeServerError] != 6 {
		t.Fatalf("violations %v, want only 6 server_error:\n%s", rep.ViolationCounts, list(rep.Violations))
	}
}

// TestRunCatchesBuggyServer drives a misbehaving fake through Run, end to
// end: each planted bug must fail the run with the violations it causes.
func TestRunCatchesBuggyServer(t *testing.T) {
	tests := []struct {
		name   string
		plant  func(*fakeAPI)
		config func(*Config) // nil: testConfig as is
		want   map[ViolationCode]int
	}{
		{
			name:  "the worker ignores stock",
			plant: func(f *fakeAPI) { f.oversellBug = true },
			want:  map[ViolationCode]int{CodeOversell: 1, CodeNegativeStock: 1},
		},
		{
			name:  "order views without user_id",
			plant: func(f *fakeAPI) { f.omitUser = true },
			want:  map[ViolationCode]int{CodeOrderMismatch: 20},
		},
		{
			// t-k1 is charged twice: its first send creates an order and
			// hangs, its retry creates another. t-k7's sends all hang
			// without creating anything: without the re-send after
			// settling, its unknown fate would cover the extra unit sold.
			name: "a retry creates a second order while another key's fate is unknown",
			plant: func(f *fakeAPI) {
				f.inline = true
				f.dupOnRetry["t-k1"] = true
				f.stall["t-k7"] = 2 // both sends of the submit phase
			},
			config: unknownFateConfig,
			want:   map[ViolationCode]int{CodeSoldMismatch: 1},
		},
		{
			// The stock is sold out in the end, but by orders sent after
			// the 409s were answered.
			name: "409 sold_out while stock remained",
			plant: func(f *fakeAPI) {
				f.inline = true
				f.soldOutLie = 3
			},
			config: func(c *Config) { c.Concurrency = 1 },
			want:   map[ViolationCode]int{CodeUndersell: 3},
		},
		{
			// Settling stops at the first final answer; the re-read after
			// settling sees the change.
			name:  "a succeeded order later reads sold_out",
			plant: func(f *fakeAPI) { f.flipAfter = true },
			want:  map[ViolationCode]int{CodeOrderChanged: 10},
		},
		{
			// A read back must be of the product asked for: another
			// product's figures would be judged as this one's.
			name:  "GET /v1/products/{id} answers another product",
			plant: func(f *fakeAPI) { f.productAs = "another" },
			want:  map[ViolationCode]int{CodeProductUnverified: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI()
			tt.plant(f)
			urls, _ := f.serve(t, 1)
			cfg := testConfig(urls)
			if tt.config != nil {
				tt.config(&cfg)
			}
			rep := run(t, cfg)
			if rep.OK || !maps.Equal(rep.ViolationCounts, tt.want) {
				t.Fatalf("OK=%v, violations %v, want %v:\n%s", rep.OK, rep.ViolationCounts, tt.want, list(rep.Violations))
			}
		})
	}
}

// unknownFateConfig makes a run in which an unanswered send costs little:
// one sender (the fake's order of events is the plan's), one retry, and a
// short request timeout.
func unknownFateConfig(c *Config) {
	c.Concurrency, c.MaxRetries = 1, 1
	c.RequestTimeout = 300 * time.Millisecond
	c.QueueSampleInterval = -1
}

// A key whose every send got no answer is re-sent once after settling, with
// the same key and body, to each API in turn until one answers; an order
// created by that re-send is settled like any other, and a key still
// unanswered is a violation (the buyer was never told).
func TestRunResendsKeysOfUnknownFate(t *testing.T) {
	tests := []struct {
		name     string
		apis     int
		stalls   int   // unanswered sends of t-k7
		posts    int   // sends of t-k7
		rejected int64 // orders never accepted
		want     map[ViolationCode]int
	}{
		{name: "the re-send is accepted and settled", apis: 1, stalls: 2, posts: 3, want: map[ViolationCode]int{}},
		{name: "the re-send is not answered either", apis: 1, stalls: 3, posts: 3, rejected: 1,
			want: map[ViolationCode]int{CodeOrderUnanswered: 1}},
		{name: "an unanswered re-send goes to the next API", apis: 2, stalls: 3, posts: 4, want: map[ViolationCode]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI()
			f.inline = true
			f.stall["t-k7"] = tt.stalls
			urls, _ := f.serve(t, tt.apis)
			cfg := testConfig(urls)
			unknownFateConfig(&cfg)
			// The checks below count t-k7's stalls as the run's only
			// transport errors and retries: a request of another key must
			// not time out too, which 300ms allowed on a loaded machine.
			cfg.RequestTimeout = 2 * time.Second
			rep := run(t, cfg)
			if !rep.Verified || rep.OK != (len(tt.want) == 0) || !maps.Equal(rep.ViolationCounts, tt.want) {
				t.Fatalf("OK=%v Verified=%v, violations %v, want %v:\n%s", rep.OK, rep.Verified, rep.ViolationCounts, tt.want, list(rep.Violations))
			}

			f.mu.Lock()
			posts, created := f.posts["t-k7"], len(f.orders)
			f.mu.Unlock()
			if posts != tt.posts || rep.Resends != 1 || rep.Retries != 1 || rep.TransportErrors != 2 {
				t.Errorf("t-k7 posted %d times, resends %d, retries %d, transport errors %d; want %d (1 + MaxRetries + the re-send), 1, 1, 2",
					posts, rep.Resends, rep.Retries, rep.TransportErrors, tt.posts)
			}
			if rep.Outcomes.Rejected != tt.rejected || rep.Outcomes.Final() != 20-tt.rejected || created != 20-int(tt.rejected) {
				t.Errorf("outcomes %+v, %d orders created; want %d rejected and the rest final", rep.Outcomes, created, tt.rejected)
			}
			// The order the re-send settles is an outcome, but no part of
			// the timing: not in the final latencies, nor in the settled rate.
			if got := rep.FinalLatency.Count; got != 19 {
				t.Errorf("final latencies: %d, want 19 (the order settled after the re-send left out)", got)
			}
			if want := perSec(19, rep.Phases.Settle); rep.SettledPerSec != want {
				t.Errorf("settled/s = %v, want %v (19 orders over the settle phase)", rep.SettledPerSec, want)
			}
		})
	}
}

func TestRunOpenRate(t *testing.T) {
	f := newFakeAPI()
	f.inline = true
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	cfg.Rate = 200 // 20 sends over ~95ms
	start := time.Now()
	rep := run(t, cfg)
	wantOK(t, rep)
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Fatalf("run took %v, want ≥ 95ms at 200/s for 20 orders", d)
	}
	if rep.SubmitLatency.Count != 20 {
		t.Fatalf("submit latencies %d, want 20", rep.SubmitLatency.Count)
	}
}

func TestRunTimeoutIsReportedNotHidden(t *testing.T) {
	f := newFakeAPI()
	f.delay = time.Hour // never final
	f.noQueue = true
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	cfg.Orders = 4
	cfg.Timeout = 300 * time.Millisecond
	cfg.PollWait = 100 * time.Millisecond
	start := time.Now()
	rep := run(t, cfg)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("run took %v with a 300ms timeout, want it bounded", d)
	}
	if rep.ViolationCounts[CodeIncomplete] != 1 || rep.ViolationCounts[CodeOrderNotFinal] != 4 || rep.Outcomes.Unsettled != 4 {
		t.Fatalf("violations %v, outcomes %+v; want incomplete and 4 order_not_final", rep.ViolationCounts, rep.Outcomes)
	}
	if rep.Queue.Available || !strings.Contains(rep.Queue.Unavailable, "404") {
		t.Fatalf("queue %+v, want unavailable because of 404", rep.Queue)
	}
}

// A queue-depth sample that fails (the queue's Redis restarting) is
// reported as missed, and is not a violation: depth is the operator's view.
func TestRunQueueSampleFailuresAreNotViolations(t *testing.T) {
	f := newFakeAPI()
	f.delay = 200 * time.Millisecond // long enough for several samples
	f.queue503 = 2
	urls, _ := f.serve(t, 1)
	rep := run(t, testConfig(urls))
	wantOK(t, rep)
	if rep.Queue.Missed != 2 || !strings.Contains(rep.Queue.LastMiss, "503 unavailable") || !rep.Queue.Available {
		t.Fatalf("queue %+v, want 2 missed samples (503 unavailable), then samples", rep.Queue)
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "2 sample(s) missed, last: 503 unavailable") {
		t.Fatalf("report does not show the missed samples:\n%s", buf.String())
	}
}

func TestRunInterrupted(t *testing.T) {
	f := newFakeAPI()
	f.delay = time.Hour
	urls, _ := f.serve(t, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		select {
		case <-f.polled: // orders are in flight: interrupt now
			cancel()
		case <-ctx.Done():
		}
	}()
	rep, err := Run(ctx, testConfig(urls))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error %v, want one wrapping context.Canceled", err)
	}
	if rep == nil || rep.Verified || rep.OK {
		t.Fatalf("report %+v, want a partial unverified report", rep)
	}
}

func TestRunSetupErrors(t *testing.T) {
	f := newFakeAPI()
	urls, _ := f.serve(t, 1)

	cfg := testConfig(urls)
	cfg.AdminToken = "wrong"
	// The error says what the server said (from an operator review: only
	// "401 unauthorized", not why).
	if _, err := Run(t.Context(), cfg); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "401 unauthorized: "+fakeAdminRefusal) {
		t.Fatalf("bad token: Run error %v, want ErrUnauthorized with the server's message", err)
	}

	cfg = testConfig(urls)
	cfg.RunID = "again"
	run(t, cfg)
	if _, err := Run(t.Context(), cfg); !errors.Is(err, ErrProductExists) {
		t.Fatalf("reused run id: Run error %v, want ErrProductExists", err)
	}
}

func TestRunProgressPlainLines(t *testing.T) {
	f := newFakeAPI()
	f.delay = 5 * time.Millisecond
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	var out bytes.Buffer
	cfg.Progress = &out
	cfg.ProgressInterval = 10 * time.Millisecond
	wantOK(t, run(t, cfg))
	if !strings.Contains(out.String(), "loadtest t: ") || !strings.Contains(out.String(), "done 20/20") {
		t.Fatalf("progress output %q, want plain lines ending with done 20/20", out.String())
	}
}

func TestRunJSONFile(t *testing.T) {
	f := newFakeAPI()
	f.inline = true
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	cfg.JSONPath = t.TempDir() + "/report.json"
	wantOK(t, run(t, cfg))
	rep, err := readReportFile(cfg.JSONPath)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Schema != ReportSchema || rep.Orders != 20 || !rep.OK {
		t.Fatalf("JSON report schema %d orders %d ok %v, want %d, 20, true", rep.Schema, rep.Orders, rep.OK, ReportSchema)
	}
}

func TestRunRefusesInvalidConfigBeforeSending(t *testing.T) {
	rep, err := Run(t.Context(), Config{APIs: []string{"http://127.0.0.1:1"}})
	if rep != nil || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Run = %v, %v; want nil, ErrInvalidConfig", rep, err)
	}
}

func readReportFile(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep Report
	return &rep, json.Unmarshal(b, &rep)
}

// A dead server (connection refused) among the APIs: each order's retry goes
// to the next server, so every order is accepted.
func TestRunRetriesOnAnotherServer(t *testing.T) {
	f := newFakeAPI()
	urls, _ := f.serve(t, 1)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	cfg := testConfig([]string{urls[0], deadURL})
	cfg.MaxRetries = 1
	cfg.QueueSampleInterval = -1
	// Products are created round robin too: make the setup go to the live one.
	rep := run(t, cfg)
	if rep.Outcomes.Rejected != 0 || rep.Outcomes.Succeeded+rep.Outcomes.SoldOut != int64(cfg.Orders) {
		t.Errorf("outcomes %+v: want every order accepted after one retry on the other server", rep.Outcomes)
	}
	if rep.Retries == 0 {
		t.Errorf("retries: got 0, want the orders sent to the dead server retried")
	}
}

// The settle phase ends at the latest final seen, whichever settler took
// the lock last: callers take the time before the lock (from a review: two
// settlers out of order moved lastFinal back, and settled/s up).
func TestObservedTimesOnlyMoveForward(t *testing.T) {
	t.Parallel()
	cfg, err := Config{APIs: []string{"http://127.0.0.1:1"}, Orders: 2}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(cfg)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.mu.Lock()
	r.observeFinal(0, t0.Add(2*time.Second))
	r.observeFinal(1, t0.Add(time.Second))
	r.mu.Unlock()
	if want := t0.Add(2 * time.Second); !r.lastFinal.Equal(want) {
		t.Errorf("lastFinal = %v, want %v (the last final observed)", r.lastFinal, want)
	}
}

// A run interrupted while it verifies is unverified, as one interrupted
// before: the reads the interruption cut short are no violations. Before,
// it was reported verified, with a violation for every order it could not
// read again (from a review).
func TestRunInterruptedWhileVerifying(t *testing.T) {
	f := newFakeAPI()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	f.onProductRead = cancel // the first read of the verification
	urls, _ := f.serve(t, 1)
	rep, err := Run(ctx, testConfig(urls))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error %v, want one wrapping context.Canceled", err)
	}
	if rep == nil || rep.Verified || rep.OK || len(rep.Violations) != 0 {
		t.Fatalf("report verified %v, ok %v, %d violations; want an unverified report with none", rep.Verified, rep.OK, len(rep.Violations))
	}
}

// The overall timeout passing while a key of unknown fate is re-sent after
// settling cuts the run: the report says incomplete, whatever else went well.
// (t-k7's sends and its re-send are never answered; the timeout passes in the
// middle of the re-send, after every other order has settled.)
func TestRunTimeoutDuringTheResendIsReported(t *testing.T) {
	f := newFakeAPI()
	f.inline = true
	f.stall["t-k7"] = 3
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	unknownFateConfig(&cfg)
	cfg.RequestTimeout = time.Second // the sends end at about 2s, the re-send would at 3s
	cfg.Timeout = 2500 * time.Millisecond
	rep := run(t, cfg)
	if rep.Resends != 1 {
		t.Fatalf("resends %d, want 1 (the timeout passed before the re-send, the test's timing is off)", rep.Resends)
	}
	if rep.OK || rep.ViolationCounts[CodeIncomplete] != 1 {
		t.Fatalf("report OK=%v, violations:\n%s\nwant incomplete: the timeout cut the re-send", rep.OK, list(rep.Violations))
	}
}

// A buyer sold above the per-user limit through an order whose every send,
// the re-send included, went unanswered: the units sold beyond the known
// succeeded orders can only be that order's, and the buyer, already at the
// limit, could not take them. (t-u0, limit 1: t-k0 succeeds, t-k1 is refused
// limit_exceeded, t-k2 is never answered but succeeds, past the limit.)
func TestRunOverLimitOfAnOrderOfUnknownFate(t *testing.T) {
	f := newFakeAPI()
	f.inline = true
	f.ghost["t-k2"] = true
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	unknownFateConfig(&cfg)
	cfg.Orders, cfg.Users, cfg.Products, cfg.PerUserLimit = 3, 1, 1, 1
	rep := run(t, cfg)
	f.mu.Lock()
	bought := f.products["t-p0"].bought["t-u0"]
	f.mu.Unlock()
	if bought != 2 || rep.Resends != 1 {
		t.Fatalf("t-u0 bought %d units, %d re-sends; want 2 (the planted bug) and 1", bought, rep.Resends)
	}
	if rep.ViolationCounts[CodeOverLimit] != 1 {
		t.Fatalf("report OK=%v, violations:\n%s\nwant over_limit: t-u0 holds 2 units, limit 1", rep.OK, list(rep.Violations))
	}
}

// One API dies once the orders are settled: every read of the verify phase
// must still reach the other one, as the re-reads of orders do. A product
// read that meets the dead API retries on the next server, so with one
// retry no product can go unread. (The product reads took the next API of
// a round robin shared by 16 readers, so a product's tries could all land
// on the dead API: product_unverified while a live API could answer.)
func TestRunProductReadsRetryOnAnotherServer(t *testing.T) {
	f := newFakeAPI()
	f.inline = true
	urls, _ := f.serve(t, 1)
	target, err := url.Parse(urls[0])
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var dead atomic.Bool
	doomed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if dead.Load() {
			panic(http.ErrAbortHandler) // the connection drops without an answer
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(doomed.Close)

	cfg := testConfig([]string{doomed.URL, urls[0]})
	cfg.Products, cfg.Orders, cfg.Stock, cfg.MaxRetries = 64, 64, 1, 1
	cfg.OnSettled = func() { dead.Store(true) }
	wantOK(t, run(t, cfg))
}

// GET /v1/orders/{id} answering another order's view is a bug the buyer
// sees (told sold out for an order that bought a unit), even when both
// orders are the same buyer's, for the same product and quantity: the
// view's order_id must be the one asked for. (t-u0 orders one unit twice,
// stock 1: one order succeeds, the other ends sold out, and each reads as
// the other.)
func TestRunCatchesAnotherOrdersView(t *testing.T) {
	f := newFakeAPI()
	f.inline = true
	f.viewAs = map[string]string{"ord-1": "ord-2", "ord-2": "ord-1"}
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	cfg.Orders, cfg.Users, cfg.Stock = 2, 1, 1
	rep := run(t, cfg)
	if rep.OK || rep.ViolationCounts[CodeOrderMismatch] != 2 {
		t.Fatalf("report OK=%v, violations:\n%s\nwant order_mismatch for both orders: each reads as the other", rep.OK, list(rep.Violations))
	}
}

// An answer to POST /v1/orders whose body could not be read told the
// buyer nothing: a 202 without its order id, a 409 without its code. It
// counts as no answer (retried, and re-sent after settling), not as a lost
// order or a refusal. A 202 whose whole body carries no order id is the
// server's fault (order_lost, saying why), but the server may have created
// the order: the re-send after settling learns its id, and its units are
// judged with the rest. A 5xx is a server error whatever its body. (t-k3
// goes first to a fake whose stock is enough for it: its order succeeds.)
func TestRunAnswerWithoutItsBody(t *testing.T) {
	tests := []struct {
		name    string
		plant   func(*fakeAPI)
		stock   int64
		want    map[ViolationCode]int
		because string // in the violation's message
	}{
		{name: "a 202 cut off mid-body", plant: func(f *fakeAPI) { f.cut["t-k3"] = 1 }, stock: 10, want: map[ViolationCode]int{}},
		{name: "a 409 sold_out cut off mid-body", plant: func(f *fakeAPI) { f.cut["t-k3"] = 1 }, stock: 0, want: map[ViolationCode]int{}},
		{name: "every send of a 202 cut off mid-body, the re-send's too", plant: func(f *fakeAPI) { f.cut["t-k3"] = 3 }, stock: 10,
			want: map[ViolationCode]int{CodeOrderUnanswered: 1}},
		{name: "a 202 without an order id", plant: func(f *fakeAPI) { f.noID["t-k3"] = 1 }, stock: 10,
			want: map[ViolationCode]int{CodeOrderLost: 1}, because: "202 without an order_id"},
		{name: "a 500 cut off mid-body", plant: func(f *fakeAPI) { f.fail500["t-k3"], f.cut["t-k3"] = 1, 1 }, stock: 10,
			want: map[ViolationCode]int{CodeServerError: 1}, because: "500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI()
			f.inline, f.fastPath = true, true
			tt.plant(f)
			urls, _ := f.serve(t, 1)
			cfg := testConfig(urls)
			unknownFateConfig(&cfg)
			cfg.RequestTimeout = 2 * time.Second
			cfg.Stock = tt.stock
			rep := run(t, cfg)
			if !rep.Verified || !maps.Equal(rep.ViolationCounts, tt.want) {
				t.Fatalf("OK=%v Verified=%v, violations %v, want %v:\n%s", rep.OK, rep.Verified, rep.ViolationCounts, tt.want, list(rep.Violations))
			}
			for _, v := range rep.Violations {
				if v.Key != "t-k3" || !strings.Contains(v.Message, tt.because) {
					t.Errorf("violation %s at key %q, want one of t-k3 saying %q", v, v.Key, tt.because)
				}
			}
		})
	}
}

// The settle phase's reads are a buyer's too: a 5xx answered to a poll is
// a server_error, although the poll's retry reads the order; and an order
// that a replica does not know yet (404) is lost only after more than
// maxPollNotFound 404s in a row.
func TestRunPollAnswers(t *testing.T) {
	tests := []struct {
		name  string
		plant func(*fakeAPI)
		want  map[ViolationCode]int
	}{
		{name: "two polls answered 500", plant: func(f *fakeAPI) { f.poll500 = 2 }, want: map[ViolationCode]int{CodeServerError: 2}},
		{name: "each order unknown to its first maxPollNotFound reads", plant: func(f *fakeAPI) { f.lag404 = maxPollNotFound },
			want: map[ViolationCode]int{}},
		{name: "each order unknown to more reads than maxPollNotFound", plant: func(f *fakeAPI) { f.lag404 = maxPollNotFound + 1 },
			want: map[ViolationCode]int{CodeOrderLost: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI()
			f.inline = true
			tt.plant(f)
			urls, _ := f.serve(t, 1)
			cfg := testConfig(urls)
			cfg.Orders = 4
			cfg.QueueSampleInterval = -1
			rep := run(t, cfg)
			if !rep.Verified || !maps.Equal(rep.ViolationCounts, tt.want) {
				t.Fatalf("OK=%v Verified=%v, violations %v, want %v:\n%s", rep.OK, rep.Verified, rep.ViolationCounts, tt.want, list(rep.Violations))
			}
		})
	}
}

// A key is one outcome however many answers it gets: a duplicate answered
// 409 sold_out again adds no final latency. And its first send dates it:
// the duplicates of t-k0..t-k4, which bought the stock, are sent after the
// 409s of the next keys, which must not read as sold after them (undersell).
func TestRunCountsEachKeyOnceWithDuplicates(t *testing.T) {
	t.Parallel()
	f := newFakeAPI()
	f.inline, f.fastPath = true, true
	urls, _ := f.serve(t, 1)
	cfg := testConfig(urls)
	cfg.Concurrency, cfg.Stock, cfg.DupRate = 1, 5, 1
	cfg.QueueSampleInterval = -1
	rep := run(t, cfg)
	wantOK(t, rep)
	if rep.SubmitStatus["409"] != 30 || rep.Settled != 20 || rep.FinalLatency.Count != 20 {
		t.Fatalf("409s %d, settled %d, final latencies %d; want 30 (15 keys, each sent twice), 20 and 20 (one per key)",
			rep.SubmitStatus["409"], rep.Settled, rep.FinalLatency.Count)
	}
}
