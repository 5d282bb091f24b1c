// Package obs holds the Prometheus collectors that more than one flashsale
// process exports: the PostgreSQL pool figures of the API and the workers.
package obs

import (
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
