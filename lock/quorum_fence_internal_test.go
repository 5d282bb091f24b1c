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
	// The lagging node either refuses connections (an error at once, as
	// from a killed node) or takes longer than NodeTimeout to fail: neither
	// confirms the token.
	for _, tc := range []struct {
		name          string
		dialerRetries int
	}{
		{"refused at once", 1},
		{"failing after NodeTimeout", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := oneOfThreeUp(t, tc.dialerRetries)
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
		})
	}
}

// AdvanceFence needs a majority of nodes to confirm the raised counter:
// with 1 of 3 reachable, a later acquisition on the 2 others could mint a
// token below the minimum again.
func TestAdvanceFenceOnAMinorityFails(t *testing.T) {
	t.Parallel()
	c := oneOfThreeUp(t, 0)
	if err := c.AdvanceFence(context.Background(), "k", 50); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("AdvanceFence with 1 of 3 nodes = %v, want ErrNoQuorum", err)
	}
}

// oneOfThreeUp is a client of three nodes of which only the first (the
// shared Redis, under the test's own prefix) answers. The other two refuse
// connections; their clients dial dialerRetries times (0: go-redis's
// default, several attempts with backoff, which outlasts NodeTimeout; 1: a
// call fails at once, as with NewFromURLs).
func oneOfThreeUp(t *testing.T, dialerRetries int) *Client {
	t.Helper()
	rdb := testenv.Redis(t)
	prefix := testenv.Namespace(t) + ":"
	testenv.DeleteKeys(t, rdb, prefix)
	down := func() redis.UniversalClient {
		r := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond,
			DialerRetries: dialerRetries, MaxRetries: -1, ContextTimeoutEnabled: true})
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

// The token of an acquisition is the highest any node of its majority
// minted, whichever node answered first, and the nodes of the majority that
// minted less are raised to it before the lock is granted. Here node 0
// answers first with 1 (its counter lagged) and node 1 with 101: the lock
// must carry 101 (a token above every earlier one, since some node of any
// majority saw it), and node 0's counter must be raised to 101 so that 101
// stands on a majority.
func TestTokenIsTheMajoritysHighest(t *testing.T) {
	t.Parallel()
	c := oneOfThreeUp(t, 0)
	ks := c.keys("k")
	replies := make(chan nodeReply, 3)
	replies <- nodeReply{idx: 0, ok: true, n: 1}
	replies <- nodeReply{idx: 1, ok: true, n: 101}
	replies <- nodeReply{idx: 2, err: errors.New("node 2 down")}
	l, res := c.decide(context.Background(), "k", ks, c.newValue(), time.Now(), replies)
	if l == nil {
		t.Fatalf("no lock from 2 of 3 nodes (one lagging, raised): %v", res.err)
	}
	if l.Token() != 101 {
		t.Errorf("token = %d, want 101 (the highest of the majority)", l.Token())
	}
	rdb := c.nodes[0].rdb
	if got, err := rdb.Get(context.Background(), ks.fence).Int64(); err != nil || got != 101 {
		t.Errorf("node 0's fence counter = %d, %v; want raised to 101", got, err)
	}
}
