package worker_test

import (
	"testing"
	"time"

	"github.com/flashsale/flashsale/worker"
)

// RetryDelay backs off from 200ms, doubling to a 10s ceiling, with ±25%
// jitter: a task's 25 retries span about three minutes (README), the
// first ones coming soon enough to ride out a database restart.
func TestRetryDelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		retried int
		base    time.Duration
	}{
		{0, 200 * time.Millisecond},
		{1, 400 * time.Millisecond},
		{2, 800 * time.Millisecond},
		{5, 6400 * time.Millisecond},
		{6, 10 * time.Second}, // 12.8s, capped
		{7, 10 * time.Second},
		{25, 10 * time.Second},
		{100, 10 * time.Second},
	} {
		lo, hi := tc.base*3/4, tc.base*5/4
		var least, most time.Duration
		for i := range 200 {
			d := worker.RetryDelay(tc.retried, nil, nil)
			if i == 0 || d < least {
				least = d
			}
			most = max(most, d)
		}
		if least < lo || most > hi {
			t.Errorf("RetryDelay(%d) over 200 draws: from %v to %v, want within [%v, %v]", tc.retried, least, most, lo, hi)
		}
		// Jittered: 200 draws spread over more than a tenth of the range.
		if most-least < (hi-lo)/10 {
			t.Errorf("RetryDelay(%d) over 200 draws: from %v to %v, want them spread over [%v, %v]", tc.retried, least, most, lo, hi)
		}
	}
}
