package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/queue"
)

// Crash recovery.
//
// asynq hands a crashed worker's task to another worker only after the
// task's 30s lease has expired and its recoverer has run (once a minute,
// taking leases expired at least 30s ago), then adds the retry delay: up to
// about two minutes. The rescuer shortens that. Every RescueInterval one
// worker (the holder of the "rescuer" lock) lists the queue's active tasks;
// for each task asynq reports orphaned (its lease expired: no heartbeat for
// 30s) whose order has no outcome recorded, it enqueues a rescue task with
// the same order. So an order held by a worker that crashed at t is queued
// again by t+30s+RescueInterval and decided moments later, well within 60s.
// asynq's own recovery of the orphan later runs it once more; that run
// finds the order decided and changes nothing.
//
// A paused worker (SIGSTOP) keeps its leases until 30s have passed without a
// heartbeat; if it resumes after a rescue, its run of the order is a replay
// or is refused by the fencing token.

// rescueLimit bounds the orphans handled per scan.
const rescueLimit = 5000

func (w *Worker) runRescuer(ctx context.Context, in *queue.Inspector, prod *queue.Producer) {
	for {
		// Jitter spreads the workers' attempts at the rescuer lock.
		d := time.Duration(float64(w.cfg.RescueInterval) * (0.8 + 0.4*rand.Float64()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		l, err := w.locks.TryAcquire(ctx, "rescuer:"+w.cfg.Queue.Queue)
		if err != nil {
			continue // another worker scans this time, or the lock is down
		}
		ids, err := w.rescue(l.Context(), in, prod)
		w.release(l)
		if err != nil && ctx.Err() == nil {
			w.cfg.Logger.Warn("rescue scan failed", "err", err)
		}
		if len(ids) > 0 {
			w.cfg.Logger.Warn("re-queued orders of a crashed worker", "orders", len(ids), "order_ids", ids[:min(len(ids), 20)])
		}
	}
}

// rescue re-queues the undecided orders of orphaned tasks and returns their
// ids.
func (w *Worker) rescue(ctx context.Context, in *queue.Inspector, prod *queue.Producer) ([]string, error) {
	orphans, err := in.Orphans(ctx, rescueLimit)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, o := range orphans {
		_, err := w.store.Order(ctx, o.ID)
		if err == nil {
			continue // decided; asynq will retire the orphan
		}
		if !errors.Is(err, inventory.ErrNotFound) {
			return ids, err
		}
		switch err := prod.Rescue(ctx, o); {
		case err == nil:
			ids = append(ids, o.ID)
			w.metrics.rescued.Inc()
		case errors.Is(err, queue.ErrDuplicate):
		default:
			return ids, err
		}
	}
	return ids, nil
}
