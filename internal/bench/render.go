package bench

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flashsale/flashsale/loadtest"
)

// SectionHeading is the heading of the part of BENCHMARKS.md that `make
// bench` owns; [ReplaceSection] rewrites only that section.
const SectionHeading = "## make bench"

// Goals of issue 5, checked by [Checks].
const (
	GoalHotVsCeiling     = 0.70
	GoalBacklogVsCeiling = 0.80
	GoalSpreadVsHot      = 1.0
	GoalHotVsOneByOne    = 5.0
	GoalSubmitP99MS      = 25.0
	GoalPeakRSSBytes     = 100 * megabyte // 100 MB
)

// megabyte is the MB of the RSS figures and goal: 10^6 bytes (not MiB).
const megabyte = 1_000_000

// Verdict says whether a goal was met.
type Verdict string

// Verdicts of a [Check].
const (
	Met     Verdict = "met"
	Missed  Verdict = "MISSED"
	NoGoal  Verdict = "-"
	Unknown Verdict = "n/a" // a figure it needs was not measured
)

// Check is one ratio or goal of the run.
type Check struct {
	Name    string
	Value   string
	Goal    string
	Verdict Verdict
}

// ratio returns a/b and whether both were measured (> 0).
func ratio(a, b float64) (float64, bool) {
	if a <= 0 || b <= 0 {
		return 0, false
	}
	return a / b, true
}

// atLeast builds a check of value ≥ goal.
func atLeast(name, formula string, a, b, goal float64) Check {
	c := Check{Name: name, Goal: "≥ " + trimFloat(goal) + "×"}
	r, ok := ratio(a, b)
	if !ok {
		c.Value, c.Verdict = formula+": not measured (a part did not run, or its invariants did not hold)", Unknown
		return c
	}
	c.Value = fmt.Sprintf("%s / %s = %s×", rate(a), rate(b), beside(r, goal, 2))
	c.Verdict = Missed
	if r >= goal {
		c.Verdict = Met
	}
	return c
}

// info builds a ratio with no goal.
func info(name string, a, b float64) Check {
	c := Check{Name: name, Goal: "-", Verdict: NoGoal}
	if v, ok := ratio(a, b); ok {
		c.Value = fmt.Sprintf("%s / %s = %.2f×", rate(a), rate(b), v)
	} else {
		c.Value, c.Verdict = "not measured", Unknown
	}
	return c
}

// Checks computes the ratios the issue asks for and checks the goals.
func Checks(r Results) []Check {
	// A rate counts only from a part that ran to the end with its
	// invariants held (a ceiling that processed every task once): a fast
	// run that lost orders measures nothing.
	ceiling := 0.0
	if r.Ceiling.Ran && r.Ceiling.OK() {
		ceiling = r.Ceiling.EndToEndPerSec
	}
	valid := func(s ScenarioResult) bool { return s.Ran && s.Verified && s.OK }
	settled := func(s ScenarioResult) float64 {
		if !valid(s) {
			return 0
		}
		return s.SettledPerSec
	}
	drain := 0.0
	if valid(r.Backlog) {
		drain = r.Backlog.DrainPerSec
	}
	// Units sold per second of the settle phase: like for like between
	// hot (whose settled/s counts its fast-path 409s) and lock-in-request
	// (whose 429s are no outcome). Orders re-sent after settling may have
	// sold after the window, and Outcomes does not say which: then the
	// units sold in it are unknown.
	soldPerSec := func(s ScenarioResult) float64 {
		if !valid(s) || s.SettleSeconds <= 0 || s.Resends > 0 {
			return 0
		}
		return float64(s.Outcomes.Succeeded) / s.SettleSeconds
	}
	checks := []Check{
		atLeast("hot settled/s ÷ queue ceiling end-to-end/s", "hot ÷ ceiling", settled(r.Hot), ceiling, GoalHotVsCeiling),
		atLeast("backlog drain/s ÷ queue ceiling end-to-end/s", "backlog ÷ ceiling", drain, ceiling, GoalBacklogVsCeiling),
		atLeast("spread settled/s ÷ hot settled/s", "spread ÷ hot", settled(r.Spread), settled(r.Hot), GoalSpreadVsHot),
		atLeast("hot settled/s ÷ one-by-one settled/s", "hot ÷ one-by-one", settled(r.Hot), settled(r.OneByOne), GoalHotVsOneByOne),
	}

	// The HTTP front is a floor for an accepted order's path: these say how
	// much of the ceiling HTTP itself leaves, and how close hot comes to
	// that floor. (Backlog's drain has no POSTs in its window, the front's
	// rate does: no ratio between them.)
	front := 0.0
	if r.Front.OK() {
		front = r.Front.EndToEndPerSec
	}
	checks = append(checks,
		info("HTTP front end-to-end/s ÷ queue ceiling end-to-end/s", front, ceiling),
		info("hot settled/s ÷ HTTP front end-to-end/s", settled(r.Hot), front),
		info("units sold/s: hot ÷ lock-in-request", soldPerSec(r.Hot), soldPerSec(r.LockInRequest)))
	if r.Hot.Ran && r.LockInRequest.Ran {
		checks = append(checks, Check{
			Name: "units sold of the hot stock: hot vs lock-in-request",
			Value: fmt.Sprintf("%s of %s vs %s of %s (%s turned away with 429)",
				count(r.Hot.Outcomes.Succeeded), count(r.Hot.Stock), count(r.LockInRequest.Outcomes.Succeeded),
				count(r.LockInRequest.Stock), count(r.LockInRequest.SubmitStatus["429"])),
			Goal: "-", Verdict: NoGoal,
		})
	}

	// p99 submit latency of the product (batch mode) under the burst.
	p99 := Check{Name: "submit p99 under the burst (hot, spread, backlog)", Goal: fmt.Sprintf("≤ %s ms", trimFloat(GoalSubmitP99MS)), Verdict: Met}
	var parts []string
	for _, s := range []struct {
		name string
		res  ScenarioResult
	}{{"hot", r.Hot}, {"spread", r.Spread}, {"backlog", r.Backlog}} {
		if !s.res.Ran || s.res.Submit.Count == 0 {
			parts = append(parts, s.name+" n/a")
			p99.Verdict = worse(p99.Verdict, Unknown)
			continue
		}
		part := fmt.Sprintf("%s %s ms", s.name, beside(s.res.Submit.P99, GoalSubmitP99MS, 1))
		// Unanswered POSTs are in no latency: the p99 of the others says
		// nothing of them, and the value says how many, met or not.
		if s.res.UnansweredSubmits > 0 {
			part += fmt.Sprintf(" (%s POSTs unanswered, not in it)", count(s.res.UnansweredSubmits))
		}
		// A part that failed (timed out, broke an invariant) can still be
		// too slow, but being fast says nothing: quick failures keep a p99
		// low.
		if !valid(s.res) {
			part += " (part failed)"
		}
		parts = append(parts, part)
		switch {
		case s.res.Submit.P99 > GoalSubmitP99MS:
			p99.Verdict = Missed
		case s.res.UnansweredSubmits > 0 || !valid(s.res):
			p99.Verdict = worse(p99.Verdict, Unknown)
		}
	}
	p99.Value = strings.Join(parts, ", ")
	checks = append(checks, p99)

	// Peak RSS of API and worker processes, over every product scenario.
	product := []ScenarioResult{r.Hot, r.Spread, r.Backlog, r.OneByOne}
	for _, kind := range []string{"API", "worker"} {
		c := Check{Name: "peak RSS of any " + kind + " process", Goal: "≤ " + mb(GoalPeakRSSBytes), Verdict: Met}
		var peak int64
		measured := 0
		for _, s := range product {
			v := s.APIPeakRSS
			if kind == "worker" {
				v = s.WorkerPeakRSS
			}
			if s.Ran && v > 0 {
				measured++
				peak = max(peak, v)
			}
		}
		switch {
		case measured == 0:
			c.Value, c.Verdict = "not measured", Unknown
		default:
			c.Value = beside(float64(peak)/megabyte, GoalPeakRSSBytes/megabyte, 0) + " MB"
			if peak > GoalPeakRSSBytes {
				c.Verdict = Missed
			}
			if measured < len(product) {
				c.Verdict = worse(c.Verdict, Unknown)
			}
		}
		checks = append(checks, c)
	}

	// Invariants in every scenario.
	inv := Check{Name: "loadtest invariants held", Goal: "every scenario", Verdict: Met}
	var bad []string
	all := []struct {
		name string
		res  ScenarioResult
	}{{"hot", r.Hot}, {"spread", r.Spread}, {"backlog", r.Backlog}, {"one-by-one", r.OneByOne}, {"lock-in-request", r.LockInRequest}}
	held := 0
	for _, s := range all {
		switch {
		case !s.res.Ran || !s.res.Verified:
			bad = append(bad, s.name+" not verified")
			inv.Verdict = worse(inv.Verdict, Unknown)
		case !s.res.OK:
			bad = append(bad, s.name+" "+violationList(s.res.Violations))
			inv.Verdict = Missed
		default:
			held++
		}
	}
	inv.Value = fmt.Sprintf("%d of %d", held, len(all))
	if len(bad) > 0 {
		inv.Value += " (" + strings.Join(bad, "; ") + ")"
	}
	checks = append(checks, inv)
	if r.Ceiling.Ran {
		c := Check{Name: "queue ceiling: every task processed once", Goal: "-", Verdict: NoGoal,
			Value: fmt.Sprintf("%s enqueued, %s processed, %s enqueue errors",
				count(r.Ceiling.Enqueued), count(r.Ceiling.Processed), count(r.Ceiling.EnqueueErrors))}
		checks = append(checks, c)
	}
	if f := r.Front; f.Ran {
		checks = append(checks, Check{Name: "HTTP front: every order accepted, answered and processed once", Goal: "-", Verdict: NoGoal,
			Value: fmt.Sprintf("%s accepted, %s answered, %s processed, %s failed requests",
				count(f.Accepted), count(f.Answered), count(f.Processed), count(f.Errors))})
	}
	return checks
}

// worse returns the more severe of two verdicts (Missed > Unknown > Met).
func worse(a, b Verdict) Verdict {
	rank := map[Verdict]int{Met: 0, NoGoal: 0, Unknown: 1, Missed: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func violationList(v map[loadtest.ViolationCode]int) string {
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(v)) {
		parts = append(parts, fmt.Sprintf("%s×%d", code, v[code]))
	}
	if len(parts) == 0 {
		return "violations"
	}
	return strings.Join(parts, " ")
}

// Render returns the BENCHMARKS.md section (heading included) for r.
func Render(r Results) string {
	var b strings.Builder
	s := r.Settings
	fmt.Fprintf(&b, "%s\n\n", SectionHeading)
	how := "`" + r.Command + "`"
	if r.Invocation != "" && r.Invocation != r.Command {
		how += ", which ran `" + r.Invocation + "`"
	}
	if r.Commit != "" {
		how += " at commit " + r.Commit
	}
	fmt.Fprintf(&b, "Measured %s with %s (took %s).\n\n", r.Date.UTC().Format("2006-01-02 15:04 MST"), how, r.Elapsed.Round(time.Second))
	m := r.Machine
	fmt.Fprintf(&b, "Machine: %d cores (%s), %s memory, Linux %s; %s; Redis %s and PostgreSQL %s on the same machine, "+
		"as are the load generator and every process; 1-minute load average at the start: %s.\n\n",
		m.Cores, orNA(m.CPU), gib(m.MemoryBytes), orNA(m.Kernel), orNA(m.GoVersion), orNA(m.RedisVersion), orNA(m.PostgresVersion), orNA(m.LoadAvg))
	if r.Note != "" {
		fmt.Fprintf(&b, "**Note:** %s\n\n", r.Note)
	}
	fmt.Fprintf(&b, "Every run: %s single-unit orders from as many distinct buyers, a closed burst of %d requests in flight "+
		"spread round robin over %d API processes, %d worker processes with FLASHSALE_WORKER_CONCURRENCY=%d, "+
		"a fresh database and Redis DB. The sold-out fast path is on (the product's behaviour).\n\n",
		count(s.Orders), s.Concurrency, s.APIs, s.Workers, s.WorkerConcurrency)

	b.WriteString("### Throughput\n\n")
	rows := [][]string{}
	c := r.Ceiling
	if c.Ran {
		rows = append(rows, []string{"queue ceiling", fmt.Sprintf("%s no-op asynq tasks; %d producer and %d consumer processes × %d",
			count(c.Tasks), c.Producers, c.Consumers, c.Concurrency),
			rate(c.EnqueuePerSec) + " (enqueue)", rate(c.EndToEndPerSec) + " (end to end)", secs(c.EndToEndSeconds), okText(c.OK())})
	} else {
		rows = append(rows, []string{"queue ceiling", "not measured: " + c.Err, "", "", "", ""})
	}
	f := r.Front
	if f.Ran {
		rows = append(rows, []string{"HTTP front", fmt.Sprintf("%s orders, each a POST that enqueues a no-op task and a GET answered from memory "+
			"(%d POSTs and %d GETs in flight); %d gin servers, %d no-op consumer processes × %d",
			count(f.Orders), f.Senders, f.Pollers, f.Servers, f.Consumers, f.ConsumerConcurrency),
			rate(f.SubmittedPerSec), rate(f.EndToEndPerSec) + " (end to end)", secs(f.EndToEndSeconds), frontOKText(f)})
	} else {
		rows = append(rows, []string{"HTTP front", "not measured: " + f.Err, "", "", "", ""})
	}
	for _, sc := range scenarios(r) {
		res := sc.res
		if !res.Ran {
			rows = append(rows, []string{sc.name, sc.setup + "; not measured: " + res.Err, "", "", "", ""})
			continue
		}
		settled, sec := rate(res.SettledPerSec), secs(res.SettleSeconds)
		if sc.name == "backlog" {
			settled = rate(res.DrainPerSec) + " (drain)"
			sec = secs(res.DrainSeconds) + " (drain)"
			if res.DrainCommitSeconds > 0 {
				sec += "; last commit " + secs(res.DrainCommitSeconds)
			}
		}
		rows = append(rows, []string{sc.name, sc.setup, rate(res.SubmittedPerSec), settled, sec, invariantText(res)})
	}
	b.WriteString(table([]string{"run", "setup", "submitted/s", "settled/s", "seconds", "invariants"}, rows))

	b.WriteString("\n### Outcomes\n\n")
	rows = rows[:0]
	for _, sc := range scenarios(r) {
		res := sc.res
		if !res.Ran {
			continue
		}
		o := res.Outcomes
		other := o.LimitExceeded + o.Failed + o.Unsettled + o.Unsent + o.Rejected - res.SubmitStatus["429"]
		rows = append(rows, []string{sc.name, count(res.Orders), count(res.Accepted()), count(o.Succeeded), count(o.SoldOut),
			count(o.SoldOutFastPath), count(res.SubmitStatus["429"]), count(other)})
	}
	b.WriteString(table([]string{"run", "orders", "202 (through the queue)", "succeeded", "sold_out (decided by a worker)",
		"409 sold_out (fast path)", "429 (turned away)", "other"}, rows))

	b.WriteString("\n### Latency and memory\n\n")
	rows = rows[:0]
	if c.Ran {
		rows = append(rows, []string{"queue ceiling", "-", "-", "-", "-", "-", "-", "-",
			mb(c.ProducerPeakRSS) + " (producer)", mb(c.ConsumerPeakRSS) + " (consumer)"})
	}
	if f.Ran {
		rows = append(rows, []string{"HTTP front", ms(f.Submit.P50), ms(f.Submit.P95), ms(f.Submit.P99), "-", "-", "-", "-",
			mb(f.ServerPeakRSS) + " (server)", mb(f.ConsumerPeakRSS) + " (consumer)"})
	}
	for _, sc := range scenarios(r) {
		res := sc.res
		if !res.Ran {
			continue
		}
		depth := count(res.MaxQueueDepth)
		if res.MaxQueueDepth < 0 {
			depth = "n/a"
		}
		worker := mb(res.WorkerPeakRSS)
		if sc.name == "lock-in-request" {
			worker = "-"
		}
		rows = append(rows, []string{sc.name, ms(res.Submit.P50), ms(res.Submit.P95), ms(res.Submit.P99),
			byAnswer(res.SubmitByStatus), ms(res.Final.P50), ms(res.Final.P99), depth, mb(res.APIPeakRSS), worker})
	}
	b.WriteString(table([]string{"run", "submit p50 ms", "submit p95 ms", "submit p99 ms", "submit p50 / p99 ms by answer", "submit→final p50 ms",
		"submit→final p99 ms", "max queue depth (sampled each second)", "API peak RSS", "worker peak RSS"}, rows))

	b.WriteString("\n### CPU\n\n")
	rows = rows[:0]
	if c.Ran {
		rows = append(rows, []string{"queue ceiling", secs(c.EndToEndSeconds), cpu(c.ProducerCPUSeconds) + " (producers)",
			cpu(c.ConsumerCPUSeconds) + " (consumers)", "-", perOrder(c.ProducerCPUSeconds+c.ConsumerCPUSeconds, c.Processed)})
	}
	if f.Ran {
		rows = append(rows, []string{"HTTP front", secs(f.EndToEndSeconds), cpu(f.ServerCPUSeconds) + " (servers)",
			cpu(f.ConsumerCPUSeconds) + " (consumers)", cpu(f.LoadGenCPUSeconds), perOrder(f.ServerCPUSeconds+f.ConsumerCPUSeconds, f.Processed)})
	}
	for _, sc := range scenarios(r) {
		res := sc.res
		if !res.Ran {
			continue
		}
		worker := cpu(res.WorkerCPUSeconds)
		per := perOrder(res.APICPUSeconds+res.WorkerCPUSeconds, res.Outcomes.Final())
		if sc.name == "lock-in-request" {
			// Most requests end in a 429, which is no final order.
			worker = "-"
			per = perOrder(res.APICPUSeconds, int64(res.Orders)) + " per request"
		}
		rows = append(rows, []string{sc.name, secs(res.WallSeconds), cpu(res.APICPUSeconds), worker,
			cpu(res.LoadGenCPUSeconds), per})
	}
	b.WriteString(table([]string{"run", "wall s", "API CPU s", "worker CPU s", "load generator CPU s",
		"API+worker CPU ms per final order"}, rows))

	b.WriteString("\n### Ratios and goals (issue 5)\n\n")
	rows = rows[:0]
	for _, ch := range Checks(r) {
		rows = append(rows, []string{ch.Name, ch.Value, ch.Goal, string(ch.Verdict)})
	}
	b.WriteString(table([]string{"figure", "value", "goal", "verdict"}, rows))

	b.WriteString(`
How to read it:
- *settled/s* is loadtest's: orders that reached a final outcome (succeeded, sold_out, or answered 409 sold_out by the fast path) divided by the time from the first submit to the last final status observed. Orders answered 409 never enter the queue; the *Outcomes* table shows how many went through it.
- *queue ceiling* is asynq alone on this machine: as many producer processes as API servers enqueue no-op tasks (the API's enqueue call, same payload size, task id and options) while as many consumer processes as workers, with the worker's concurrency and poll interval, acknowledge them; end to end is first enqueue to last task done.
- *HTTP front* is a floor for an accepted order: what one costs when it is taken over HTTP by gin, queued in asynq one enqueue per order, and asked for once, with nothing else done, built inside the benchmark: as many gin servers as API servers, whose POST /v1/orders enqueues the order with the API's enqueue call and answers 202, and whose GET /v1/orders/{id} answers "queued" from memory; the queue ceiling's consumers; this program sends the POSTs and then each accepted order's GET with loadtest's numbers of submitters and pollers and its request timeout. No stock, lock, transaction or long poll (a server without gin, or one that batched its enqueues, could be cheaper). End to end is the first POST to the last GET answered or task done, whichever is later. Its ratios have no goal: they say how much of the ceiling HTTP leaves on this machine, and how near the product comes to that floor (hot refuses most of its orders with one request each, so it can go past it).
- *backlog* submits every order with the workers stopped, then starts them; drain/s is the orders settled from the workers' start to the last final status loadtest observed; "last commit" is when, after the workers' start, the last deciding transaction began (orders.updated_at), i.e. the drain without the observation. Its submitted/s is what the APIs admit with nothing consuming.
- *one-by-one* is the hot run with FLASHSALE_WORKER_MODE=single: one lock hold and one transaction per order.
- *lock-in-request* is the design this system grew from, built inside the benchmark: an HTTP handler that takes the product's lock (TryAcquire of the lock package), decrements stock in PostgreSQL, releases, and answers 429 when the lock is busy, on the hot product. Its settled/s counts orders sold or answered 409 sold_out; 429s are turned away and are no outcome.
- Submit latency is per POST /v1/orders under the closed burst (HdrHistogram); *by answer* splits it by status code: 202 is an order accepted into the queue, 409 the sold-out fast path (lock-in-request: 429, lock busy); a POST that got no answer after every try is in no latency (the p99 goal then says n/a and how many). Under a closed burst a request's latency is mostly its wait for the CPU, so the mean is about the requests in flight divided by the rate of the phase it falls in. Peak RSS is each process's VmHWM in MB (10^6 bytes), the highest of any API (or lock-in-request server) and of any worker in that run.
- *CPU* is user+system time summed over the processes of each kind during the load test up to the end of its settle phase (wall s: create, submit and settle; not the verify phase, which reads every order again), and the load generator's (this program's) own. What the machine had beyond these (cores × wall) went to Redis, PostgreSQL and anything else running. The ceiling's producers count from their first enqueue, its consumers from when they were ready, to their end; its figure per order is per task. The HTTP front's servers and load generator count from its first POST to its last GET answered, its consumers, as the ceiling's, from ready to their end.
`)
	return b.String()
}

type namedScenario struct {
	name, setup string
	res         ScenarioResult
}

func scenarios(r Results) []namedScenario {
	s := r.Settings
	return []namedScenario{
		{"hot", fmt.Sprintf("1 product, stock %s", count(s.HotStock)), r.Hot},
		{"spread", fmt.Sprintf("%s products, stock %s each", count(s.SpreadProducts), count(s.SpreadStock)), r.Spread},
		{"backlog", backlogSetup(r.Backlog, s.Orders), r.Backlog},
		{"one-by-one", "hot, FLASHSALE_WORKER_MODE=single", r.OneByOne},
		{"lock-in-request", fmt.Sprintf("hot; lock, decrement, release in the handler; %d servers", s.APIs), r.LockInRequest},
	}
}

// backlogSetup says what the backlog part queued before its workers
// started: all the orders, or as many as were queued when the queue stopped
// growing.
func backlogSetup(s ScenarioResult, orders int) string {
	if s.QueuedAtStart > 0 && s.QueuedAtStart < orders {
		return fmt.Sprintf("hot, %s of %s queued before the workers start (the queue stopped growing)", count(s.QueuedAtStart), count(orders))
	}
	return "hot, all queued before the workers start"
}

func invariantText(s ScenarioResult) string {
	switch {
	case !s.Verified:
		return "not verified"
	case s.OK:
		return "held"
	default:
		return "VIOLATED: " + violationList(s.Violations)
	}
}

func frontOKText(f FrontResult) string {
	if f.OK() {
		return "every order once"
	}
	return "ORDERS MISSING OR FAILED"
}

func okText(ok bool) string {
	if ok {
		return "every task once"
	}
	return "TASKS MISSING"
}

// table renders a Markdown table whose columns are padded to line up in a
// terminal too.
func table(headers []string, rows [][]string) string {
	widths := make([]int, len(headers))
	for i, h := range headers {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, row := range rows {
		for i := range headers {
			if i < len(row) {
				widths[i] = max(widths[i], utf8.RuneCountInString(cell(row[i])))
			}
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i := range headers {
			v := ""
			if i < len(cells) {
				v = cell(cells[i])
			}
			b.WriteString(" " + v + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(v)) + " |")
		}
		b.WriteString("\n")
	}
	line(headers)
	b.WriteString("|")
	for _, w := range widths {
		b.WriteString(strings.Repeat("-", w+2) + "|")
	}
	b.WriteString("\n")
	for _, row := range rows {
		line(row)
	}
	return b.String()
}

// cell escapes what would break a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// ReplaceSection returns doc with the section that starts at the line
// heading (up to the next heading of the same or a higher level, or the end)
// replaced by section. When doc has no such section, section is appended;
// when doc is empty, it gets a "# Benchmarks" title first. Everything else
// in doc is kept byte for byte.
func ReplaceSection(doc, heading, section string) string {
	section = strings.TrimRight(section, "\n") + "\n"
	level := len(heading) - len(strings.TrimLeft(heading, "#"))
	lines := strings.SplitAfter(doc, "\n")
	start, end := -1, len(lines)
	inFence := false
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(t, "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if start < 0 {
			if strings.TrimSpace(t) == heading {
				start = i
			}
			continue
		}
		if n := headingLevel(t); n > 0 && n <= level {
			end = i
			break
		}
	}
	if start < 0 {
		if strings.TrimSpace(doc) == "" {
			return "# Benchmarks\n\n" + section
		}
		return strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	before := strings.Join(lines[:start], "")
	after := strings.Join(lines[end:], "")
	if after != "" {
		section += "\n"
	}
	return before + section + after
}

// headingLevel returns n for a Markdown ATX heading of n '#', else 0.
func headingLevel(line string) int {
	n := len(line) - len(strings.TrimLeft(line, "#"))
	if n == 0 || n > 6 || (len(line) > n && line[n] != ' ') {
		return 0
	}
	return n
}

// ---- number formatting ------------------------------------------------------

type number interface{ ~int | ~int64 }

// count formats an integer with thousands separators: 20000 → "20,000".
func count[T number](n T) string {
	s := strconv.FormatInt(int64(n), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// rate formats a per-second figure: whole numbers with separators.
func rate(v float64) string {
	if v <= 0 {
		return "n/a"
	}
	return count(int64(v + 0.5))
}

func secs(v float64) string {
	if v <= 0 {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// byAnswer renders submit latencies by status code, "202: 4.0 / 20.0; 409:
// 1.0 / 6.0", or "-" when the answers had a single status.
func byAnswer(m map[string]loadtest.Latency) string {
	if len(m) < 2 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %s / %s", k, ms(m[k].P50), ms(m[k].P99)))
	}
	return strings.Join(parts, "; ")
}

func ms(v float64) string {
	if v <= 0 {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// mb formats bytes in MB (10^6 bytes), as the RSS goal is stated.
func mb(bytes int64) string {
	if bytes <= 0 {
		return "n/a"
	}
	return strconv.FormatFloat(float64(bytes)/megabyte, 'f', 0, 64) + " MB"
}

func cpu(seconds float64) string {
	if seconds <= 0 {
		return "n/a"
	}
	return strconv.FormatFloat(seconds, 'f', 1, 64)
}

// perOrder is CPU milliseconds per order.
func perOrder(seconds float64, orders int64) string {
	if seconds <= 0 || orders <= 0 {
		return "n/a"
	}
	return strconv.FormatFloat(seconds*1000/float64(orders), 'f', 2, 64)
}

func gib(bytes int64) string {
	if bytes <= 0 {
		return "n/a"
	}
	return strconv.FormatFloat(float64(bytes)/(1<<30), 'f', 1, 64) + " GiB"
}

// trimFloat formats 0.7 as "0.70", 5 as "5".
// beside formats v with prec decimals, or more when so few would read as
// the goal itself while v is not (a ratio of 0.6996 as "0.70" next to a
// goal of 0.70 and MISSED): the figure shown beside a verdict never seems
// to contradict it.
func beside(v, goal float64, prec int) string {
	out := strconv.FormatFloat(v, 'f', prec, 64)
	for ; prec < 6 && v != goal; prec++ {
		if shown, err := strconv.ParseFloat(out, 64); err != nil || shown != goal {
			break
		}
		out = strconv.FormatFloat(v, 'f', prec+1, 64)
	}
	return out
}

func trimFloat(v float64) string {
	if v == float64(int64(v)) {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}
