package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/loadtest"
)

// A POST whose every try got no answer is left out of loadtest's submit
// latencies (answered sends only), and an order it left of unknown fate is
// settled by the re-send after settling, which is no violation: the p99 of
// the answered POSTs then reads "met" although 2% of the POSTs never got
// an answer at all, and nothing in BENCHMARKS.md says so.
func TestP99GoalNotMetWithUnansweredSubmits(t *testing.T) {
	r := sample()
	rep := unansweredHot()
	rep.SettledPerSec = 6_000
	r.Hot = fromReport(ScenarioResult{Orders: 20_000, Products: 1, Stock: 5_000}, rep)
	r.Hot.APIPeakRSS, r.Hot.WorkerPeakRSS = 40<<20, 30<<20
	c := checkByName(t, Checks(r), "submit p99 under the burst (hot, spread, backlog)")
	if c.Verdict == Met {
		t.Errorf("400 of 20,000 POSTs unanswered (not in the latency): got %q %s, want no %s",
			c.Value, c.Verdict, Met)
	}
	if !strings.Contains(c.Value, "400") {
		t.Errorf("the value %q does not say that 400 POSTs went unanswered", c.Value)
	}
}

// The backlog's drain/s divides the orders settled by the time from the
// workers' start to loadtest's last final status (Phases.Settle's end). The
// orders first seen final by the re-send after settling are outside that
// window (loadtest leaves them out of SettledPerSec for that reason), but
// Outcomes.Final() counts them.
func TestBacklogDrainCountsOnlyTheOrdersSettledInItsWindow(t *testing.T) {
	t0 := time.Now()
	rep := &loadtest.Report{
		StartedAt: t0,
		Phases:    loadtest.Phases{Create: 1, Submit: 2, Settle: 5},
		Settled:   20_000,
		Outcomes:  loadtest.Outcomes{Succeeded: 5_000, SoldOut: 15_000},
		// 1,000 orders were first seen final after the settle phase, by
		// the re-sends: 19,000 in the 5 s from the first submit.
		Resends:       1_000,
		SettledPerSec: 19_000.0 / 5,
	}
	secs, perSec := backlogDrain(rep, t0.Add(2*time.Second)) // workers started 1 s after the first submit
	if secs < 3.99 || secs > 4.01 {
		t.Fatalf("drain %.3f s, want 4 s", secs)
	}
	if want := 19_000.0 / 4; perSec > want+1 {
		t.Errorf("drain %.0f/s, want %.0f/s: the 1,000 orders settled after the last final status in the window are counted in it", perSec, want)
	}
}

// The RSS figures and the goal say MB: 10^6 bytes. They were MiB (2^20
// bytes) labelled MB, so a process at 102 MB read "97 MB" and met the
// goal of 100 MB.
func TestRSSIsInMegabytes(t *testing.T) {
	r := sample()
	r.Hot.APIPeakRSS = 102_000_000
	c := checkByName(t, Checks(r), "peak RSS of any API process")
	if c.Value != "102 MB" || c.Verdict != Missed {
		t.Errorf("an API at 102,000,000 bytes against ≤ 100 MB: got %q %s, want %q %s", c.Value, c.Verdict, "102 MB", Missed)
	}
	r.Hot.APIPeakRSS = 100_000_000
	if c := checkByName(t, Checks(r), "peak RSS of any API process"); c.Value != "100 MB" || c.Verdict != Met {
		t.Errorf("an API at 100,000,000 bytes: got %q %s, want %q %s", c.Value, c.Verdict, "100 MB", Met)
	}
	if got := mb(52 << 20); got != "55 MB" {
		t.Errorf("mb(52 MiB): got %q, want %q", got, "55 MB")
	}
}

// Units sold per second divide the orders that succeeded by the settle
// phase, which ends at the last final status seen before the re-sends
// after settling; the orders those re-sends first see final (sold ones
// too) are in Outcomes but after the window. With re-sends the units sold
// in the window are unknown: the figure is not measured, not inflated.
func TestUnitsSoldPerSecondCountOnlyTheirWindow(t *testing.T) {
	r := sample()
	rep := unansweredHot()
	rep.Settled = 20_000
	rep.SettledPerSec = 19_600 / 3.3 // 400 first seen final by the re-sends, after the window
	r.Hot = fromReport(ScenarioResult{Orders: 20_000, Products: 1, Stock: 5_000}, rep)
	c := checkByName(t, Checks(r), "units sold/s: hot ÷ lock-in-request")
	if c.Verdict != Unknown {
		t.Errorf("hot with 400 orders re-sent after its settle phase: got %q %s, want %s (5,000 sold includes orders settled after the window)",
			c.Value, c.Verdict, Unknown)
	}
	rep.Resends, rep.SettledPerSec = 0, 20_000/3.3
	r.Hot = fromReport(ScenarioResult{Orders: 20_000, Products: 1, Stock: 5_000}, rep)
	if c := checkByName(t, Checks(r), "units sold/s: hot ÷ lock-in-request"); c.Value != "1,515 / 50 = 30.30×" {
		t.Errorf("hot without re-sends: got %q %s, want %q", c.Value, c.Verdict, "1,515 / 50 = 30.30×")
	}
}

// "How to read it" says a POST that got no answer is in no latency and the
// p99 goal then says how many: also when the p99 of the answered ones
// already misses the goal (it was left out then).
func TestP99GoalSaysHowManyPOSTsWentUnansweredWhenMissed(t *testing.T) {
	r := sample()
	r.Hot.Submit.P99 = 40
	r.Hot.UnansweredSubmits = 400
	c := checkByName(t, Checks(r), "submit p99 under the burst (hot, spread, backlog)")
	if c.Verdict != Missed || !strings.Contains(c.Value, "hot 40.0 ms (400 POSTs unanswered, not in it)") {
		t.Errorf("got %q %s, want %s and the 400 unanswered POSTs told", c.Value, c.Verdict, Missed)
	}
}

// unansweredHot is a verified hot run of 20,000 orders in which 400 POSTs
// got no answer after every try (each order then re-sent after settling).
func unansweredHot() *loadtest.Report {
	return &loadtest.Report{
		Sent: 20_000, Answered: 19_600, TransportErrors: 400 * 4, Resends: 400,
		SubmitStatus:    map[string]int64{"202": 5_400, "409": 14_200, "error": 1_600},
		SubmitLatency:   loadtest.Latency{Count: 19_600, P50: 2, P95: 8, P99: 12},
		Outcomes:        loadtest.Outcomes{Succeeded: 5_000, SoldOut: 400, SoldOutFastPath: 14_600},
		Phases:          loadtest.Phases{Create: 0.1, Submit: 3, Settle: 3.3, Verify: 1, Total: 4.4},
		Verified:        true,
		OK:              true,
		ViolationCounts: map[loadtest.ViolationCode]int{},
	}
}

// A figure beside a verdict is shown with the digits it takes not to read
// as the goal itself: rounded to the usual precision, a ratio of 0.6996
// read "0.70×" next to "≥ 0.70×" and MISSED, a p99 of 25.04 ms "25.0 ms"
// next to "≤ 25 ms", and 100.4 MB "100 MB" next to "≤ 100 MB".
func TestFiguresBesideAMissedGoalDoNotReadAsTheGoal(t *testing.T) {
	r := sample()
	r.Hot.SettledPerSec = 0.6996 * r.Ceiling.EndToEndPerSec
	r.Spread.Submit.P99 = 25.04
	r.Hot.APIPeakRSS = 100_400_000
	checks := Checks(r)
	for _, tc := range []struct{ name, value string }{
		{"hot settled/s ÷ queue ceiling end-to-end/s", "5,597 / 8,000 = 0.6996×"},
		{"submit p99 under the burst (hot, spread, backlog)", "hot 12.0 ms, spread 25.04 ms, backlog 10.0 ms"},
		{"peak RSS of any API process", "100.4 MB"},
	} {
		if c := checkByName(t, checks, tc.name); c.Value != tc.value || c.Verdict != Missed {
			t.Errorf("%s: got %q %s, want %q %s", tc.name, c.Value, c.Verdict, tc.value, Missed)
		}
	}
	// Away from the goal, the usual precision.
	if got := beside(0.6412, 0.70, 2); got != "0.64" {
		t.Errorf("beside(0.6412, 0.70, 2) = %q, want %q", got, "0.64")
	}
	if got := beside(0.70, 0.70, 2); got != "0.70" {
		t.Errorf("beside(0.70, 0.70, 2) = %q, want %q", got, "0.70")
	}
}
