package api

import (
	"testing"
	"time"
)

// Retry-After is whole seconds rounded up, at least 1: a client told to
// come back after 29 s of a 29.2 s wait is refused again.
func TestRetryAfterRoundsUp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "1"},
		{-time.Second, "1"},
		{time.Nanosecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Nanosecond, "2"},
		{29*time.Second + 200*time.Millisecond, "30"},
		{30 * time.Second, "30"},
	} {
		if got := retryAfter(tc.d); got != tc.want {
			t.Errorf("retryAfter(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
