// Package obs holds the Prometheus collectors that more than one flashsale
// process exports: the PostgreSQL pool figures of the API and the workers,
// a bound on a collector that reads a server without a context, and the
// API's asynq queue collector under that bound.
package obs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/inventory"
)

// PoolStater is what [NewPoolCollector] reads; *inventory.Store is one.
type PoolStater interface {
	PoolStats() inventory.PoolStats
}

// NewPoolCollector returns a collector of the PostgreSQL pool's figures:
// flashsale_db_pool_conns{state="idle|acquired"}, flashsale_db_pool_max_conns,
// flashsale_db_pool_acquires_total, flashsale_db_pool_empty_acquires_total
// (acquires that had to wait) and flashsale_db_pool_acquire_seconds_total.
func NewPoolCollector(pool PoolStater) prometheus.Collector {
	return &poolCollector{pool: pool,
		conns:    prometheus.NewDesc("flashsale_db_pool_conns", "PostgreSQL pool connections by state.", []string{"state"}, nil),
		max:      prometheus.NewDesc("flashsale_db_pool_max_conns", "PostgreSQL pool size limit.", nil, nil),
		acquires: prometheus.NewDesc("flashsale_db_pool_acquires_total", "Connections acquired from the pool.", nil, nil),
		waited:   prometheus.NewDesc("flashsale_db_pool_empty_acquires_total", "Acquires that had to wait for a connection.", nil, nil),
		waitSecs: prometheus.NewDesc("flashsale_db_pool_acquire_seconds_total", "Time spent acquiring connections.", nil, nil),
	}
}

type poolCollector struct {
	pool                                   PoolStater
	conns, max, acquires, waited, waitSecs *prometheus.Desc
}

func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.conns
	ch <- p.max
	ch <- p.acquires
	ch <- p.waited
	ch <- p.waitSecs
}

func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := p.pool.PoolStats()
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(s.IdleConns), "idle")
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(s.AcquiredConns), "acquired")
	ch <- prometheus.MustNewConstMetric(p.max, prometheus.GaugeValue, float64(s.MaxConns))
	ch <- prometheus.MustNewConstMetric(p.acquires, prometheus.CounterValue, float64(s.AcquireCount))
	ch <- prometheus.MustNewConstMetric(p.waited, prometheus.CounterValue, float64(s.EmptyAcquireCount))
	ch <- prometheus.MustNewConstMetric(p.waitSecs, prometheus.CounterValue, s.AcquireDuration.Seconds())
}

// NewBoundedCollector returns a collector that gathers c's metrics for at
// most timeout per scrape, and one collection of c at a time. It is for a
// collector that reads a server with calls that take no context (asynq's
// queue collector: every scrape read Redis with go-redis's timeouts and
// retries, 10 s and more per call while Redis hung, and concurrent scrapes
// each started their own). Past timeout the scrape goes on without c's
// metrics (those already sent are kept), c's collection finishes in the
// background, and scrapes meanwhile skip c; each scrape reports
// flashsale_collector_timed_out{collector=name}: 1 when c's metrics were cut
// short or skipped, else 0. So a scrape during an outage still answers
// with every other metric, in time, when they matter most. While c's
// collection runs on, the scrapes still skip it: c's own reads must end
// soon after the bound ([NewQueueCollector]'s do).
//
// The collector is unchecked (it describes nothing): registering it reads
// nothing, and c's metrics may vary (asynq's have one series per queue).
func NewBoundedCollector(c prometheus.Collector, name string, timeout time.Duration) prometheus.Collector {
	return &boundedCollector{c: c, timeout: timeout, busy: make(chan struct{}, 1),
		timedOut: prometheus.NewDesc("flashsale_collector_timed_out",
			"1 when this scrape went on without a collector's metrics (it took too long, or its last collection has not ended).",
			nil, prometheus.Labels{"collector": name}),
	}
}

type boundedCollector struct {
	c        prometheus.Collector
	timeout  time.Duration
	busy     chan struct{} // holds a token while c collects
	timedOut *prometheus.Desc
}

func (b *boundedCollector) Describe(chan<- *prometheus.Desc) {}

func (b *boundedCollector) Collect(ch chan<- prometheus.Metric) {
	cut := 1.0
	defer func() { ch <- prometheus.MustNewConstMetric(b.timedOut, prometheus.GaugeValue, cut) }()
	select {
	case b.busy <- struct{}{}:
	default:
		return // the last collection is still running
	}
	// Buffered and drained to the end by whoever is left reading it, so c's
	// goroutine never blocks on a scrape that went on without it.
	inner := make(chan prometheus.Metric, 64)
	go func() {
		defer func() { <-b.busy }()
		b.c.Collect(inner)
		close(inner)
	}()
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	for {
		select {
		case m, ok := <-inner:
			if !ok {
				cut = 0
				return
			}
			ch <- m
		case <-t.C:
			go func() {
				for range inner {
				}
			}()
			return
		}
	}
}
