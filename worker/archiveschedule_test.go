package worker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/worker"
)

// While Redis cannot say whether the fleet's archive sweep is due, a
// worker sweeps on its own schedule: once an archive interval, not at
// every scan (mutation audit: claimSweep not setting its own next due time
// passed every test; TestArchiveSweepRunsWhenItsScheduleCannotBeRead only
// wants a sweep). Here each scan finds the sweep's cursor unreadable (its
// key a hash), as the last sweep's save has mended it.
func TestArchiveSweepKeepsItsOwnScheduleWhileItsScheduleCannotBeRead(t *testing.T) {
	t.Parallel()
	const interval = 20 * time.Millisecond // an archive interval of 300ms
	e := newEnvWith(t, worker.Config{RescueInterval: interval}, 5*time.Second)
	cursor := e.prefix + "archive-sweep:{" + e.queue.Queue + "}:page"
	var scans, sweeps atomic.Int64
	worker.OnRescueScan(e.w, func() error {
		scans.Add(1)
		ctx := context.Background()
		_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, cursor)
			p.HSet(ctx, cursor, "not", "a page")
			return nil
		})
		return err
	})
	worker.OnArchivePage(e.w, func(int) error { // one page: the archive is empty
		sweeps.Add(1)
		return nil
	})
	start := time.Now()
	e.start(t)
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := scans.Load(); n < 60 {
			return fmt.Errorf("%d rescue scans so far, want 60", n)
		}
		return nil
	})
	got, elapsed := sweeps.Load(), time.Since(start)
	if most := int64(elapsed/(worker.ArchiveEvery*interval)) + 2; got < 1 || got > most {
		t.Errorf("%d sweeps over %v of %d scans, want 1 to %d (one an archive interval of %v)",
			got, elapsed.Round(time.Millisecond), scans.Load(), most, worker.ArchiveEvery*interval)
	}
}
