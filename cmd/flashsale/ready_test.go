package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
)

// A worker's /readyz, on its metrics listener, says whether it can reach
// what it needs (PostgreSQL, the queue's Redis, a majority of the lock
// nodes), as the API's does: 200 while it can, 503 naming the lock once
// its only lock node is gone, while /healthz, the process alive, stays
// 200. Before, the worker had only /healthz, which answered 200 whatever
// it could reach.
func TestWorkerReadyzChecksWhatItNeeds(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	if _, err := inventory.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	ns := testenv.QueueNamespace(t, testenv.Redis(t))
	node := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	port, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := startServer(t, "worker", "FLASHSALE_DATABASE_URL="+db, "FLASHSALE_REDIS_URL="+testenv.RedisURL(),
		"FLASHSALE_QUEUE=q_"+ns, "FLASHSALE_KEY_PREFIX="+ns+":", "FLASHSALE_LOCK_REDIS_URLS="+node.URL(0),
		"FLASHSALE_METRICS_ADDR="+addr)
	get := func(path string) (int, map[string]any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
		if err != nil {
			return 0, nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("%s: %w", path, err)
		}
		return resp.StatusCode, body, nil
	}
	want := func(status int, checks map[string]string) func() error {
		return func() error {
			p.failIfEnded(t, "its /readyz answered")
			code, body, err := get("/readyz")
			if err != nil {
				return err
			}
			got, _ := body["checks"].(map[string]any)
			if code != status || len(got) != len(checks) {
				return fmt.Errorf("/readyz = %d %v, want %d with checks %v", code, body, status, checks)
			}
			for k, v := range checks {
				if got[k] != v {
					return fmt.Errorf("/readyz = %d %v, want %d with checks %v", code, body, status, checks)
				}
			}
			return nil
		}
	}
	testenv.Eventually(t, 30*time.Second, want(http.StatusOK, map[string]string{"postgres": "ok", "redis": "ok", "lock": "ok"}))
	if err := node.Stop(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, want(http.StatusServiceUnavailable, map[string]string{"postgres": "ok", "redis": "ok", "lock": "unavailable"}))
	if code, body, err := get("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz with the lock node gone = %d %v %v, want 200", code, body, err)
	}
	if !strings.Contains(p.out.String(), `"msg":"readiness check failed"`) {
		t.Errorf("the worker did not log the failed check:\n%s", p.out)
	}
}
