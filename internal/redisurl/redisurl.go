// Package redisurl checks parameter values of a go-redis URL that go-redis
// takes but that leave a client unable to work, for the queue's URL and the
// lock's alike.
package redisurl

import (
	"errors"
	"net/url"

	"github.com/redis/go-redis/v9"
)

// CheckValues returns an error for a value that q, a Redis URL's query,
// sets and that o, go-redis's parse of that URL, would run with:
//   - a pool_size under 1: go-redis keeps a negative size as it is, and its
//     client then panics as it is made; 0 would be its default, not the size
//     the URL asked for;
//   - a dial_timeout of 0 or less: go-redis reads it as "none", which it
//     has only for reads and writes: its dialer takes the -1 as a deadline
//     already past, and every dial fails at once.
//
// The errors name the parameter, never a value of the URL.
func CheckValues(o *redis.Options, q url.Values) error {
	if q.Has("pool_size") && o.PoolSize < 1 {
		return errors.New("pool_size must be at least 1")
	}
	if q.Has("dial_timeout") && o.DialTimeout <= 0 {
		return errors.New("dial_timeout must be positive (go-redis reads 0 or less as none, and then no dial succeeds)")
	}
	return nil
}
