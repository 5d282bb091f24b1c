package obs

import (
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/calldeadline"
)

// NewQueueCollector returns asynq's queue collector (asynq_queue_size,
// asynq_tasks_enqueued_total{state}, ... of every queue on rdb's Redis),
// bounded as [NewBoundedCollector] is, by timeout, under the name
// "asynq_queue"; and each of its collections ends by its bound too.
//
// asynq's calls take no context, so a collection whose request was lost
// (a partition, a failover) ran on until go-redis gave up on it: a read
// timeout per try, about 12 s with the defaults, none with read_timeout
// -1. Meanwhile it held the bounded collector's one collection, and every
// scrape went without the queue's metrics although Redis answered again.
// Here every call of a collection is given the collection's deadline,
// which rdb's calls must honour (ContextTimeoutEnabled, as
// queue.NewRedisClient's clients have): rdb must be a client of the
// collector's own.
func NewQueueCollector(rdb redis.UniversalClient, timeout time.Duration) prometheus.Collector {
	d := &deadlineCollector{timeout: timeout}
	rdb.AddHook(calldeadline.Hook(func() time.Time { return time.Unix(0, d.deadline.Load()) }))
	d.c = asynqmetrics.NewQueueMetricsCollector(asynq.NewInspectorFromRedisClient(rdb))
	return NewBoundedCollector(d, "asynq_queue", timeout)
}

// deadlineCollector sets the deadline (Unix nanoseconds) its client's
// calls end by for each collection. The bounded collector runs one
// collection at a time, so one deadline is enough.
type deadlineCollector struct {
	c        prometheus.Collector
	deadline atomic.Int64
	timeout  time.Duration
}

// Describe is never called: the bounded collector describes nothing (and
// asynq's collector describes by collecting).
func (d *deadlineCollector) Describe(chan<- *prometheus.Desc) {}

func (d *deadlineCollector) Collect(ch chan<- prometheus.Metric) {
	d.deadline.Store(time.Now().Add(d.timeout).UnixNano())
	d.c.Collect(ch)
}
