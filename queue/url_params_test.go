package queue_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/queue"
)

// A URL's parameters that would give a process that cannot work are
// refused at start, the others give a client that works:
//   - timeouts of 0 or -1 read as go-redis reads them ("none"): a read or
//     write timeout of none is a client without a deadline of its own; a
//     dial timeout of none is no such thing in go-redis (its dialer takes -1
//     as a deadline already past, so every dial fails at once);
//   - a pool_size under 1: go-redis takes -1 as it is, and its client then
//     panics as it is made; 0 would be go-redis's default, not the size
//     asked for. A positive one sizes the pool, as the URL says.
func TestParseRedisURLParameterValues(t *testing.T) {
	t.Parallel()
	base, err := url.Parse(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		query   string
		refused bool
		pool    int // the pool size the client must have; 0: not checked
	}{
		{"dial_timeout=0", true, 0},
		{"dial_timeout=-1", true, 0},
		{"dial_timeout=-1s", true, 0},
		{"dial_timeout=2s", false, 0},
		{"read_timeout=-1", false, 0},
		{"write_timeout=0", false, 0},
		{"pool_size=-1", true, 0},
		{"pool_size=0", true, 0},
		{"pool_size=3", false, 3},
	} {
		u := *base
		u.RawQuery = tt.query
		opt, err := queue.ParseRedisURL(u.String(), 0)
		if tt.refused {
			if err == nil {
				t.Errorf("ParseRedisURL(?%s) taken (%+v); want it refused", tt.query, opt)
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
		if got := rdb.(*redis.Client).Options().PoolSize; tt.pool != 0 && got != tt.pool {
			t.Errorf("?%s: pool size %d, want %d", tt.query, got, tt.pool)
		}
		cancel()
		_ = rdb.Close()
	}
}
