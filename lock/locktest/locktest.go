// Package locktest helps test code that uses package lock: it starts private
// redis-server nodes, builds clients that are closed at cleanup, and records
// hold intervals to check mutual exclusion and fencing-token order.
package locktest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lock"
)

// Nodes starts n private redis-server processes (in parallel) on free ports;
// they are killed at cleanup. The test fails if one cannot start.
func Nodes(t testing.TB, n int) []*localsvc.Redis {
	t.Helper()
	nodes := make([]*localsvc.Redis, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		dir := t.TempDir()
		wg.Go(func() {
			nodes[i], errs[i] = localsvc.StartRedis(localsvc.RedisOptions{Dir: dir})
		})
	}
	wg.Wait()
	for i := range n {
		if nodes[i] != nil {
			r := nodes[i]
			t.Cleanup(func() { _ = r.Kill() })
		}
	}
	for _, err := range errs {
		if err != nil {
			t.Fatalf("locktest: start redis-server: %v", err)
		}
	}
	return nodes
}

// URLs returns the redis:// URLs (database 0) of nodes.
func URLs(nodes []*localsvc.Redis) []string {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.URL(0)
	}
	return urls
}

// Client returns a lock client for nodes (see [lock.NewFromURLs]); it is
// closed at cleanup.
//
// Unless opts sets NodeTimeout, it is TTL/4, at most 1s, instead of the
// package's default of TTL/100: tests run under the race detector beside
// other packages' tests on a small machine, where one Redis call can take
// longer than 50ms, and a test that is not about node timeouts must not
// fail because of one. Tests about node timeouts set NodeTimeout.
func Client(t testing.TB, nodes []*localsvc.Redis, opts *lock.Options) *lock.Client {
	t.Helper()
	o := lock.Options{}
	if opts != nil {
		o = *opts
	}
	if o.NodeTimeout == 0 {
		ttl := o.TTL
		if ttl == 0 {
			ttl = lock.DefaultTTL
		}
		o.NodeTimeout = min(ttl/4, time.Second)
	}
	c, err := lock.NewFromURLs(URLs(nodes), &o)
	if err != nil {
		t.Fatalf("locktest: new client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Redis returns a plain go-redis client for node, closed at cleanup, for
// inspecting or tampering with keys.
func Redis(t testing.TB, node *localsvc.Redis) *redis.Client {
	t.Helper()
	r := redis.NewClient(&redis.Options{Addr: node.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// Prefix returns a key prefix unique to the test, ending in ":".
func Prefix(t testing.TB) string {
	t.Helper()
	return "locktest:" + testenv.Namespace(t) + ":"
}

// LockKey is the Redis key of key's lock under prefix (see lock.Options.KeyPrefix).
func LockKey(prefix, key string) string { return prefix + "{" + key + "}" }

// FenceKey is the Redis key of key's fence counter under prefix.
func FenceKey(prefix, key string) string { return LockKey(prefix, key) + ":fence" }

// Hold is one hold interval, timed by the owner's monotonic clock: From is
// when Acquire returned, To when Release was called.
type Hold struct {
	Owner    string
	Token    int64
	From, To time.Time
}

// Holds records hold intervals from many goroutines.
type Holds struct {
	mu    sync.Mutex
	holds []Hold
}

// Add records one interval.
func (h *Holds) Add(owner string, token int64, from, to time.Time) {
	h.mu.Lock()
	h.holds = append(h.holds, Hold{Owner: owner, Token: token, From: from, To: to})
	h.mu.Unlock()
}

// Len returns the number of recorded intervals.
func (h *Holds) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.holds)
}

// Check fails the test unless the intervals are pairwise disjoint and, in
// time order, their tokens strictly increase.
func (h *Holds) Check(t testing.TB) {
	t.Helper()
	h.mu.Lock()
	holds := slices.Clone(h.holds)
	h.mu.Unlock()
	slices.SortFunc(holds, func(a, b Hold) int { return a.From.Compare(b.From) })
	bad := 0
	for i := 1; i < len(holds) && bad < 5; i++ {
		prev, cur := holds[i-1], holds[i]
		if cur.From.Before(prev.To) {
			t.Errorf("holds overlap: %s %v..%v (token %d) and %s %v..%v (token %d)",
				prev.Owner, prev.From.Format(time.StampMicro), prev.To.Format(time.StampMicro), prev.Token,
				cur.Owner, cur.From.Format(time.StampMicro), cur.To.Format(time.StampMicro), cur.Token)
			bad++
		}
		if cur.Token <= prev.Token {
			t.Errorf("token order: got %d after %d (owners %s, %s), want strictly increasing", cur.Token, prev.Token, prev.Owner, cur.Owner)
			bad++
		}
	}
}

// WaitDone waits until l's context is done, at most timeout, and returns the
// time it was observed done; it fails the test on timeout.
func WaitDone(t testing.TB, l *lock.Lock, timeout time.Duration) time.Time {
	t.Helper()
	select {
	case <-l.Done():
		return time.Now()
	case <-time.After(timeout):
		t.Fatalf("lock %q: context not done within %v", l.Key(), timeout)
		return time.Time{}
	}
}

// Ctx returns a context that ends after d and at cleanup.
func Ctx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Exists reports whether key exists on r; it fails the test on error.
func Exists(t testing.TB, r *redis.Client, key string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := r.Exists(ctx, key).Result()
	if err != nil {
		t.Fatalf("locktest: EXISTS %s: %v", key, err)
	}
	return n == 1
}

// WaitKey waits until key exists (want true) or is gone (want false) on
// every node, failing the test after timeout. Acquire and Release return
// once a majority answered, so a slower node (one that had to reload its
// scripts, say) may get its write a moment later.
func WaitKey(t testing.TB, nodes []*localsvc.Redis, key string, want bool, timeout time.Duration) {
	t.Helper()
	clients := make([]*redis.Client, len(nodes))
	for i, n := range nodes {
		clients[i] = Redis(t, n)
	}
	testenv.Eventually(t, timeout, func() error {
		for i, r := range clients {
			if Exists(t, r, key) != want {
				return fmt.Errorf("%s: exists=%v on node %d, want %v", key, !want, i, want)
			}
		}
		return nil
	})
}

// expireNowScript sets each key of KEYS that has a time to live to expire in
// 1ms and returns those keys; keys without one are left alone.
var expireNowScript = redis.NewScript(`
local set = {}
for _, k in ipairs(KEYS) do
	if redis.call('PTTL', k) > 0 then
		redis.call('PEXPIRE', k, 1)
		table.insert(set, k)
	end
end
return set`)

// ExpireNow makes every node expire those of keys that have a time to live,
// as if it had run out, and waits (at most timeout) until they are gone;
// keys without one (fence counters) are left alone. Tests use it instead of
// waiting out a short TTL, which on a loaded machine may as well run out in
// the middle of a step that needs it. It fails the test on error or
// timeout.
func ExpireNow(t testing.TB, nodes []*localsvc.Redis, timeout time.Duration, keys ...string) {
	t.Helper()
	for i, n := range nodes {
		r := Redis(t, n)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		set, err := expireNowScript.Run(ctx, r, keys).StringSlice()
		cancel()
		if err != nil {
			t.Fatalf("locktest: expire %v on node %d: %v", keys, i, err)
		}
		testenv.Eventually(t, timeout, func() error {
			for _, k := range set {
				if Exists(t, r, k) {
					return fmt.Errorf("%s: still exists on node %d after its expiry", k, i)
				}
			}
			return nil
		})
	}
}
