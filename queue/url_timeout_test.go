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

// A negative pool_size is refused at start: go-redis takes it as it is,
// and its client then panics as it is made (a pool of -1 connections). A
// positive one sizes the pool, as the URL says.
func TestParseRedisURLRefusesAPoolOfNone(t *testing.T) {
	t.Parallel()
	base, err := url.Parse(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		query   string
		refused bool
	}{
		{"pool_size=-1", true},
		{"pool_size=0", true},
		{"pool_size=3", false},
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
			t.Fatalf("ParseRedisURL(?%s): %v", tt.query, err)
		}
		rdb, _ := queue.NewRedisClient(opt)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := rdb.Ping(ctx).Err(); err != nil {
			t.Errorf("?%s: ping: %v", tt.query, err)
		}
		if got := rdb.(*redis.Client).Options().PoolSize; got != 3 {
			t.Errorf("?%s: pool size %d, want 3", tt.query, got)
		}
		cancel()
		_ = rdb.Close()
	}
}
