package bench

import (
	"time"

	"github.com/flashsale/flashsale/loadtest"
)

// Results is everything one run measured; [Render] turns it into the
// tables of BENCHMARKS.md. A part that could not be measured has Err set
// and its figures left zero.
type Results struct {
	// RunID names everything the run created (databases
	// flashsale_bench_<RunID>_<part>, load-test ids).
	RunID string
	// Date is when the run started.
	Date time.Time
	// Elapsed is the wall time of the whole run, build included.
	Elapsed time.Duration
	// Command is how the run was started (e.g. "make bench"), and
	// Invocation the program's command line when it says more.
	Command    string
	Invocation string
	// Commit is the source measured: the git commit, with "+ changes"
	// when the checkout had uncommitted changes (empty: unknown).
	Commit string
	// Note, when not empty, is printed under the machine line (e.g. that
	// the machine was shared).
	Note    string
	Machine Machine
	// Settings are the numbers every part used.
	Settings Settings

	Ceiling       CeilingResult
	Front         FrontResult
	Hot           ScenarioResult
	Spread        ScenarioResult
	Backlog       ScenarioResult
	OneByOne      ScenarioResult
	LockInRequest ScenarioResult
}

// Settings are the numbers of a run, shared by every part.
type Settings struct {
	Orders            int
	HotStock          int64
	SpreadProducts    int
	SpreadStock       int64
	APIs              int
	Workers           int
	WorkerConcurrency int
	// Concurrency is the load generator's: requests in flight at once.
	Concurrency int
}

// Machine describes where the run happened.
type Machine struct {
	Cores           int
	CPU             string
	MemoryBytes     int64
	Kernel          string
	GoVersion       string
	RedisVersion    string
	PostgresVersion string
	// LoadAvg is the 1-minute load average when the run started, a hint of
	// what else the machine was doing.
	LoadAvg string
}

// ScenarioResult is one loadtest-driven part: hot, spread, backlog,
// one-by-one, or the lock-in-request baseline.
type ScenarioResult struct {
	// Ran is true when the scenario ran to its report; Err says why not.
	Ran bool
	Err string

	Orders   int
	Products int
	Stock    int64

	// SubmittedPerSec and SettledPerSec are loadtest's: answers to
	// POST /v1/orders per second, and orders reaching a final outcome per
	// second from the first submit to the last final status.
	SubmittedPerSec float64
	SettledPerSec   float64
	SettleSeconds   float64
	// DrainPerSec (backlog only) is the orders settled per second from the
	// moment the workers were started to the last final status;
	// DrainSeconds that time.
	DrainPerSec  float64
	DrainSeconds float64
	// DrainCommitSeconds (backlog only) is the time from the workers'
	// start to the start of the last transaction that decided an order:
	// how long the workers took, without loadtest's observation of it.
	DrainCommitSeconds float64
	// QueuedAtStart (backlog only) is how many orders the queue held when
	// the workers started: all of them, unless the queue stopped growing
	// first (some submits failed).
	QueuedAtStart int

	Outcomes     loadtest.Outcomes
	SubmitStatus map[string]int64
	Submit       loadtest.Latency
	// UnansweredSubmits counts the POSTs whose every try got no answer:
	// loadtest leaves them out of Submit (answered sends only).
	UnansweredSubmits int64
	// Resends is loadtest's: the orders re-sent once after settling (every
	// earlier send unanswered or a 5xx). The orders they settle are in
	// Outcomes but after SettleSeconds' window.
	Resends int64
	// SubmitByStatus splits Submit by the answer's status code ("202",
	// "409", ...).
	SubmitByStatus map[string]loadtest.Latency
	Final          loadtest.Latency
	// MaxQueueDepth is the deepest queue seen (-1: not sampled).
	MaxQueueDepth int64

	// APIPeakRSS and WorkerPeakRSS are the highest VmHWM of any API
	// (lock-in-request: its HTTP servers) and any worker process, in bytes.
	APIPeakRSS    int64
	WorkerPeakRSS int64

	// CPU seconds (user+system) used by all API (or lock-in-request)
	// processes, all worker processes, and the load generator (the bench
	// program itself) during the part's load test, up to the end of its
	// settle phase; WallSeconds is that window, for scale.
	APICPUSeconds     float64
	WorkerCPUSeconds  float64
	LoadGenCPUSeconds float64
	WallSeconds       float64

	// Verified and OK are loadtest's: the invariants were checked and held.
	Verified   bool
	OK         bool
	Violations map[loadtest.ViolationCode]int
}

// Accepted is the number of orders answered 202, i.e. that went through
// the queue (or, for lock-in-request, were sold).
func (s ScenarioResult) Accepted() int64 {
	o := s.Outcomes
	return o.Succeeded + o.SoldOut + o.LimitExceeded + o.Failed + o.Unsettled
}

// CeilingResult is the queue-ceiling baseline: no-op tasks through asynq.
type CeilingResult struct {
	Ran bool
	Err string

	Tasks       int
	Producers   int
	Consumers   int
	Concurrency int

	// Enqueued and Processed count tasks; EnqueueErrors failed enqueues.
	Enqueued      int64
	Processed     int64
	EnqueueErrors int64
	// EnqueuePerSec is Enqueued over the producers' first enqueue to last
	// enqueue; EndToEndPerSec is Processed over the first enqueue to the
	// last task done.
	EnqueuePerSec   float64
	EnqueueSeconds  float64
	EndToEndPerSec  float64
	EndToEndSeconds float64

	ProducerPeakRSS int64
	ConsumerPeakRSS int64
	// CPU seconds of all producer and all consumer processes.
	ProducerCPUSeconds float64
	ConsumerCPUSeconds float64
}

// OK reports whether every task enqueued was processed exactly once.
func (c CeilingResult) OK() bool {
	return c.Ran && c.EnqueueErrors == 0 && c.Enqueued == int64(c.Tasks) && c.Processed == c.Enqueued
}

// FrontResult is the HTTP front baseline: each order a POST that enqueues a
// no-op task and a GET answered without I/O (see front.go).
type FrontResult struct {
	Ran bool
	Err string

	Orders              int
	Servers             int
	Consumers           int
	ConsumerConcurrency int
	// Senders and Pollers are the load generator's POSTs and GETs in flight
	// at most, as loadtest's Concurrency and default SettleConcurrency.
	Senders int
	Pollers int

	// Accepted counts POSTs answered 202, Answered GETs answered 200,
	// Errors the requests that failed (not retried); Processed the tasks
	// the consumers did.
	Accepted  int64
	Answered  int64
	Errors    int64
	Processed int64
	// SubmittedPerSec is Accepted over the first POST to the last POST's
	// answer; EndToEndPerSec is Processed over the first POST to the last
	// GET's answer or the last task done, whichever came later.
	SubmittedPerSec float64
	EndToEndPerSec  float64
	EndToEndSeconds float64
	// Submit is the latency of the POSTs.
	Submit loadtest.Latency

	ServerPeakRSS   int64
	ConsumerPeakRSS int64
	// CPU seconds of the servers and the load generator during the load,
	// and of the consumers from ready to their end.
	ServerCPUSeconds   float64
	ConsumerCPUSeconds float64
	LoadGenCPUSeconds  float64
}

// OK reports whether every order was accepted, answered, and processed
// exactly once.
func (f FrontResult) OK() bool {
	return f.Ran && f.Errors == 0 && f.Accepted == int64(f.Orders) && f.Answered == f.Accepted && f.Processed == f.Accepted
}
