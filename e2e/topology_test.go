package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
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
	rep := burst(t, c, 600, 100, 100)
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
		size, err := rdb.DBSize(context.Background()).Result()
		_ = rdb.Close()
		if err != nil || size == 0 {
			t.Errorf("lock node %d: got %d keys (%v), want the lock's keys", i+1, size, err)
		}
	}
}
