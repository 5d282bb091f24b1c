package worker

// PendingOrders is how many orders of product wait in w's batcher for a
// round, so that tests can wait for an order to be queued there.
func PendingOrders(w *Worker, product string) int {
	b := w.batcher
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending[product])
}
