package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// ReportSchema is the version of the JSON report's layout. It changes only
// when a field is renamed or removed; new fields may appear without a change.
const ReportSchema = 1

// maxQueueSamples bounds the queue-depth samples kept in a Report (evenly
// spaced over the run, the last one included).
const maxQueueSamples = 60

// maxTextViolationsPerCode bounds the violations WriteText lists per code;
// the Report (and its JSON) holds all of them.
const maxTextViolationsPerCode = 20

// Report is the result of one run. Its JSON form (see [Report.WriteJSON]) has
// the field names given in the tags; they are stable within [ReportSchema].
// Durations are in seconds and latencies in milliseconds, as float64.
type Report struct {
	// Schema is ReportSchema.
	Schema int `json:"schema"`
	// RunID prefixes every id the run created.
	RunID string `json:"run_id"`
	// StartedAt is when the run started.
	StartedAt time.Time `json:"started_at"`
	// Settings echo the effective Config (without the admin token).
	Settings Settings `json:"settings"`
	// Phases are the phase durations.
	Phases Phases `json:"phases_seconds"`

	// Orders is the number of logical orders planned (Config.Orders);
	// Duplicates the number of duplicate sends planned.
	Orders     int `json:"orders"`
	Duplicates int `json:"duplicates"`
	// Sent is the number of sends started (originals and duplicates, not
	// counting retries).
	Sent int64 `json:"sent"`
	// Answered counts POST /v1/orders requests that got an HTTP answer
	// (retries and duplicates included); TransportErrors those that got none,
	// or a status other than 5xx whose body could not be read.
	Answered        int64 `json:"answered"`
	TransportErrors int64 `json:"transport_errors"`
	// Retries counts re-sends after a connection error or a 5xx.
	Retries int64 `json:"retries"`
	// Resends counts the keys re-sent once after settling because every
	// earlier send got no answer or a 5xx (their fate was unknown). Their
	// answers count in no figure above, only in the verification; the
	// orders they settle count in Settled and Outcomes, but not in the
	// settle phase, SettledPerSec or the final latencies.
	Resends int64 `json:"resends"`
	// SubmittedPerSec is Answered divided by the submit duration (first send
	// to last answer).
	SubmittedPerSec float64 `json:"submitted_per_sec"`
	// Settled counts the orders that reached a final outcome (accepted and
	// seen final, or answered 409 sold_out): Outcomes.Final(). SettledPerSec
	// divides the ones seen final before the re-sends after settling by the
	// time from the first send to the last final status observed then.
	Settled       int64   `json:"settled"`
	SettledPerSec float64 `json:"settled_per_sec"`
	// Polls counts GET /v1/orders/{id} requests of the settle phase.
	Polls int64 `json:"polls"`
	// Rereads counts GET /v1/orders/{id} requests of the verify phase, which
	// reads every order that settled final once more (not in Polls or
	// PollStatus).
	Rereads int64 `json:"rereads"`
	// SubmitStatus and PollStatus are status-code mixes of POST /v1/orders
	// and GET /v1/orders/{id}: "202" → count; "error" counts requests
	// without an answer.
	SubmitStatus map[string]int64 `json:"submit_status"`
	PollStatus   map[string]int64 `json:"poll_status"`
	// Outcomes is the outcome mix of the logical orders.
	Outcomes Outcomes `json:"outcomes"`
	// SubmitLatency is from each send's intended time (its actual start in a
	// closed burst) to its last answer, retries included; answered sends only.
	SubmitLatency Latency `json:"submit_latency_ms"`
	// SubmitLatencyByStatus splits SubmitLatency by the status code of the
	// answer ("202", "409", ...; the keys of SubmitStatus that had a last
	// answer): the accepted orders' latency apart from the fast path's.
	SubmitLatencyByStatus map[string]Latency `json:"submit_latency_by_status_ms"`
	// FinalLatency is from an order's first send (its intended time) to its
	// final status being observed (or its 409 sold_out answer), once per order.
	FinalLatency Latency `json:"final_latency_ms"`
	// MaxSendLagMS is the largest delay of a send behind its intended time
	// (open-rate runs: how far the tool fell behind).
	MaxSendLagMS float64 `json:"max_send_lag_ms"`
	// Queue is the queue depth during the run.
	Queue QueueReport `json:"queue"`
	// Totals sums the products.
	Totals Totals `json:"totals"`
	// Products has one entry per product created.
	Products []ProductReport `json:"products"`

	// Verified is false when the run was interrupted before verification
	// (Violations is then empty but OK is false).
	Verified bool `json:"verified"`
	// OK is true when the run was verified and found no violation.
	OK bool `json:"ok"`
	// ViolationCounts counts Violations by code.
	ViolationCounts map[ViolationCode]int `json:"violation_counts"`
	// Violations lists every violation found.
	Violations []Violation `json:"violations"`
}

// Settings are the effective settings of a run.
type Settings struct {
	APIs              []string `json:"apis"`
	Orders            int      `json:"orders"`
	Concurrency       int      `json:"concurrency"`
	SettleConcurrency int      `json:"settle_concurrency"`
	Users             int      `json:"users"`
	Products          int      `json:"products"`
	Hot               bool     `json:"hot"`
	Stock             int64    `json:"stock"`
	PerUserLimit      int      `json:"per_user_limit"`
	MaxQuantity       int      `json:"max_quantity"`
	DupRate           float64  `json:"dup_rate"`
	Rate              float64  `json:"rate"`
	Seed              uint64   `json:"seed"`
	TimeoutSeconds    float64  `json:"timeout_seconds"`
	PollWaitSeconds   float64  `json:"poll_wait_seconds"`
	MaxRetries        int      `json:"max_retries"`
}

// Phases are phase durations in seconds. Settle runs from the first send to
// the last final status observed, so it overlaps Submit.
type Phases struct {
	Create float64 `json:"create"`
	Submit float64 `json:"submit"`
	Settle float64 `json:"settle"`
	Verify float64 `json:"verify"`
	Total  float64 `json:"total"`
}

// Latency summarises one HdrHistogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// QueueReport is the queue depth seen through GET /v1/queue. Depth is
// pending + active + scheduled + retry.
type QueueReport struct {
	// Available is true when at least one sample was taken.
	Available bool `json:"available"`
	// Unavailable says why sampling stopped or never worked (e.g. 404 from an
	// older server).
	Unavailable string `json:"unavailable,omitempty"`
	Name        string `json:"name,omitempty"`
	MaxDepth    int64  `json:"max_depth"`
	// SampleCount is how many samples were taken; Samples keeps at most 60
	// of them, evenly spaced.
	SampleCount int           `json:"sample_count"`
	Samples     []QueueSample `json:"samples"`
	// Missed counts samples that got no answer or a 5xx (the queue's Redis
	// restarting, say). Queue depth is an operator's view, not a buyer's,
	// so these are reported here and are not violations; 5xx answers to
	// the order and product endpoints are.
	Missed int `json:"missed,omitempty"`
	// LastMiss is the last missed sample's answer.
	LastMiss string `json:"last_miss,omitempty"`
}

// QueueSample is one GET /v1/queue answer.
type QueueSample struct {
	// AtSeconds is the time since the run started.
	AtSeconds float64 `json:"at_seconds"`
	Depth     int64   `json:"depth"`
	Size      int64   `json:"size"`
	Pending   int64   `json:"pending"`
	Active    int64   `json:"active"`
	Scheduled int64   `json:"scheduled"`
	Retry     int64   `json:"retry"`
	Archived  int64   `json:"archived"`
	Completed int64   `json:"completed"`
}

// Totals sums the products that could be read back.
type Totals struct {
	Stocked        int64 `json:"stocked"`
	Stock          int64 `json:"stock"`
	Sold           int64 `json:"sold"`
	SucceededUnits int64 `json:"succeeded_units"`
}

// ProductReport is one product's figures.
type ProductReport struct {
	ID string `json:"id"`
	// Orders counts the logical orders sent to it.
	Orders int `json:"orders"`
	// Stocked is what it was created with; Stock and Sold are read back
	// after settling (0 when Read is false).
	Stocked int64 `json:"stocked"`
	Stock   int64 `json:"stock"`
	Sold    int64 `json:"sold"`
	Read    bool  `json:"read"`
	// SucceededUnits sums the quantities of its succeeded orders;
	// DemandUnits those of orders that ended succeeded, sold_out (either
	// way) or failed.
	SucceededUnits int64    `json:"succeeded_units"`
	DemandUnits    int64    `json:"demand_units"`
	Outcomes       Outcomes `json:"outcomes"`
}

// report builds the Report from the runner's figures and the analysis.
func (r *runner) report(a *analysis, verified bool) *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cfg
	rep := &Report{
		Schema:    ReportSchema,
		RunID:     c.RunID,
		StartedAt: r.started,
		Settings: Settings{
			APIs: c.APIs, Orders: c.Orders, Concurrency: c.Concurrency, SettleConcurrency: c.SettleConcurrency,
			Users: c.Users, Products: c.Products, Hot: c.Hot, Stock: c.Stock, PerUserLimit: c.PerUserLimit,
			MaxQuantity: c.MaxQuantity, DupRate: c.DupRate, Rate: c.Rate, Seed: c.Seed,
			TimeoutSeconds: c.Timeout.Seconds(), PollWaitSeconds: c.PollWait.Seconds(), MaxRetries: c.MaxRetries,
		},
		Orders:                len(r.plan.orders),
		Duplicates:            r.plan.dups,
		Sent:                  r.sentN.Load(),
		Answered:              r.answered,
		TransportErrors:       r.transportErrs,
		Retries:               r.retries,
		Resends:               r.resends,
		Settled:               a.outcomes.Final(),
		Polls:                 r.polls,
		Rereads:               r.rereadN,
		SubmitStatus:          maps.Clone(r.submitStatus),
		PollStatus:            maps.Clone(r.pollStatus),
		Outcomes:              a.outcomes,
		SubmitLatency:         LatencyOf(r.submitHist),
		SubmitLatencyByStatus: map[string]Latency{},
		FinalLatency:          LatencyOf(r.finalHist),
		MaxSendLagMS:          ms(r.maxLag),
		Queue:                 r.queueInfo,
		Verified:              verified,
		ViolationCounts:       map[ViolationCode]int{},
		Violations:            []Violation{},
	}
	for k, h := range r.submitByStatus {
		rep.SubmitLatencyByStatus[k] = LatencyOf(h)
	}
	rep.Queue.SampleCount = len(r.queueInfo.Samples)
	rep.Queue.Samples = thin(r.queueInfo.Samples, maxQueueSamples)
	if !rep.Queue.Available && rep.Queue.Unavailable == "" {
		rep.Queue.Unavailable = "not sampled"
	}

	end := r.verified
	if end.IsZero() {
		end = r.settledAt
	}
	rep.Phases = Phases{
		Create: sec(r.created.Sub(r.started)),
		Verify: sec(r.verified.Sub(r.settledAt)),
		Total:  sec(end.Sub(r.started)),
	}
	if !r.firstSubmit.IsZero() {
		if !r.lastAnswer.IsZero() {
			rep.Phases.Submit = sec(r.lastAnswer.Sub(r.firstSubmit))
		}
		if !r.lastFinal.IsZero() {
			rep.Phases.Settle = sec(r.lastFinal.Sub(r.firstSubmit))
		}
	}
	rep.SubmittedPerSec = perSec(rep.Answered, rep.Phases.Submit)
	rep.SettledPerSec = perSec(rep.Settled-r.resentFinal, rep.Phases.Settle)

	for _, t := range a.products {
		pr := ProductReport{
			ID: t.obs.ID, Orders: t.orders, Stocked: t.obs.Stocked,
			SucceededUnits: t.succeededUnits, DemandUnits: t.demandUnits, Outcomes: t.outcomes,
		}
		rep.Totals.Stocked += t.obs.Stocked
		rep.Totals.SucceededUnits += t.succeededUnits
		if f := t.obs.Final; f != nil {
			pr.Read, pr.Stock, pr.Sold = true, f.Stock, f.Sold
			rep.Totals.Stock += f.Stock
			rep.Totals.Sold += f.Sold
		}
		rep.Products = append(rep.Products, pr)
	}
	if verified {
		rep.Violations = append(rep.Violations, a.violations...)
		for _, v := range a.violations {
			rep.ViolationCounts[v.Code]++
		}
		rep.OK = len(a.violations) == 0
	}
	return rep
}

// LatencyOf summarises h, whose values are microseconds.
func LatencyOf(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	us := func(v int64) float64 { return float64(v) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		P50:   us(h.ValueAtQuantile(50)),
		P95:   us(h.ValueAtQuantile(95)),
		P99:   us(h.ValueAtQuantile(99)),
		Max:   us(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}

// thin keeps at most n samples, evenly spaced, always with the last one.
func thin(s []QueueSample, n int) []QueueSample {
	if len(s) <= n {
		return append([]QueueSample{}, s...)
	}
	out := make([]QueueSample, 0, n)
	for k := range n {
		out = append(out, s[k*(len(s)-1)/(n-1)])
	}
	return out
}

func sec(d time.Duration) float64 { return max(d, 0).Seconds() }
func ms(d time.Duration) float64  { return float64(max(d, 0)) / float64(time.Millisecond) }

func perSec(n int64, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(n) / seconds
}

// WriteJSON writes the report as indented JSON. Field names are those of the
// struct tags and stay stable within ReportSchema: scripts may rely on them.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteText writes a human-readable report: settings, throughput, status and
// outcome mixes, latencies, queue depth, stock, and the violations grouped by
// code (at most 20 listed per code; the Report holds them all).
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	s := rep.Settings
	mode := "closed burst"
	if s.Rate > 0 {
		mode = fmt.Sprintf("open rate %.0f/s", s.Rate)
	}
	hot := ""
	if s.Hot {
		hot = ", hot"
	}
	fmt.Fprintf(&b, "loadtest %s: %d orders (+%d duplicates) from %d users on %d product(s)%s, stock %d each, max quantity %d\n",
		rep.RunID, rep.Orders, rep.Duplicates, s.Users, s.Products, hot, s.Stock, s.MaxQuantity)
	fmt.Fprintf(&b, "  %s, concurrency %d (settle %d), %d API(s): %s\n", mode, s.Concurrency, s.SettleConcurrency, len(s.APIs), strings.Join(s.APIs, ", "))
	fmt.Fprintf(&b, "phases: create %.2fs, submit %.2fs, settle %.2fs (first send to last final), verify %.2fs (read back), total %.2fs\n",
		rep.Phases.Create, rep.Phases.Submit, rep.Phases.Settle, rep.Phases.Verify, rep.Phases.Total)
	fmt.Fprintf(&b, "throughput: submitted %.1f/s (%d answered), settled %.1f/s (%d final)\n",
		rep.SubmittedPerSec, rep.Answered, rep.SettledPerSec, rep.Settled)
	if s.Rate > 0 {
		fmt.Fprintf(&b, "  max send lag behind schedule: %.1f ms\n", rep.MaxSendLagMS)
	}
	fmt.Fprintf(&b, "submit status: %s   retries: %d", mix(rep.SubmitStatus), rep.Retries)
	if rep.Resends > 0 {
		fmt.Fprintf(&b, ", re-sent after settling (fate unknown): %d", rep.Resends)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "poll status:   %s   (%d polls; %d re-reads after settling)\n", mix(rep.PollStatus), rep.Polls, rep.Rereads)
	o := rep.Outcomes
	fmt.Fprintf(&b, "outcomes: succeeded %d, sold_out %d, sold_out_fast_path(409) %d, limit_exceeded %d, failed %d, unsettled %d, rejected %d, unsent %d\n",
		o.Succeeded, o.SoldOut, o.SoldOutFastPath, o.LimitExceeded, o.Failed, o.Unsettled, o.Rejected, o.Unsent)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "latency ms\tcount\tp50\tp95\tp99\tmax\t\n")
	type row struct {
		name string
		l    Latency
	}
	rows := []row{{"submit", rep.SubmitLatency}}
	if len(rep.SubmitLatencyByStatus) > 1 {
		for _, k := range slices.Sorted(maps.Keys(rep.SubmitLatencyByStatus)) {
			rows = append(rows, row{"  answered " + k, rep.SubmitLatencyByStatus[k]})
		}
	}
	rows = append(rows, row{"submit→final", rep.FinalLatency})
	for _, l := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t\n", l.name, l.l.Count, l.l.P50, l.l.P95, l.l.P99, l.l.Max)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	q := rep.Queue
	if q.Available {
		var depths []string
		for _, x := range thin(q.Samples, 12) {
			depths = append(depths, fmt.Sprintf("%.1fs:%d", x.AtSeconds, x.Depth))
		}
		fmt.Fprintf(&b, "queue depth: max %d over %d samples (%s)\n", q.MaxDepth, q.SampleCount, strings.Join(depths, " "))
		if q.Missed > 0 {
			fmt.Fprintf(&b, "  %d sample(s) missed, last: %s\n", q.Missed, q.LastMiss)
		}
		if q.Unavailable != "" {
			fmt.Fprintf(&b, "  sampling stopped: %s\n", q.Unavailable)
		}
	} else {
		fmt.Fprintf(&b, "queue depth: unavailable (%s)\n", q.Unavailable)
	}
	// Sold and left are sums of the products read back (Totals): with
	// none read (an interrupted run, or every read failed) they are
	// unknown, not 0; with some, they are those products' only.
	t := rep.Totals
	read := 0
	for _, p := range rep.Products {
		if p.Read {
			read++
		}
	}
	switch {
	case read == len(rep.Products):
		fmt.Fprintf(&b, "stock: stocked %d, sold %d, left %d, succeeded units %d\n", t.Stocked, t.Sold, t.Stock, t.SucceededUnits)
	case read == 0:
		fmt.Fprintf(&b, "stock: stocked %d, sold and left unknown (no product read back), succeeded units %d\n", t.Stocked, t.SucceededUnits)
	default:
		fmt.Fprintf(&b, "stock: stocked %d, sold %d and left %d in the %d of %d products read back, succeeded units %d\n",
			t.Stocked, t.Sold, t.Stock, read, len(rep.Products), t.SucceededUnits)
	}

	switch {
	case !rep.Verified:
		fmt.Fprintf(&b, "result: NOT VERIFIED (run interrupted)\n")
	case rep.OK:
		fmt.Fprintf(&b, "result: OK, no violations\n")
	default:
		fmt.Fprintf(&b, "result: FAIL, %d violation(s)\n", len(rep.Violations))
		codes := slices.Sorted(maps.Keys(rep.ViolationCounts))
		for _, code := range codes {
			fmt.Fprintf(&b, "  %s (%d):\n", code, rep.ViolationCounts[code])
			n := 0
			for _, v := range rep.Violations {
				if v.Code != code {
					continue
				}
				if n == maxTextViolationsPerCode {
					fmt.Fprintf(&b, "    ... and %d more (see the JSON report)\n", rep.ViolationCounts[code]-n)
					break
				}
				fmt.Fprintf(&b, "    %s\n", v.Message)
				n++
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mix formats a status-code mix as "202=10 409=3", sorted by code.
func mix(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
