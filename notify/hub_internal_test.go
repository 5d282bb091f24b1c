package notify

import (
	"fmt"
	"testing"
)

// A watch stopped before any announcement leaves nothing behind: an API
// watches every long-polled order, most of them decided already (watch,
// read, stop), and none of those is ever announced again to clear it.
func TestStoppedWatchesLeaveNoEntry(t *testing.T) {
	t.Parallel()
	hub := NewHub(nil, "x:") // never run: no Redis needed
	for _, tt := range []struct {
		name    string
		watches int // of the same order, all stopped
	}{{"one watch", 1}, {"two watches", 2}} {
		for i := range 100 {
			id := fmt.Sprint(tt.name, i)
			ws := make([]*Watch, tt.watches)
			for k := range ws {
				ws[k] = hub.Watch(id)
			}
			for _, w := range ws {
				w.Stop()
			}
		}
		hub.mu.Lock()
		n := len(hub.waiters)
		hub.mu.Unlock()
		if n != 0 {
			t.Errorf("%s: %d orders still have an entry after every watch stopped, want 0", tt.name, n)
		}
	}
}
