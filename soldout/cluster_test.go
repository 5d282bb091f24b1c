package soldout

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
)

// markReopen runs a sell-out and a restock through g (a gate with a long
// CacheTTL, so that a slow read of the flag still counts: see freshFor;
// Reopen forgets the cached answer): the flag is set at
// the generation read with stock 0, a restock clears it and moves the
// generation on, and a stale mark from before the restock changes nothing.
func markReopen(t *testing.T, g *Gate) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ok, err := g.Mark(ctx, "p", 0); err != nil || !ok {
		t.Fatalf("Mark: got %v, %v; want true", ok, err)
	}
	if sold, err := g.SoldOut(ctx, "p"); err != nil || !sold {
		t.Fatalf("SoldOut after Mark: got %v, %v; want true", sold, err)
	}
	gen, err := g.Reopen(ctx, "p", 0)
	if err != nil || gen != 1 {
		t.Fatalf("Reopen: got %d, %v; want generation 1", gen, err)
	}
	if sold, err := g.SoldOut(ctx, "p"); err != nil || sold {
		t.Errorf("SoldOut after Reopen: got %v, %v; want false", sold, err)
	}
	if ok, err := g.Mark(ctx, "p", 0); err != nil || ok {
		t.Errorf("stale Mark after Reopen: got %v, %v; want false", ok, err)
	}
}

func TestGate(t *testing.T) {
	t.Parallel()
	rdb := testenv.Redis(t)
	ns := testenv.Namespace(t)
	testenv.DeleteKeys(t, rdb, ns+":")
	markReopen(t, New(rdb, Options{KeyPrefix: ns + ":", CacheTTL: time.Hour}))
}

// On a Redis Cluster, a product's two keys share a hash slot, so the
// scripts that touch both run (no CROSSSLOT error).
func TestGateOnRedisCluster(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.PrivateRedisCluster(t, 3)})
	t.Cleanup(func() { _ = rdb.Close() })
	markReopen(t, New(rdb, Options{KeyPrefix: "fs:", CacheTTL: time.Hour}))
}
