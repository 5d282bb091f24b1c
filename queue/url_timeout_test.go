package queue_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/queue"
)

// A URL's timeouts of 0 or -1 read as go-redis reads them ("none"): a read
// or write timeout of none is a client that works, without a deadline of
// its own; a dial timeout of none is no such thing in go-redis (its dialer
// takes -1 as a deadline already past, so every dial fails at once), and is
// refused at start rather than run a process that can never connect.
func TestParseRedisURLTimeoutsOfNone(t *testing.T) {
	t.Parallel()
	base, err := url.Parse(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		query   string
		refused bool
	}{
		{"dial_timeout=0", true},
		{"dial_timeout=-1", true},
		{"dial_timeout=-1s", true},
		{"dial_timeout=2s", false},
		{"read_timeout=-1", false},
		{"write_timeout=0", false},
	} {
		u := *base
		u.RawQuery = tt.query
		opt, err := queue.ParseRedisURL(u.String(), 0)
		if tt.refused {
			if err == nil {
				rdb, _ := queue.NewRedisClient(opt)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				perr := rdb.Ping(ctx).Err()
				cancel()
				_ = rdb.Close()
				t.Errorf("ParseRedisURL(?%s) taken (its client's ping: %v); want it refused", tt.query, perr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRedisURL(?%s): %v", tt.query, err)
			continue
		}
		rdb, _ := queue.NewRedisClient(opt)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := rdb.Ping(ctx).Err(); err != nil {
			t.Errorf("?%s: ping: %v", tt.query, err)
		}
		cancel()
		_ = rdb.Close()
	}
}
