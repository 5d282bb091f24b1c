package queue_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hibiken/asynqmon"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/queue"
)

// The queue monitor's calls, made on options from CallTimeout, end at its
// bound while Redis hangs (here paused, with a 20s read timeout, as a
// URL's read_timeout may set). Before, a call that the API's timeout cut
// off the request kept its connection until go-redis gave up, and each
// poll of an open monitor page left one more running.
func TestMonitorCallsEndAtTheirBound(t *testing.T) {
	t.Parallel()
	node := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	opt, err := queue.ParseRedisURL(node.URL(0)+"?read_timeout=20s", 0)
	if err != nil {
		t.Fatal(err)
	}
	mon := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: queue.CallTimeout(opt, 300*time.Millisecond), ReadOnly: true})
	t.Cleanup(func() { _ = mon.Close() })
	queues := func() int {
		rec := httptest.NewRecorder()
		mon.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/monitoring/api/queues", nil))
		return rec.Code
	}
	if code := queues(); code != http.StatusOK {
		t.Fatalf("GET /monitoring/api/queues with Redis answering = %d, want 200", code)
	}

	if err := node.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Resume() })
	done := make(chan int, 1)
	go func() { done <- queues() }()
	// Well under the read timeout, many times the bound.
	select {
	case code := <-done:
		if code == http.StatusOK {
			t.Errorf("GET /monitoring/api/queues with Redis paused = 200, want an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("GET /monitoring/api/queues with Redis paused: its call still runs after 10s (bound 300ms)")
	}
}
