package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/sale"
	"github.com/flashsale/flashsale/worker"
)

// The queue ceiling: what asynq alone moves on this machine, with the
// product's own enqueue call ([queue.Producer.Enqueue]: same task type,
// payload, task id and options as the API) and the worker's server
// settings, but a handler that does nothing.

// apiRedisPoolSize is the API's pool of queue connections (cmd/flashsale).
const apiRedisPoolSize = 128

// producerResult is what a producer process reports.
type producerResult struct {
	Enqueued   int64  `json:"enqueued"`
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	BeginNS    int64  `json:"begin_ns"`
	EndNS      int64  `json:"end_ns"`
	// PeakRSS is the process's own VmHWM at exit, in bytes: a process this
	// short-lived can end between two samples of its parent.
	PeakRSS int64 `json:"peak_rss"`
	// CPUNS is the CPU time the process used for the run (not its
	// start-up), in nanoseconds.
	CPUNS int64 `json:"cpu_ns"`
}

// consumerResult is what a consumer process reports.
type consumerResult struct {
	Processed int64 `json:"processed"`
	FirstNS   int64 `json:"first_ns"`
	LastNS    int64 `json:"last_ns"`
	PeakRSS   int64 `json:"peak_rss"`
	CPUNS     int64 `json:"cpu_ns"`
}

// runProducer enqueues -n order-shaped tasks, -concurrency at a time, and
// writes a producerResult to -result.
func runProducer(ctx context.Context, fs *flag.FlagSet, args []string) error {
	redisURL := fs.String("redis-url", "", "queue Redis URL")
	qname := fs.String("queue", "", "asynq queue")
	n := fs.Int("n", 0, "tasks to enqueue")
	offset := fs.Int("offset", 0, "index of the first task (task ids are unique across producers)")
	concurrency := fs.Int("concurrency", 32, "enqueues in flight")
	result := fs.String("result", "", "file to write the result to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *redisURL == "" || *qname == "" || *n < 1 || *concurrency < 1 || *result == "" {
		return errors.New("need -redis-url, -queue, -n, -concurrency and -result")
	}
	opt, err := queue.ParseRedisURL(*redisURL, apiRedisPoolSize)
	if err != nil {
		return err
	}
	client := asynq.NewClient(opt)
	defer client.Close()
	prod := queue.NewProducer(client, queue.Options{Queue: *qname})

	var (
		next     atomic.Int64
		enqueued atomic.Int64
		failed   atomic.Int64
		mu       sync.Mutex
		end      time.Time
		firstErr string
	)
	cpu0 := selfCPU() // the run's CPU, not the start-up's
	begin := time.Now()
	var wg sync.WaitGroup
	for range *concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				if k >= int64(*n) {
					return
				}
				i := int64(*offset) + k
				user, key := "ceiling-user-"+strconv.FormatInt(i, 10), "ceiling-key-"+strconv.FormatInt(i, 10)
				err := prod.Enqueue(ctx, queue.Order{
					ID: sale.KeyedOrderID(user, key), ProductID: "ceiling-product", UserID: user, Quantity: 1,
					IdempotencyKey: key, AcceptedAt: time.Now().UTC(),
				})
				now := time.Now()
				mu.Lock()
				if now.After(end) {
					end = now
				}
				if err != nil && firstErr == "" {
					firstErr = err.Error()
				}
				mu.Unlock()
				if err != nil {
					failed.Add(1)
				} else {
					enqueued.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return writeJSON(*result, producerResult{
		Enqueued: enqueued.Load(), Errors: failed.Load(), FirstError: firstErr,
		BeginNS: begin.UnixNano(), EndNS: end.UnixNano(), PeakRSS: selfPeakRSS(),
		CPUNS: int64(selfCPU() - cpu0),
	})
}

// runConsumer serves the queue with a no-op handler until SIGTERM, then
// writes a consumerResult to -result. It writes -ready once serving.
func runConsumer(ctx context.Context, fs *flag.FlagSet, args []string) error {
	redisURL := fs.String("redis-url", "", "queue Redis URL")
	qname := fs.String("queue", "", "asynq queue")
	concurrency := fs.Int("concurrency", 64, "tasks held at once (asynq concurrency)")
	ready := fs.String("ready", "", "file to create once serving")
	result := fs.String("result", "", "file to write the result to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *redisURL == "" || *qname == "" || *concurrency < 1 || *ready == "" || *result == "" {
		return errors.New("need -redis-url, -queue, -concurrency, -ready and -result")
	}
	// The worker's pool: concurrency + 32 (cmd/flashsale).
	opt, err := queue.ParseRedisURL(*redisURL, *concurrency+32)
	if err != nil {
		return err
	}
	var processed, first, last atomic.Int64
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency: *concurrency,
		Queues:      map[string]int{*qname: 1},
		// As the worker's asynq server polls (worker.New).
		TaskCheckInterval:        worker.TaskCheckInterval,
		DelayedTaskCheckInterval: worker.DelayedTaskCheckInterval,
		LogLevel:                 asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(queue.TypeOrder, func(context.Context, *asynq.Task) error {
		now := time.Now().UnixNano()
		processed.Add(1)
		first.CompareAndSwap(0, now)
		for {
			l := last.Load()
			if now <= l || last.CompareAndSwap(l, now) {
				return nil
			}
		}
	})
	if err := srv.Start(mux); err != nil {
		return err
	}
	// From ready on, as the product parts count their workers' CPU from
	// the start of the load test: not the start-up's.
	cpu0 := selfCPU()
	if err := os.WriteFile(*ready, nil, 0o644); err != nil {
		srv.Shutdown()
		return err
	}
	<-ctx.Done()
	srv.Shutdown()
	return writeJSON(*result, consumerResult{Processed: processed.Load(), FirstNS: first.Load(), LastNS: last.Load(),
		PeakRSS: selfPeakRSS(), CPUNS: int64(selfCPU() - cpu0)})
}

// ceiling measures the queue ceiling: Workers consumer processes, then
// APIs producer processes enqueueing Orders tasks between them.
func (b *bencher) ceiling(ctx context.Context) (res CeilingResult) {
	c := b.cfg
	res = CeilingResult{Tasks: c.Orders, Producers: c.APIs, Consumers: c.Workers, Concurrency: c.WorkerConcurrency}
	fail := func(err error) CeilingResult {
		res.Ran, res.Err = false, err.Error()
		return res
	}
	dir, err := b.begin(ctx, PartCeiling)
	if err != nil {
		return fail(err)
	}
	const qname = productQueue // the worker's queue name, in a flushed DB

	var consumers, producers []*cluster.Proc
	defer func() { stopAll(append(consumers, producers...)) }()
	consumers, err = b.startConsumers(ctx, dir, qname)
	if err != nil {
		return fail(err)
	}
	b.logf("queue ceiling: %d consumers ready; %d producers enqueue %d tasks", c.Workers, c.APIs, c.Orders)

	per := c.Orders / c.APIs
	for i := range c.APIs {
		n := per
		if i == c.APIs-1 {
			n = c.Orders - per*(c.APIs-1)
		}
		name := fmt.Sprintf("producer-%d", i+1)
		p := b.helperProc(name, "", dir, helperProduce, "-redis-url", b.redisURL, "-queue", qname,
			"-n", strconv.Itoa(n), "-offset", strconv.Itoa(i*per),
			"-concurrency", strconv.Itoa(max(c.Concurrency/c.APIs, 1)), "-result", filepath.Join(dir, name+".json"))
		if err := p.Start(c.Helper[0]); err != nil {
			return fail(err)
		}
		producers = append(producers, p)
	}

	var begin, enqEnd int64
	for i, p := range producers {
		if err := waitExit(ctx, p, c.ScenarioTimeout); err != nil {
			return fail(err)
		}
		var pr producerResult
		if err := readJSON(filepath.Join(dir, fmt.Sprintf("producer-%d.json", i+1)), &pr); err != nil {
			return fail(fmt.Errorf("%s left no result (%v): %s", p.Name, err, logTail(p.LogPath())))
		}
		res.Enqueued += pr.Enqueued
		res.ProducerPeakRSS = max(res.ProducerPeakRSS, pr.PeakRSS)
		res.ProducerCPUSeconds += time.Duration(pr.CPUNS).Seconds()
		res.EnqueueErrors += pr.Errors
		if pr.Errors > 0 {
			b.logf("queue ceiling: %s: %d enqueue errors, first: %s", p.Name, pr.Errors, pr.FirstError)
		}
		if begin == 0 || pr.BeginNS < begin {
			begin = pr.BeginNS
		}
		enqEnd = max(enqEnd, pr.EndNS)
	}
	if res.Enqueued == 0 {
		return fail(errors.New("no task could be enqueued; see the producers' logs"))
	}
	b.logf("queue ceiling: %d enqueued; waiting for the consumers to empty the queue", res.Enqueued)

	done, err := b.drainConsumers(ctx, dir, qname, consumers)
	if err != nil {
		return fail(err)
	}
	res.Processed, res.ConsumerPeakRSS, res.ConsumerCPUSeconds = done.processed, done.peakRSS, done.cpuSeconds
	last := done.lastNS
	for _, p := range producers {
		res.ProducerPeakRSS = max(res.ProducerPeakRSS, p.PeakRSS())
	}
	res.EnqueueSeconds = time.Duration(enqEnd - begin).Seconds()
	res.EndToEndSeconds = time.Duration(last - begin).Seconds()
	if res.EnqueueSeconds > 0 {
		res.EnqueuePerSec = float64(res.Enqueued) / res.EnqueueSeconds
	}
	if res.EndToEndSeconds > 0 {
		res.EndToEndPerSec = float64(res.Processed) / res.EndToEndSeconds
	}
	res.Ran = true
	return res
}

// startConsumers starts Workers no-op consumer processes on qname, logging
// into dir, and waits until each serves. The caller stops them (stopAll) if
// it does not get to [bencher.drainConsumers].
func (b *bencher) startConsumers(ctx context.Context, dir, qname string) ([]*cluster.Proc, error) {
	c := b.cfg
	var consumers []*cluster.Proc
	for i := range c.Workers {
		name := fmt.Sprintf("consumer-%d", i+1)
		p := b.helperProc(name, "", dir, helperConsume, "-redis-url", b.redisURL, "-queue", qname,
			"-concurrency", strconv.Itoa(c.WorkerConcurrency),
			"-ready", filepath.Join(dir, name+".ready"), "-result", filepath.Join(dir, name+".json"))
		if err := p.Start(c.Helper[0]); err != nil {
			return consumers, err
		}
		consumers = append(consumers, p)
	}
	for i, p := range consumers {
		ready := filepath.Join(dir, fmt.Sprintf("consumer-%d.ready", i+1))
		if err := waitUntil(ctx, 30*time.Second, func() (bool, error) {
			if _, err := os.Stat(ready); err == nil {
				return true, nil
			}
			if !p.Running() {
				return false, fmt.Errorf("%s exited during start: %s", p.Name, logTail(p.LogPath()))
			}
			return false, nil
		}); err != nil {
			return consumers, err
		}
	}
	return consumers, nil
}

// consumed is what the consumer processes of a part did between them.
type consumed struct {
	processed  int64
	peakRSS    int64
	cpuSeconds float64
	// lastNS is when the last task was done (Unix nanoseconds).
	lastNS int64
}

// drainConsumers waits until qname holds no task, then stops the consumers
// and sums up their results.
func (b *bencher) drainConsumers(ctx context.Context, dir, qname string, consumers []*cluster.Proc) (consumed, error) {
	var done consumed
	insp := asynq.NewInspector(b.connOpt)
	defer insp.Close()
	if err := waitUntil(ctx, b.cfg.ScenarioTimeout, func() (bool, error) {
		q, err := insp.GetQueueInfo(qname)
		if err != nil {
			return false, nil // transient, or the queue is not there yet
		}
		return q.Pending+q.Active+q.Scheduled+q.Retry == 0, nil
	}); err != nil {
		return done, fmt.Errorf("queue not emptied: %w", err)
	}
	for i, p := range consumers {
		done.peakRSS = max(done.peakRSS, p.PeakRSS())
		if err := p.Stop(30 * time.Second); err != nil {
			return done, err
		}
		var cr consumerResult
		if err := readJSON(filepath.Join(dir, fmt.Sprintf("consumer-%d.json", i+1)), &cr); err != nil {
			return done, fmt.Errorf("%s left no result (%v): %s", p.Name, err, logTail(p.LogPath()))
		}
		done.processed += cr.Processed
		done.peakRSS = max(done.peakRSS, cr.PeakRSS)
		done.cpuSeconds += time.Duration(cr.CPUNS).Seconds()
		done.lastNS = max(done.lastNS, cr.LastNS)
	}
	return done, nil
}

// selfPeakRSS is this process's VmHWM in bytes (0 when unreadable).
func selfPeakRSS() int64 {
	kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/self/status", "VmHWM", ":"), " kB"), 10, 64)
	if err != nil {
		return 0
	}
	return kb << 10
}
