package worker_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/queue/queuetest"
	"github.com/flashsale/flashsale/worker"
)

// An order whose last try a crash cut short (archived by asynq's
// recoverer) and whose rescue task is archived too (dead: it ran out of
// tries) cannot be rescued again (queue.ErrDuplicate): the archive sweep
// records it failed. Were that refusal taken for a failure of the sweep,
// the sweep would stop at its page at every sweep: this order, and those
// of every page after it, would never be recorded.
func TestArchivedOrderWhoseRescueIsDeadTooIsRecordedFailed(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond}, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	o, tk := e.strandLastTry(t)
	rescueID := o.ID + queue.RescueSuffix
	e.enqueue(t, tk, rescueID, 0, 30*time.Second)
	ai := asynq.NewInspectorFromRedisClient(e.rdb)
	if err := ai.ArchiveTask(e.queue.Queue, rescueID); err != nil {
		t.Fatal(err)
	}
	// A bare asynq server's recoverer archives the stranded task.
	e.archiveByRecoverer(t, o.ID)
	e.start(t)
	e.waitGaveUp(t, o.ID)
}

// An archive of whole pages (here one: 500 tasks; asynq keeps up to 10,000,
// 20 pages, and a full archive stays at that size) ends on an empty page
// past page 1: the sweep ends there, as at any last page, and the next
// starts an archive interval later. Only a sweep that starts past the
// archive's end goes back to page 1 at once. Else a sweep of such an
// archive went round it until RescueTimeout cut its scan short, every
// scan that swept then failing.
func TestArchiveSweepOfWholePagesEnds(t *testing.T) {
	t.Parallel()
	const rescueInterval = 200 * time.Millisecond // an archive interval of 3s
	e := newEnvWith(t, worker.Config{RescueInterval: rescueInterval}, 5*time.Second)
	orders := make([]queue.Order, 500) // archivePage
	for i := range orders {
		orders[i] = queue.Order{ID: fmt.Sprintf("old%04d", i), ProductID: "gone", UserID: "u", Quantity: 1, AcceptedAt: time.Now()}
	}
	e.archive(t, orders...)
	var mu sync.Mutex
	var pages []int
	worker.OnArchivePage(e.w, func(page int) error {
		mu.Lock()
		defer mu.Unlock()
		pages = append(pages, page)
		return nil
	})
	read := func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(pages)
	}
	scans := e.countScans()
	e.start(t)
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := read(); !slices.Contains(got, 2) {
			return fmt.Errorf("pages read so far %v, want page 2", got)
		}
		return nil
	})
	// The sweep's scan has ended by the second scan after it, well within
	// the archive interval, before the next sweep.
	scans.waitScans(t, 2, 20*time.Second)
	if got, want := read(), []int{1, 2}; !slices.Equal(got, want) {
		t.Errorf("pages read %v, want %v (one sweep, ended at the empty page past the archive's end)", got, want)
	}
}

// An order whose deepest rescue task (queue.MaxRescueDepth suffixes) a
// crash cut short on its last try, archived by asynq's recoverer, cannot be
// rescued again (queue.ErrRescueDepth): the archive sweep records it
// failed. Were that refusal taken for a failure of the sweep, as it would
// be in the rescue scan's place, the sweep would stop at its page at every
// sweep, and the order would never be recorded (mutation audit:
// recordArchived treating ErrRescueDepth as an error passed every test;
// only the ErrDuplicate refusal was checked).
func TestArchivedOrderAtTheEndOfItsRescueChainIsRecordedFailed(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, worker.Config{RescueInterval: 20 * time.Millisecond}, 5*time.Second)
	inventorytest.CreateProduct(t, e.store, "p", 5, 0)
	o := queue.Order{ID: "o1", ProductID: "p", UserID: "u1", Quantity: 1, AcceptedAt: time.Now().UTC()}
	tk, err := queue.Encode(o)
	if err != nil {
		t.Fatal(err)
	}
	ids := queue.TaskIDs(o.ID)
	deepest := ids[len(ids)-1]
	e.enqueue(t, tk, deepest, 0, 30*time.Second)
	queuetest.Strand(t, e.rdb, e.queue.Queue, time.Now().Add(-time.Minute))
	e.archiveByRecoverer(t, deepest)
	e.start(t)
	e.waitGaveUp(t, o.ID)
}
