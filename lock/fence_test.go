package lock_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lock"
	"github.com/flashsale/flashsale/lock/locktest"
)

// TestFencingTokensIncrease: tokens strictly increase across release, the
// lock key's deletion and its expiry.
func TestFencingTokensIncrease(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			t.Parallel()
			nodes := locktest.Nodes(t, n)
			prefix := locktest.Prefix(t)
			// The TTL outlasts the test: the expiry is made by the nodes
			// at once (locktest.ExpireNow) instead of waiting out a short
			// TTL, which on a loaded machine also ran out before a
			// Release, and whose NodeTimeout (TTL/4) was too short.
			c := locktest.Client(t, nodes, &lock.Options{TTL: 10 * time.Second, RenewInterval: -1, KeyPrefix: prefix})
			var last int64
			next := func(how string) *lock.Lock {
				t.Helper()
				l := mustAcquire(t, c, "k")
				if l.Token() <= last {
					t.Errorf("token after %s = %d, want > %d", how, l.Token(), last)
				}
				last = l.Token()
				return l
			}
			l := next("first acquisition")
			if err := l.Release(context.Background()); err != nil {
				t.Fatalf("Release: %v", err)
			}
			l = next("release")
			for _, node := range nodes {
				if err := locktest.Redis(t, node).Del(context.Background(), locktest.LockKey(prefix, "k")).Err(); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			l = next("deletion of the lock key")
			// Every key with a TTL expires, as if it had run out.
			locktest.ExpireNow(t, nodes, 5*time.Second, locktest.LockKey(prefix, "k"), locktest.FenceKey(prefix, "k"))
			l = next("expiry")
			l.Release(context.Background())
		})
	}
}

// fences returns the fence counter of key on every node.
func fences(t *testing.T, rdbs []*redis.Client, prefix, key string) []int64 {
	t.Helper()
	out := make([]int64, len(rdbs))
	for i, r := range rdbs {
		v, err := r.Get(context.Background(), locktest.FenceKey(prefix, key)).Int64()
		if err != nil && err != redis.Nil {
			t.Fatalf("GET fence: %v", err)
		}
		out[i] = v
	}
	return out
}

// TestFencingNodeRestartsEmpty: with 3 nodes, each node in turn restarts
// without its data (fewer than a majority lose state at a time) and tokens
// keep increasing: every token reaches all nodes, a majority synchronously.
func TestFencingNodeRestartsEmpty(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	prefix := locktest.Prefix(t)
	rs := make([]*redisClient, 3)
	rdbs := make([]*redis.Client, 3)
	universal := make([]redis.UniversalClient, 3)
	for i, node := range nodes {
		rdbs[i] = locktest.Redis(t, node)
		rs[i] = &redisClient{node: node, c: rdbs[i]}
		universal[i] = rdbs[i]
	}
	// NodeTimeout well above the default (20ms at this TTL): the test is
	// about tokens, and a loaded CI machine can take longer to answer.
	c, err := lock.New(universal, &lock.Options{TTL: 2 * time.Second, NodeTimeout: 300 * time.Millisecond, KeyPrefix: prefix})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })

	var last int64
	for round := range 6 {
		for range 3 {
			l := mustAcquire(t, c, "k")
			if l.Token() <= last {
				t.Fatalf("round %d: token %d, want > %d", round, l.Token(), last)
			}
			last = l.Token()
			if err := l.Release(context.Background()); err != nil {
				t.Fatalf("Release: %v", err)
			}
		}
		// The token reaches the third node in the background.
		testenv.Eventually(t, 5*time.Second, func() error {
			for i, f := range fences(t, rdbs, prefix, "k") {
				if f < last {
					return fmt.Errorf("node %d fence %d < last token %d", i, f, last)
				}
			}
			return nil
		})
		victim := rs[round%3 : round%3+1]
		killAll(t, victim)
		startAll(t, victim)
	}
}

// TestAdvanceFence: when the only node restarts without persistence, tokens
// go back (the documented hazard, which storage detects as a stale fence);
// AdvanceFence moves the next token above the storage's fence.
func TestAdvanceFence(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	rdb := locktest.Redis(t, nodes[0])
	rs := []*redisClient{{node: nodes[0], c: rdb}}
	c, err := lock.New([]redis.UniversalClient{rdb}, &lock.Options{KeyPrefix: locktest.Prefix(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var before int64
	for range 5 {
		l := mustAcquire(t, c, "k")
		before = l.Token()
		l.Release(context.Background())
	}
	killAll(t, rs)
	startAll(t, rs)
	l := mustAcquire(t, c, "k")
	if l.Token() > before {
		t.Fatalf("token after an empty restart = %d, want <= %d (counter lost)", l.Token(), before)
	}
	l.Release(context.Background())

	const storageFence = 1 << 40
	if err := c.AdvanceFence(context.Background(), "k", storageFence); err != nil {
		t.Fatalf("AdvanceFence: %v", err)
	}
	if err := c.AdvanceFence(context.Background(), "k", 3); err != nil { // never lowers
		t.Fatalf("AdvanceFence to a lower value: %v", err)
	}
	l = mustAcquire(t, c, "k")
	if l.Token() <= storageFence {
		t.Errorf("token after AdvanceFence(%d) = %d, want > %d", int64(storageFence), l.Token(), int64(storageFence))
	}
	l.Release(context.Background())

	if err := c.AdvanceFence(context.Background(), "k", -1); err == nil {
		t.Errorf("AdvanceFence(-1): got nil error")
	}
	if err := c.AdvanceFence(context.Background(), "", 1); !errors.Is(err, lock.ErrInvalidKey) {
		t.Errorf("AdvanceFence of an empty key: got %v, want ErrInvalidKey", err)
	}
	killAll(t, rs)
	if err := c.AdvanceFence(context.Background(), "k", 1); !errors.Is(err, lock.ErrNoQuorum) {
		t.Errorf("AdvanceFence with the node down: got %v, want ErrNoQuorum", err)
	}
}

// storageWrite is the storage side of fencing: a compare-and-advance that
// applies a stock decrement only if no newer token has written.
var storageWrite = redis.NewScript(`
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) < fence then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DECR', KEYS[2])
return 1`)

// TestFencingRejectsStaleWriter: holder A stalls past its TTL (simulated by
// turning the watchdog off), B acquires and writes, then A's write with the
// older token changes nothing.
func TestFencingRejectsStaleWriter(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 3)
	prefix := locktest.Prefix(t)
	store := locktest.Redis(t, nodes[0])
	fenceKey, stockKey := prefix+"storage:fence", prefix+"storage:stock"
	if err := store.Set(context.Background(), stockKey, 1, 0).Err(); err != nil {
		t.Fatalf("SET stock: %v", err)
	}
	write := func(token int64) int64 {
		t.Helper()
		n, err := storageWrite.Run(context.Background(), store, []string{fenceKey, stockKey}, strconv.FormatInt(token, 10)).Int64()
		if err != nil {
			t.Fatalf("storage write: %v", err)
		}
		return n
	}
	a := locktest.Client(t, nodes, &lock.Options{TTL: 150 * time.Millisecond, NodeTimeout: 50 * time.Millisecond, RenewInterval: -1, KeyPrefix: prefix})
	b := locktest.Client(t, nodes, &lock.Options{KeyPrefix: prefix})

	la := mustAcquire(t, a, "sku")
	// A "pauses": no renewal, its key expires on the nodes.
	locktest.WaitDone(t, la, time.Second)
	lb := mustAcquire(t, b, "sku")
	if got := write(lb.Token()); got != 1 {
		t.Fatalf("B's write with token %d changed %d rows, want 1", lb.Token(), got)
	}
	lb.Release(context.Background())
	if got := write(la.Token()); got != 0 {
		t.Errorf("A's stale write with token %d (B had %d) changed %d rows, want 0", la.Token(), lb.Token(), got)
	}
	if stock, err := store.Get(context.Background(), stockKey).Int(); err != nil || stock != 0 {
		t.Errorf("stock = %d, %v, want 0 (never oversold)", stock, err)
	}
}

// acquire.lua run twice with the same owner value (a client resending it
// after a lost reply) succeeds twice with the same token, instead of
// reading its own value as busy.
func TestAcquireScriptRunTwice(t *testing.T) {
	t.Parallel()
	nodes := locktest.Nodes(t, 1)
	r := locktest.Redis(t, nodes[0])
	ctx := locktest.Ctx(t, 10*time.Second)
	keys := []string{"k", "k:fence"}
	var got [][]int64
	for range 2 {
		v, err := lock.AcquireScript.Run(ctx, r, keys, "owner-1", 10_000).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if got[0][0] != 1 || got[1][0] != 1 || got[1][1] != got[0][1] {
		t.Fatalf("two runs with one owner value: %v; want both acquired with the same token", got)
	}
	v, err := lock.AcquireScript.Run(ctx, r, keys, "owner-2", 10_000).Int64Slice()
	if err != nil || v[0] != 0 || v[1] <= 0 {
		t.Fatalf("another owner: %v, %v; want busy with the holder's PTTL", v, err)
	}
}
