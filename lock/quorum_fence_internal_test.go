package lock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
)

// An acquisition is granted only when its fencing token (the highest any
// node minted) stands on a majority of nodes: otherwise a majority that
// restarts empty, or a later holder's majority, could mint that token again.
// Here 2 of 3 nodes answered OK, one with token 101 and one lagging at 1;
// the lagging node cannot be raised (it stopped answering after its reply),
// so 101 stands on 1 node, one short of the quorum of 2: no lock.
func TestTokenOnAMinorityIsNoLock(t *testing.T) {
	t.Parallel()
	c := oneOfThreeUp(t)
	ks := c.keys("k")
	replies := make(chan nodeReply, 3)
	replies <- nodeReply{idx: 0, ok: true, n: 101}
	replies <- nodeReply{idx: 1, ok: true, n: 1}
	replies <- nodeReply{idx: 2, ok: false, n: 4000}
	l, res := c.decide(context.Background(), "k", ks, c.newValue(), time.Now(), replies)
	if l != nil {
		t.Fatalf("granted a lock with token %d confirmed on 1 of 3 nodes", l.Token())
	}
	if !errors.Is(res.err, ErrNoQuorum) {
		t.Fatalf("err = %v, want ErrNoQuorum", res.err)
	}
}

// AdvanceFence needs a majority of nodes to confirm the raised counter:
// with 1 of 3 reachable, a later acquisition on the 2 others could mint a
// token below the minimum again.
func TestAdvanceFenceOnAMinorityFails(t *testing.T) {
	t.Parallel()
	c := oneOfThreeUp(t)
	if err := c.AdvanceFence(context.Background(), "k", 50); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("AdvanceFence with 1 of 3 nodes = %v, want ErrNoQuorum", err)
	}
}

// oneOfThreeUp is a client of three nodes of which only the first (the
// shared Redis, under the test's own prefix) answers.
func oneOfThreeUp(t *testing.T) *Client {
	t.Helper()
	rdb := testenv.Redis(t)
	prefix := testenv.Namespace(t) + ":"
	testenv.DeleteKeys(t, rdb, prefix)
	down := func() redis.UniversalClient {
		r := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond,
			MaxRetries: -1, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	c, err := New([]redis.UniversalClient{rdb, down(), down()}, &Options{TTL: 5 * time.Second, KeyPrefix: prefix,
		RenewInterval: -1, NodeTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
