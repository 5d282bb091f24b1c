// Tests of the queue over other Redis topologies (internal: they compare
// the exact asynq options).
package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
)

// TestParseRedisURLOptions checks the options each scheme produces.
func TestParseRedisURLOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url  string
		pool int
		want asynq.RedisConnOpt
	}{
		{"redis://127.0.0.1:6379/0", 0, asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}},
		{"redis://127.0.0.1:6379", 16, asynq.RedisClientOpt{Addr: "127.0.0.1:6379", PoolSize: 16}},
		{"redis://:secret@db.internal:6380/2", 64, asynq.RedisClientOpt{Addr: "db.internal:6380", Password: "secret", DB: 2, PoolSize: 64}},
		{"redis://app:secret@db.internal:6379/0", 0, asynq.RedisClientOpt{Addr: "db.internal:6379", Username: "app", Password: "secret"}},
		{"rediss://db.internal:6379/1", 0, asynq.RedisClientOpt{Addr: "db.internal:6379", DB: 1, TLSConfig: &tls.Config{ServerName: "db.internal"}}},
		{"redis-socket:///run/redis.sock?db=3", 0, asynq.RedisClientOpt{Network: "unix", Addr: "/run/redis.sock", DB: 3}},
		{"redis-sentinel://s1:26379?master=orders", 0,
			asynq.RedisFailoverClientOpt{MasterName: "orders", SentinelAddrs: []string{"s1:26379"}}},
		// One password for the sentinels and the servers they name.
		{"redis-sentinel://:pw@s1:26379,s2:26379,s3:26379?master=orders", 32,
			asynq.RedisFailoverClientOpt{MasterName: "orders", SentinelAddrs: []string{"s1:26379", "s2:26379", "s3:26379"}, SentinelPassword: "pw", Password: "pw", PoolSize: 32}},
		// The servers' own credentials as parameters, and a database.
		{"redis-sentinel://sent:spw@s1:26379,s2:26379/3?master=orders&username=app&password=apw", 0,
			asynq.RedisFailoverClientOpt{MasterName: "orders", SentinelAddrs: []string{"s1:26379", "s2:26379"},
				SentinelUsername: "sent", SentinelPassword: "spw", Username: "app", Password: "apw", DB: 3}},
		{"redis-sentinel://s1:26379/?master=orders&password=apw", 0,
			asynq.RedisFailoverClientOpt{MasterName: "orders", SentinelAddrs: []string{"s1:26379"}, Password: "apw"}},
		{"redis-cluster://n1:7000,n2:7001,n3:7002", 16, asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000", "n2:7001", "n3:7002"}}},
		{"redis-cluster://app:pw@n1:7000", 0, asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000"}, Username: "app", Password: "pw"}},
		// go-redis's parameters that asynq's client carries; the URL's pool
		// size wins over the caller's (as in a lock URL).
		{"redis://127.0.0.1:6379/0?pool_size=7", 96, asynq.RedisClientOpt{Addr: "127.0.0.1:6379", PoolSize: 7}},
		// Without pool_size, the caller's still holds.
		{"redis://127.0.0.1:6379/0?read_timeout=1s", 16, asynq.RedisClientOpt{Addr: "127.0.0.1:6379", PoolSize: 16, ReadTimeout: time.Second}},
		{"rediss://db.internal:6379/1?dial_timeout=2s&read_timeout=500ms&write_timeout=1", 0,
			asynq.RedisClientOpt{Addr: "db.internal:6379", DB: 1, TLSConfig: &tls.Config{ServerName: "db.internal"},
				DialTimeout: 2 * time.Second, ReadTimeout: 500 * time.Millisecond, WriteTimeout: time.Second}},
	}
	for _, tc := range tests {
		got, err := ParseRedisURL(tc.url, tc.pool)
		if err != nil {
			t.Errorf("ParseRedisURL(%q): %v", tc.url, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseRedisURL(%q):\ngot  %#v\nwant %#v", tc.url, got, tc.want)
		}
	}
	for _, bad := range []string{
		"http://127.0.0.1:6379",
		"redis://127.0.0.1:6379/x",
		"redis-sentinel://s1:26379,s2:26379",    // no master name
		"redis-cluster://",                      // no nodes
		"redis-cluster://n1:7000,,n2:7001",      // an empty node
		"redis-sentinel://s1:26379?master=",     // empty master name
		"redis-sentinel://s1:26379/x?master=m",  // not a database number
		"redis-sentinel://s1:26379/-1?master=m", // nor a database
		"::not a url",
		// Parameters asynq would ignore: refused, not run without.
		"redis://127.0.0.1:6379/0?foo=bar",
		"redis://127.0.0.1:6379/0?pool_size=8&max_retries=5",
		"redis://127.0.0.1:6379/0?protocol=3",
		"redis://127.0.0.1:6379/0?pool_size=many",
		"redis://127.0.0.1:6379/0?read_timeout=soon",
		"redis-socket:///run/redis.sock?db=1&pool_size=4",
		"redis-sentinel://s1:26379?master=m&sentinel_password=x",
		"redis-sentinel://s1:26379?master=m&pool_size=4", // not read from a sentinel URL
		"redis-cluster://n1:7000?read_timeout=1s",
	} {
		if _, err := ParseRedisURL(bad, 0); err == nil {
			t.Errorf("ParseRedisURL(%q): got no error, want one", bad)
		}
	}
}

// enqueueAndFind queues an order through connOpt and finds it again: the
// producer, the inspector and the stats all work over that topology.
func enqueueAndFind(t *testing.T, connOpt asynq.RedisConnOpt) {
	t.Helper()
	client := asynq.NewClient(connOpt)
	defer client.Close()
	rdb := connOpt.MakeRedisClient().(redis.UniversalClient)
	defer rdb.Close()
	opts := Options{Queue: "orders"}
	o := Order{ID: "01KB0000000000000000000001", ProductID: "p", UserID: "u", Quantity: 1, AcceptedAt: time.Now().UTC()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := NewProducer(client, opts).Enqueue(ctx, o); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	if err := NewProducer(client, opts).Enqueue(ctx, o); !errors.Is(err, ErrDuplicate) {
		t.Errorf("enqueue again: got %v, want ErrDuplicate", err)
	}
	inspector := NewInspector(rdb, opts)
	ti, err := inspector.Lookup(ctx, o.ID)
	if err != nil || ti.State != Waiting || ti.Order.ProductID != "p" {
		t.Errorf("lookup: got %+v, %v; want the waiting order", ti, err)
	}
	if st, err := inspector.States(ctx, []string{"01KB0000000000000000000000", o.ID}); err != nil || !slices.Equal(st, []State{0, Waiting}) {
		t.Errorf("states: got %v, %v; want [0 Waiting]", st, err)
	}
	st, err := inspector.Stats(ctx)
	if err != nil || st.Size != 1 || st.Pending != 1 {
		t.Errorf("stats: got %+v, %v; want one pending task", st, err)
	}
}

// A redis-cluster:// URL drives asynq on a real three-node Redis Cluster.
func TestQueueOnRedisCluster(t *testing.T) {
	t.Parallel()
	addrs := testenv.PrivateRedisCluster(t, 3)
	opt, err := ParseRedisURL("redis-cluster://"+addrs[0]+","+addrs[1]+","+addrs[2], 8)
	if err != nil {
		t.Fatal(err)
	}
	enqueueAndFind(t, opt)
}

// A redis-sentinel:// URL finds the master through a real Sentinel, with
// and without passwords.
func TestQueueThroughRedisSentinel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                     string
		sentinelPass, masterPass string
		userinfo, params         string
	}{
		{"no passwords", "", "", "", ""},
		{"one password for both", "pw", "pw", ":pw@", ""},
		{"password of the server only", "", "node-pw", "", "&password=node-pw"},
		{"a password each", "sentinel-pw", "node-pw", ":sentinel-pw@", "&password=node-pw"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := testenv.PrivateSentinelWithPasswords(t, tc.sentinelPass, tc.masterPass)
			opt, err := ParseRedisURL("redis-sentinel://"+tc.userinfo+addr+"?master=mymaster"+tc.params, 8)
			if err != nil {
				t.Fatal(err)
			}
			enqueueAndFind(t, opt)
		})
	}
}
