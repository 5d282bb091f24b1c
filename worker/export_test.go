package worker

import "context"

// PendingOrders is how many orders of product wait in w's batcher for a
// round, so that tests can wait for an order to be queued there.
func PendingOrders(w *Worker, product string) int {
	b := w.batcher
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending[product])
}

// OnArchivePage makes w call f before each page its archive sweeps read
// (see archiveEvery); an error f returns cuts the sweep short there, as a
// failed read of the archive would. Call it before Start.
func OnArchivePage(w *Worker, f func(page int) error) { w.onArchivePage = f }

// OnRescueScan makes w call f as each of its rescue scans starts; an error
// f returns fails that scan at once, as a failed first call would. Call it
// before Start.
func OnRescueScan(w *Worker, f func() error) { w.onRescueScan = f }

// ArchiveEvery is how many rescue intervals apart the fleet sweeps the
// archive.
const ArchiveEvery = archiveEvery

// Announce makes w announce, until ctx ends, that it waits for product's
// lock (want.lua), then withdraw the announcement.
func Announce(ctx context.Context, w *Worker, product string) { w.want(ctx, product) }

// AnnouncedBefore reports whether another process announced before w that
// it waits for product's lock, and still does (ahead.lua).
func AnnouncedBefore(ctx context.Context, w *Worker, product string) (bool, error) {
	return w.ahead(ctx, product)
}

// Wanted returns the products among ps whose lock another process waits
// for (wanted.lua).
func Wanted(ctx context.Context, w *Worker, ps []string) ([]string, error) {
	return w.wanted(ctx, ps)
}

// ProcessID is w's id in hand-off announcements.
func ProcessID(w *Worker) string { return w.id }
