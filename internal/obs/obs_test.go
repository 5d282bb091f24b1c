package obs

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
)

func TestPoolCollector(t *testing.T) {
	t.Parallel()
	store := inventorytest.Open(t, inventorytest.NewDatabase(t), &inventory.Options{MaxConns: 3})
	if err := store.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(NewPoolCollector(store)); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("series: got %d, want 6 (conns idle and acquired, max, acquires, empty acquires, acquire seconds)", n)
	}
	if got, err := testutil.GatherAndCount(reg, "flashsale_db_pool_max_conns"); err != nil || got != 1 {
		t.Errorf("flashsale_db_pool_max_conns: got %d series (%v), want 1", got, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "flashsale_db_pool_max_conns" && mf.GetMetric()[0].GetGauge().GetValue() != 3 {
			t.Errorf("flashsale_db_pool_max_conns: got %v, want 3", mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
}

// blockingCollector sends one gauge, then blocks until release is closed
// (a collector reading a server that hangs), counting its collections.
type blockingCollector struct {
	desc    *prometheus.Desc
	release chan struct{}
	calls   atomic.Int32
}

func (b *blockingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

func (b *blockingCollector) Collect(ch chan<- prometheus.Metric) {
	b.calls.Add(1)
	ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, 7)
	<-b.release
}

// A bounded collector hands on what its collector sent within the bound and
// goes on without the rest; while that collection runs, scrapes skip it
// rather than start another; once it has ended, the next scrape collects
// again. flashsale_collector_timed_out says which happened.
func TestBoundedCollector(t *testing.T) {
	t.Parallel()
	inner := &blockingCollector{
		desc:    prometheus.NewDesc("inner_figure", "A figure.", nil, nil),
		release: make(chan struct{}),
	}
	reg := prometheus.NewPedanticRegistry()
	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "other_figure", Help: "Another."})
	reg.MustRegister(other, NewBoundedCollector(inner, "slow", 100*time.Millisecond))
	scrape := func(want string) {
		t.Helper()
		start := time.Now()
		err := testutil.GatherAndCompare(reg, strings.NewReader(want), "inner_figure", "other_figure", "flashsale_collector_timed_out")
		if err != nil {
			t.Error(err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("scrape took %v, want about the bound (100ms)", took)
		}
	}
	const head = `
# HELP flashsale_collector_timed_out 1 when this scrape went on without a collector's metrics (it took too long, or its last collection has not ended).
# TYPE flashsale_collector_timed_out gauge
`
	const others = `
# HELP other_figure Another.
# TYPE other_figure gauge
other_figure 0
`
	const inners = `
# HELP inner_figure A figure.
# TYPE inner_figure gauge
inner_figure 7
`
	// Cut short: the figure sent before the bound, and "timed out".
	scrape(head + `flashsale_collector_timed_out{collector="slow"} 1` + inners + others)
	// Still collecting: skipped, no second collection started.
	scrape(head + `flashsale_collector_timed_out{collector="slow"} 1` + others)
	if n := inner.calls.Load(); n != 1 {
		t.Errorf("collections started: %d, want 1 while the first runs", n)
	}
	close(inner.release)
	// Once it has ended (its token handed back), the next scrape collects
	// in full.
	testenv.Eventually(t, 10*time.Second, func() error {
		return testutil.GatherAndCompare(reg, strings.NewReader(head+`flashsale_collector_timed_out{collector="slow"} 0`+inners+others),
			"inner_figure", "other_figure", "flashsale_collector_timed_out")
	})
}

// fixedPool reports the same figures every time.
type fixedPool inventory.PoolStats

func (p fixedPool) PoolStats() inventory.PoolStats { return inventory.PoolStats(p) }

// Each figure of the pool goes out under its own name. Before, only
// flashsale_db_pool_max_conns was read: a figure under another's name (the
// waits reported as all acquires, idle as acquired) went unnoticed, and a
// dashboard showed a pool starved that was not, or the other way round.
func TestPoolCollectorFigures(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewPoolCollector(fixedPool{IdleConns: 2, AcquiredConns: 5, MaxConns: 12,
		AcquireCount: 1000, EmptyAcquireCount: 40, AcquireDuration: 1500 * time.Millisecond}))
	const want = `
# HELP flashsale_db_pool_acquire_seconds_total Time spent acquiring connections.
# TYPE flashsale_db_pool_acquire_seconds_total counter
flashsale_db_pool_acquire_seconds_total 1.5
# HELP flashsale_db_pool_acquires_total Connections acquired from the pool.
# TYPE flashsale_db_pool_acquires_total counter
flashsale_db_pool_acquires_total 1000
# HELP flashsale_db_pool_conns PostgreSQL pool connections by state.
# TYPE flashsale_db_pool_conns gauge
flashsale_db_pool_conns{state="acquired"} 5
flashsale_db_pool_conns{state="idle"} 2
# HELP flashsale_db_pool_empty_acquires_total Acquires that had to wait for a connection.
# TYPE flashsale_db_pool_empty_acquires_total counter
flashsale_db_pool_empty_acquires_total 40
# HELP flashsale_db_pool_max_conns PostgreSQL pool size limit.
# TYPE flashsale_db_pool_max_conns gauge
flashsale_db_pool_max_conns 12
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// burstCollector sends one gauge, blocks until release is closed, then
// sends n more series at once (asynq's collector: a series per queue and
// state, all sent after its reads of Redis).
type burstCollector struct {
	desc    *prometheus.Desc
	release chan struct{}
	n       int
}

func (b *burstCollector) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

func (b *burstCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, 0, "first")
	<-b.release
	for i := range b.n {
		ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, float64(i), fmt.Sprint(i))
	}
}

// A collection cut short that then sends more series than its buffer holds
// still ends, and the scrapes after it collect again. Before, the test's
// collector sent one series: a bounded collector that left the rest of a
// cut collection unread kept its goroutine blocked and its token forever,
// and every later scrape went without the queue's metrics.
func TestBoundedCollectorDrainsACutCollection(t *testing.T) {
	t.Parallel()
	inner := &burstCollector{
		desc:    prometheus.NewDesc("inner_series", "Series.", []string{"i"}, nil),
		release: make(chan struct{}),
		n:       500,
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewBoundedCollector(inner, "burst", 50*time.Millisecond))
	timedOut := func() (float64, int, error) {
		mfs, err := reg.Gather()
		if err != nil {
			return 0, 0, err
		}
		var v float64
		var n int
		for _, mf := range mfs {
			switch mf.GetName() {
			case "flashsale_collector_timed_out":
				v = mf.GetMetric()[0].GetGauge().GetValue()
			case "inner_series":
				n = len(mf.GetMetric())
			}
		}
		return v, n, nil
	}
	if v, _, err := timedOut(); err != nil || v != 1 {
		t.Fatalf("first scrape: timed out %v (%v), want 1", v, err)
	}
	close(inner.release)
	testenv.Eventually(t, 10*time.Second, func() error {
		v, n, err := timedOut()
		if err != nil {
			return err
		}
		if v != 0 || n != inner.n+1 {
			return fmt.Errorf("timed out %v with %d series, want 0 with %d", v, n, inner.n+1)
		}
		return nil
	})
}
