package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
)

func TestDashboardPageAndAssets(t *testing.T) {
	t.Parallel()
	h := newHandler(t, nil, Config{})
	tests := []struct {
		path, contentType, contains string
		want                        int
	}{
		{"/", "text/html", `src="/assets/dashboard.js"`, 200},
		{"/assets/dashboard.js", "text/javascript", `fetch("/v1/dashboard"`, 200},
		{"/assets/dashboard.css", "text/css", `.mix`, 200},
		{"/assets/", "application/json", `"not_found"`, 404},
		{"/assets/nope.js", "application/json", `"not_found"`, 404},
		{"/assets/dashboard.js/", "application/json", `"not_found"`, 404},
		{"/assets/.", "application/json", `"not_found"`, 404},
		{"/assets/../api.go", "", ``, 0}, // cleaned by the router: never a file outside assets
	}
	for _, tc := range tests {
		rec := do(t, h, request{method: "GET", path: tc.path})
		if tc.want != 0 && rec.Code != tc.want {
			t.Errorf("GET %s: got %d, want %d", tc.path, rec.Code, tc.want)
		}
		if strings.Contains(rec.Body.String(), "package api") {
			t.Errorf("GET %s: served Go source", tc.path)
		}
		if tc.want != 0 {
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.contentType)
			}
			if !strings.Contains(rec.Body.String(), tc.contains) {
				t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
			}
		}
		if tc.want == 200 {
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("GET %s: Content-Security-Policy %q, want script-src 'self'", tc.path, csp)
			}
		}
	}
}

func TestDashboardData(t *testing.T) {
	t.Parallel()
	svc, deps := newService(t)
	inventorytest.CreateProduct(t, deps.store, "a-phone", 10, 1)
	inventorytest.CreateProduct(t, deps.store, "b-case", 0, 0)
	h := newHandler(t, svc, Config{})
	// One order queued, so the queue has a depth.
	if rec := do(t, h, request{method: "POST", path: "/v1/orders", body: `{"product_id":"a-phone","user_id":"u","quantity":1}`}); rec.Code != 202 {
		t.Fatalf("order: got %d %s", rec.Code, rec.Body)
	}
	get := func() dashboardJSON {
		t.Helper()
		rec := do(t, h, request{method: "GET", path: "/v1/dashboard", header: bearer(testToken)})
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /v1/dashboard: got %d %s", rec.Code, rec.Body)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control: got %q, want no-store", cc)
		}
		var d dashboardJSON
		if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := get()
	if len(d.Products) != 2 || d.Products[0].ID != "a-phone" || d.Products[1].ID != "b-case" || d.More {
		t.Fatalf("products: got %+v, want a-phone and b-case", d.Products)
	}
	if p := d.Products[0]; p.Stock != 10 || p.Sold != 0 || p.PerUserLimit != 1 || p.Orders != (outcomesJSON{}) {
		t.Errorf("a-phone: got %+v, want stock 10, nothing decided", p)
	}
	if d.Queue.Queue != deps.queue || d.Queue.Size != 1 || d.Queue.Pending != 1 {
		t.Errorf("queue: got %+v, want one pending order in %s", d.Queue, deps.queue)
	}

	// A decided batch shows up (after the cache time) with its outcome mix.
	_, err := deps.store.Apply(t.Context(), inventory.Batch{Orders: []inventory.OrderRequest{
		{ID: "o1", ProductID: "a-phone", UserID: "u1", Quantity: 2, AcceptedAt: time.Now()},
		{ID: "o2", ProductID: "a-phone", UserID: "u2", Quantity: 1, AcceptedAt: time.Now()},
	}, Tokens: map[string]int64{"a-phone": 1}})
	if err != nil {
		t.Fatal(err)
	}
	want := outcomesJSON{Succeeded: 1, LimitExceeded: 1}
	testenv.Eventually(t, 5*time.Second, func() error {
		if p := get().Products[0]; p.Stock != 9 || p.Sold != 1 || p.Orders != want {
			return fmt.Errorf("a-phone after a batch: got %+v, want stock 9, sold 1, outcomes %+v", p, want)
		}
		return nil
	})
}

// Concurrent polls within the cache time share one snapshot.
func TestDashboardSnapshotShared(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t)
	d := &dashboard{svc: svc, ttl: time.Minute}
	first, err := d.snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		again, err := d.snapshot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !again.Time.Equal(first.Time) {
			t.Errorf("snapshot time: got %v, want the cached %v", again.Time, first.Time)
		}
	}
}

// The dashboard's queue depth (queue.size) counts the tasks not yet done:
// a dead (archived) task is not in it (from a review: size was asynq's,
// which counts archived and completed tasks, so every order whose task
// died stayed in the page's queue depth and its chart for good).
func TestDashboardQueueDepthLeavesOutDeadTasks(t *testing.T) {
	t.Parallel()
	svc, deps := newService(t)
	inventorytest.CreateProduct(t, deps.store, "a-phone", 10, 0)
	h := newHandler(t, svc, Config{})
	for _, u := range []string{"u1", "u2"} {
		if rec := do(t, h, request{method: "POST", path: "/v1/orders", body: `{"product_id":"a-phone","user_id":"` + u + `","quantity":1}`}); rec.Code != 202 {
			t.Fatalf("order: got %d %s", rec.Code, rec.Body)
		}
	}
	in := asynq.NewInspector(deps.connOpt)
	t.Cleanup(func() { _ = in.Close() })
	tasks, err := in.ListPendingTasks(deps.queue)
	if err != nil || len(tasks) != 2 {
		t.Fatalf("pending tasks: got %d (%v), want 2", len(tasks), err)
	}
	if err := in.ArchiveTask(deps.queue, tasks[0].ID); err != nil {
		t.Fatal(err)
	}
	rec := do(t, h, request{method: "GET", path: "/v1/dashboard", header: bearer(testToken)})
	var d dashboardJSON
	if err := json.Unmarshal(rec.Body.Bytes(), &d); rec.Code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/dashboard: got %d %s", rec.Code, rec.Body)
	}
	if q := d.Queue; q.Size != 1 || q.Pending != 1 || q.Archived != 1 {
		t.Errorf("queue: got size %d, pending %d, archived %d; want size 1 (the pending task), pending 1, archived 1", q.Size, q.Pending, q.Archived)
	}
}

// A step back of the wall clock (NTP, a resumed VM) does not freeze the
// dashboard: a snapshot's age is measured on the monotonic clock (from a
// review: it was time.Since of its Time, which is in UTC and has no
// monotonic reading, so after a step back by an hour every poll got the
// snapshot from before the step for that hour).
func TestDashboardSnapshotAfterTheClockStepsBack(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t)
	// Taken just before the wall clock was stepped back by an hour.
	stale := dashboardJSON{Time: time.Now().Add(time.Hour).UTC()}
	d := &dashboard{svc: svc, ttl: time.Minute, last: stale}
	got, err := d.snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got.Time.Equal(stale.Time) || time.Since(got.Time).Abs() > time.Minute {
		t.Errorf("snapshot time: got %v, want a new snapshot (now %v)", got.Time, time.Now().UTC())
	}
	again, err := d.snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !again.Time.Equal(got.Time) {
		t.Errorf("second snapshot time: got %v, want the cached %v", again.Time, got.Time)
	}
}
