package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/loadtest"
)

// Beyond one machine: the queue on a three-node Redis Cluster
// (redis-cluster://) and the lock on three independent Redis nodes
// (FLASHSALE_LOCK_REDIS_URLS, a quorum). A burst sells exactly the stock,
// a restock reopens the sold-out product, and every lock node took part.
func TestBurstOnRedisClusterWithThreeLockNodes(t *testing.T) {
	cluster := testenv.PrivateRedisCluster(t, 3)
	var lockURLs []string
	var lockNodes []*localsvc.Redis
	for range 3 {
		n := testenv.PrivateRedis(t, localsvc.RedisOptions{})
		lockNodes = append(lockNodes, n)
		lockURLs = append(lockURLs, n.URL(0))
	}
	c := startCluster(t, map[string]string{
		"FLASHSALE_REDIS_URL":       "redis-cluster://" + strings.Join(cluster, ","),
		"FLASHSALE_LOCK_REDIS_URLS": strings.Join(lockURLs, ","),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := loadtest.Run(ctx, loadtest.Config{
		APIs: c.URLs(), LoopbackOnly: true, AdminToken: adminToken,
		Orders: 600, Concurrency: 100, Products: 1, Hot: true, Stock: 100,
		Timeout: 2 * time.Minute, MaxRetries: -1,
	})
	if err != nil {
		t.Fatalf("loadtest: %v", err)
	}
	if !rep.OK {
		var buf bytes.Buffer
		_ = rep.WriteText(&buf)
		t.Fatalf("invariants violated:\n%s", buf.String())
	}
	if o := rep.Outcomes; o.Succeeded != 100 || o.SoldOut+o.SoldOutFastPath != 500 || o.Failed != 0 || o.Unsettled != 0 {
		t.Errorf("got %+v, want 100 succeeded and 500 sold out", o)
	}
	product := rep.Products[0].ID

	// The sold-out flag (two keys in one Lua script) works on the cluster:
	// a restock reopens the product.
	post(t, c.URLs()[0]+"/v1/products/"+product+"/restock", adminToken, "", `{"quantity":5}`, 200, nil)
	var placed struct {
		OrderID string `json:"order_id"`
	}
	post(t, c.URLs()[1]+"/v1/orders", "", "", `{"product_id":"`+product+`","user_id":"late-buyer","quantity":1}`, 202, &placed)
	var o struct{ Status string }
	getJSON(t, c.URLs()[1]+"/v1/orders/"+placed.OrderID+"?wait=30s", &o)
	if o.Status != "succeeded" {
		t.Errorf("order after the restock: got %q, want succeeded", o.Status)
	}

	// Every lock node holds the product's fencing counter.
	for i, n := range lockNodes {
		rdb := redis.NewClient(&redis.Options{Addr: n.Addr()})
		size, err := rdb.DBSize(ctx).Result()
		_ = rdb.Close()
		if err != nil || size == 0 {
			t.Errorf("lock node %d: got %d keys (%v), want the lock's keys", i+1, size, err)
		}
	}
}
