// Package e2e runs the built flashsale binary as separate processes (two API
// servers, three workers) against the real Redis and PostgreSQL, and checks
// what buyers see. The tests run one after the other: each runs five
// processes, and together they would exceed the shared PostgreSQL's
// connection limit and crowd two cores.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory/inventorytest"
	"github.com/flashsale/flashsale/loadtest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flashsale-e2e-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	binary, err = cluster.Build(ctx, root, dir, true)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

const adminToken = "e2e-admin-token-3f9a"

// startCluster runs 2 APIs and 3 workers on a fresh database, a queue and
// key prefix of the test's own on the shared Redis.
func startCluster(t *testing.T, extra map[string]string) *cluster.Cluster {
	t.Helper()
	rdb := testenv.Redis(t) // fail early, with a clear message, when Redis is down
	// Registered before the cluster's stop, so they run after it: the
	// test's keys, its queue's, and the queue's entry in asynq's list.
	ns := testenv.QueueNamespace(t, rdb)
	env := map[string]string{
		"FLASHSALE_DATABASE_URL": inventorytest.NewDatabase(t),
		"FLASHSALE_REDIS_URL":    testenv.RedisURL(),
		"FLASHSALE_QUEUE":        "q_" + ns,
		"FLASHSALE_KEY_PREFIX":   ns + ":",
		"FLASHSALE_ADMIN_TOKEN":  adminToken,
		"FLASHSALE_LOG_FORMAT":   "json",
		"FLASHSALE_LOCK_TTL":     "5s",
	}
	for k, v := range extra {
		env[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Config{Binary: binary, APIs: 2, Workers: 3, Env: env, LogDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			for _, p := range c.All() {
				b, _ := os.ReadFile(p.LogPath())
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("--- %s log (tail) ---\n%s", p.Name, b)
			}
		}
	})
	return c
}

// 1,000 concurrent orders from distinct buyers for 100 units: exactly 100
// succeed, the other 900 are sold out (queued and decided, or refused at
// once by the sold-out fast path), and every accepted order ends final.
func TestBurstSellsExactlyTheStock(t *testing.T) {
	c := startCluster(t, nil)
	rep := burst(t, c, 1000, 200, 100)
	o := rep.Outcomes
	if o.Succeeded != 100 {
		t.Errorf("succeeded: got %d, want 100", o.Succeeded)
	}
	if got := o.SoldOut + o.SoldOutFastPath; got != 900 {
		t.Errorf("sold out: got %d (%d queued + %d fast path), want 900", got, o.SoldOut, o.SoldOutFastPath)
	}
	if o.Unsettled != 0 || o.Failed != 0 || o.Rejected != 0 || o.LimitExceeded != 0 {
		t.Errorf("got %+v, want no unsettled, failed, rejected or limited orders", o)
	}
	if rep.Totals.Stock != 0 || rep.Totals.Sold != 100 {
		t.Errorf("product: got stock %d sold %d, want 0 and 100", rep.Totals.Stock, rep.Totals.Sold)
	}
	// What the API itself says about the product.
	var p struct{ Stock, Sold int64 }
	getJSON(t, c.URLs()[1]+"/v1/products/"+rep.Products[0].ID, &p)
	if p.Stock != 0 || p.Sold != 100 {
		t.Errorf("GET product: got stock %d sold %d, want 0 and 100", p.Stock, p.Sold)
	}
}

// Each buyer sends the same order five times, concurrently and to both
// APIs, with one Idempotency-Key: every answer names the same order, and
// each buyer ends with exactly one order.
func TestIdempotencyKeyMakesOneOrderPerBuyer(t *testing.T) {
	c := startCluster(t, nil)
	const users, repeats, stock = 100, 5, 1000
	product := "idem-sku"
	post(t, c.URLs()[0]+"/v1/products", adminToken, "",
		fmt.Sprintf(`{"id":%q,"name":"x","stock":%d,"per_user_limit":1}`, product, stock), http.StatusCreated, nil)

	ids := make([][repeats]string, users)
	var wg sync.WaitGroup
	for u := range users {
		for r := range repeats {
			wg.Go(func() {
				var placed struct {
					OrderID string `json:"order_id"`
				}
				body := fmt.Sprintf(`{"product_id":%q,"user_id":"buyer-%d","quantity":1}`, product, u)
				post(t, c.URLs()[r%2]+"/v1/orders", "", fmt.Sprintf("key-%d", u), body, http.StatusAccepted, &placed)
				ids[u][r] = placed.OrderID
			})
		}
	}
	wg.Wait()
	seen := map[string]bool{}
	for u := range users {
		for r := 1; r < repeats; r++ {
			if ids[u][r] != ids[u][0] {
				t.Fatalf("buyer %d: answers named orders %v, want one order", u, ids[u])
			}
		}
		if seen[ids[u][0]] {
			t.Fatalf("two buyers share order %s", ids[u][0])
		}
		seen[ids[u][0]] = true
	}
	for u := range users {
		var o struct {
			Status string `json:"status"`
			UserID string `json:"user_id"`
		}
		getJSON(t, c.URLs()[u%2]+"/v1/orders/"+ids[u][0]+"?wait=30s", &o)
		if o.Status != "succeeded" || o.UserID != fmt.Sprintf("buyer-%d", u) {
			t.Errorf("buyer %d: got status %q user %q, want succeeded", u, o.Status, o.UserID)
		}
	}
	var p struct{ Stock, Sold int64 }
	getJSON(t, c.URLs()[0]+"/v1/products/"+product, &p)
	if p.Sold != users || p.Stock != stock-users {
		t.Errorf("product: got sold %d stock %d, want sold %d stock %d (one unit per buyer)", p.Sold, p.Stock, users, stock-users)
	}
	// The same key with another body is refused.
	post(t, c.URLs()[0]+"/v1/orders", "", "key-0",
		fmt.Sprintf(`{"product_id":%q,"user_id":"buyer-0","quantity":2}`, product), http.StatusUnprocessableEntity, nil)
}

// burst sends orders (concurrency in flight) for one hot product of the
// given stock through the cluster's APIs with the load tester, and fails the
// test unless every invariant held.
func burst(t *testing.T, c *cluster.Cluster, orders, concurrency int, stock int64) *loadtest.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := loadtest.Run(ctx, loadtest.Config{
		APIs: c.URLs(), LoopbackOnly: true, AdminToken: adminToken,
		Orders: orders, Concurrency: concurrency, Products: 1, Hot: true, Stock: stock,
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
	return rep
}

var client = &http.Client{Timeout: 40 * time.Second}

func post(t *testing.T, url, token, key, body string, want int, out any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		t.Error(err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("POST %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if resp.StatusCode != want {
		t.Errorf("POST %s: got %d %s, want %d", url, resp.StatusCode, buf.String(), want)
		return
	}
	if out != nil {
		if err := json.Unmarshal(buf.Bytes(), out); err != nil {
			t.Errorf("POST %s: decode %q: %v", url, buf.String(), err)
		}
	}
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got %d, want 200", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
