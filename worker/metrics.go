package worker

import (
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/internal/obs"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/lock"
)

// metrics are the worker's Prometheus series.
type metrics struct {
	orders        *prometheus.CounterVec
	rounds        *prometheus.CounterVec
	batchOrders   prometheus.Histogram
	batchProducts prometheus.Histogram
	roundSeconds  prometheus.Histogram
	staleFences   prometheus.Counter
	rescued       prometheus.Counter
	buried        prometheus.Counter
	inFlight      prometheus.Gauge
	rescueLeader  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, store *inventory.Store) (*metrics, error) {
	m := &metrics{
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_worker_orders_total",
			Help: "Orders handled by this worker, by outcome (replay: already decided, a redelivered task).",
		}, []string{"outcome"}),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_worker_rounds_total",
			Help: "Transactions (batches) run, by result.",
		}, []string{"result"}),
		batchOrders: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flashsale_worker_batch_orders",
			Help:    "Orders decided per transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
		batchProducts: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flashsale_worker_batch_products",
			Help:    "Products (locks) per transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
		roundSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flashsale_worker_transaction_seconds",
			Help:    "Duration of one batch transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		staleFences: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_worker_stale_fence_total",
			Help: "Transactions refused by the database because a newer lock token had written the product.",
		}),
		rescued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_worker_rescued_orders_total",
			Help: "Orders re-queued by the rescue scan: active tasks whose lease lapsed or that no live worker process held (a crashed worker, a lost dequeue reply).",
		}),
		buried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_worker_buried_orders_total",
			Help: "Orders whose last try ended without a recorded outcome (PostgreSQL down, or the try cut short), kept in Redis for the rescue scan to record.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashsale_worker_tasks_in_flight",
			Help: "Order tasks this worker is handling now (at most FLASHSALE_WORKER_CONCURRENCY).",
		}),
		rescueLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashsale_worker_rescue_leader",
			Help: "1 while this worker leads the fleet's rescue scans (holds the rescuer lock), else 0: the fleet's sum is 1, or 0 for up to a lock TTL after its leader died.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.orders, m.rounds, m.batchOrders, m.batchProducts, m.roundSeconds, m.staleFences, m.rescued, m.buried, m.inFlight, m.rescueLeader}
	if store != nil {
		cs = append(cs, obs.NewPoolCollector(store))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observeRound(orders, products int, d time.Duration, err error) {
	result := "ok"
	switch {
	case err == nil:
		m.batchOrders.Observe(float64(orders))
		m.batchProducts.Observe(float64(products))
		m.roundSeconds.Observe(d.Seconds())
	case errors.Is(err, inventory.ErrStaleFence):
		result = "stale_fence"
	case errors.Is(err, lock.ErrLost):
		result = "lock_lost"
	default:
		result = "error"
	}
	m.rounds.WithLabelValues(result).Inc()
}

// LockObserver exports a lock client's events as Prometheus metrics. Pass it
// as lock.Options.Observer; register it with Register.
//
// It counts the product locks only (lockKey). The rescuer lock is held for
// as long as a worker leads the fleet's rescue scans (hours), and tried by
// every other worker once a RescueInterval: counted here it made a busy
// failure of every follower's try, a renewal every TTL/3, and one sample of
// a whole tenure in the held-time histogram, drowning the product locks'
// figures. flashsale_worker_rescue_leader says who leads instead.
type LockObserver struct {
	lock.NopObserver
	acquire  prometheus.Histogram
	wait     prometheus.Histogram
	failures *prometheus.CounterVec
	renewals prometheus.Counter
	renewErr prometheus.Counter
	lost     prometheus.Counter
	held     prometheus.Histogram
}

// NewLockObserver creates the lock metrics and registers them with reg
// (nil = not registered).
func NewLockObserver(reg prometheus.Registerer) (*LockObserver, error) {
	o := &LockObserver{
		acquire: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashsale_lock_acquire_seconds", Help: "Latency of the winning lock acquisition round.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashsale_lock_wait_seconds", Help: "Time from asking for a lock to holding it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_lock_failures_total", Help: "Failed lock acquisitions by cause (busy, canceled, deadline, no_quorum, error, closed).",
		}, []string{"cause"}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_lock_renewals_total", Help: "Successful lock renewals (watchdog or explicit).",
		}),
		renewErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_lock_renewal_failures_total", Help: "Failed lock renewals.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_lock_lost_total", Help: "Held locks given up as lost (holder told to stop).",
		}),
		held: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashsale_lock_held_seconds", Help: "How long released locks were held.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{o.acquire, o.wait, o.failures, o.renewals, o.renewErr, o.lost, o.held} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return o, nil
}

// counted reports whether key's events are counted: a product lock's.
func counted(key string) bool { return strings.HasPrefix(key, lockKey("")) }

// Acquired records a successful acquisition.
func (o *LockObserver) Acquired(key string, latency, wait time.Duration) {
	if counted(key) {
		o.acquire.Observe(latency.Seconds())
		o.wait.Observe(wait.Seconds())
	}
}

// AcquireFailed counts a failed acquisition. A busy try is the normal hand-off
// path of the batcher, counted like the others.
func (o *LockObserver) AcquireFailed(key string, cause lock.Cause, _ time.Duration) {
	if counted(key) {
		o.failures.WithLabelValues(cause.String()).Inc()
	}
}

// Renewed counts a renewal.
func (o *LockObserver) Renewed(key string, _ time.Duration) {
	if counted(key) {
		o.renewals.Inc()
	}
}

// RenewFailed counts a failed renewal.
func (o *LockObserver) RenewFailed(key string, _ error) {
	if counted(key) {
		o.renewErr.Inc()
	}
}

// Lost counts a lost lock.
func (o *LockObserver) Lost(key string) {
	if counted(key) {
		o.lost.Inc()
	}
}

// Released records how long a lock was held.
func (o *LockObserver) Released(key string, held time.Duration) {
	if counted(key) {
		o.held.Observe(held.Seconds())
	}
}
