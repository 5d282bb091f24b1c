package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/loadtest"
)

// chromium is Debian's headless-capable browser (apt-get install chromium);
// CHROMIUM overrides the path.
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("Chromium is needed for the dashboard test (apt-get install chromium, or set CHROMIUM): %v", err)
	}
	return path
}

// newBrowser starts a headless Chromium of the test's own: no sandbox (the
// tests run as root), no GPU, no background traffic to anywhere, a fresh
// profile. It is stopped at cleanup.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	profile, err := os.MkdirTemp("", "flashsale-chromium-*")
	if err != nil {
		t.Fatal(err)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(profile),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1000),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser to exit
		_ = os.RemoveAll(profile)
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// screenshot saves the page as name in the test's artifact directory (kept
// with go test -artifacts).
func screenshot(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), name), png, 0o644); err != nil {
		t.Logf("screenshot: %v", err)
	}
}

// pageProduct is what the dashboard shows for one product.
type pageProduct struct {
	Stock, Sold                               int64
	Succeeded, SoldOut, LimitExceeded, Failed int64
	Depth                                     int64 // the queue depth card
}

// readPage reads a product's row off the page (nil while it has none).
func readPage(ctx context.Context, product string) (*pageProduct, error) {
	js := fmt.Sprintf(`(() => {
		const row = document.querySelector('tr[data-product=%q]');
		if (!row) return null;
		const num = (el) => Number(el.textContent.replace(/,/g, ""));
		const f = (k) => num(row.querySelector('[data-field="' + k + '"]'));
		return {Stock: f("stock"), Sold: f("sold"), Succeeded: f("succeeded"), SoldOut: f("sold_out"),
			LimitExceeded: f("limit_exceeded"), Failed: f("failed"), Depth: num(document.getElementById("queue-depth"))};
	})()`, product)
	return chromedp.Run(ctx, chromedp.Evaluate[*pageProduct](js))
}

// The dashboard, open in a real browser while a burst of orders runs
// against the built binary: the admin signs in through the form, the
// numbers move during the burst, and once it settles they are the API's.
func TestDashboardFollowsABurstInChromium(t *testing.T) {
	browser := newBrowser(t) // first: fail at once when Chromium is missing
	ns := testenv.Namespace(t)
	queueName := "q_" + ns
	// The queue is the test's own, not startCluster's: its keys (asynq's
	// counters outlive the tasks) and its entry in asynq's list go at
	// cleanup, after the cluster stopped.
	rdb := testenv.Redis(t)
	testenv.DeleteKeys(t, rdb, "asynq:{"+queueName+"}")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rdb.SRem(ctx, "asynq:queues", queueName)
	})
	c := startCluster(t, map[string]string{"FLASHSALE_QUEUE": queueName})
	base := c.URLs()[0]
	ctx, cancel := context.WithTimeout(browser, 3*time.Minute)
	defer cancel()
	defer screenshot(ctx, t, "dashboard-end.png")

	// Script errors and refused content (the page's Content-Security-Policy)
	// fail the test; the rest of the console is logged.
	// Console subscribes when called (not when ranged over): before the
	// first Navigate, so that the first page load's messages are not missed.
	var consoleMu sync.Mutex
	var problems []string
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			consoleMu.Lock()
			if m.IsException() || m.Source == "security" {
				problems = append(problems, m.String())
			}
			consoleMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		consoleMu.Lock()
		defer consoleMu.Unlock()
		for _, p := range problems {
			t.Errorf("browser console: %s", p)
		}
	})

	// Not signed in: the page offers the sign-in form, which sets the
	// session cookie and comes back to the dashboard.
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-link")),
		chromedp.Click(chromedp.CSS("#signin-link")),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), adminToken),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#board")),
	)
	if err != nil {
		t.Fatalf("sign in through the page: %v", err)
	}

	// An open-rate burst of single-unit orders from distinct buyers on one
	// product, long enough (several seconds) for the page to update many
	// times while it runs.
	runID := "dash" + ns[len(ns)-10:]
	product := runID + "-p0"
	const orders, stock = 2400, 1500
	type result struct {
		rep *loadtest.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := loadtest.Run(ctx, loadtest.Config{
			APIs: c.URLs(), LoopbackOnly: true, AdminToken: adminToken, RunID: runID,
			Orders: orders, Rate: 400, Concurrency: 100, Products: 1, Hot: true, Stock: stock,
			Timeout: 2 * time.Minute, QueueSampleInterval: -1,
		})
		done <- result{rep, err}
	}()

	var seen []pageProduct // distinct states the page showed during the burst
	var res result
	shot := false
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
poll:
	for {
		select {
		case res = <-done:
			break poll
		case <-tick.C:
		}
		p, err := readPage(ctx, product)
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		if p != nil && (len(seen) == 0 || seen[len(seen)-1] != *p) {
			seen = append(seen, *p)
			if p.Sold > stock/2 && !shot {
				shot = true
				screenshot(ctx, t, "dashboard-burst.png")
			}
		}
	}
	t.Logf("the page showed %d distinct states of the product during the burst", len(seen))
	if res.err != nil {
		t.Fatalf("loadtest: %v", res.err)
	}
	if !res.rep.OK {
		t.Fatalf("loadtest found violations: %+v", res.rep.Outcomes)
	}

	// The numbers moved: the page showed the product part-way sold.
	var sold []int64
	for _, s := range seen {
		if s.Sold > 0 && s.Sold < stock && !slices.Contains(sold, s.Sold) {
			sold = append(sold, s.Sold)
		}
		if s.Stock+s.Sold != stock {
			t.Errorf("page showed stock %d + sold %d, want %d in all", s.Stock, s.Sold, stock)
		}
	}
	if len(sold) < 2 {
		t.Errorf("during the burst the page showed sold = %v (states %+v), want at least two values between 0 and %d", sold, seen, stock)
	}

	// Settled: the page shows what the API says.
	var api struct{ Stock, Sold int64 }
	getJSON(t, base+"/v1/products/"+product, &api)
	if api.Stock != 0 || api.Sold != stock {
		t.Errorf("GET product: got stock %d sold %d, want 0 and %d", api.Stock, api.Sold, stock)
	}
	o := res.rep.Outcomes
	want := pageProduct{Stock: api.Stock, Sold: api.Sold, Succeeded: int64(o.Succeeded), SoldOut: int64(o.SoldOut), Depth: 0}
	testenv.Eventually(t, 15*time.Second, func() error {
		p, err := readPage(ctx, product)
		if err != nil || p == nil || *p != want {
			return fmt.Errorf("page: got %+v (%v), want %+v", p, err, want)
		}
		return nil
	})

	// The API's metrics carry the queue (asynq's collector) and its pool;
	// they are for admins only.
	if resp, err := client.Get(base + "/metrics"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics without the token: got %v %v, want 401", resp, err)
	} else {
		_ = resp.Body.Close()
	}
	mreq, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	mreq.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := client.Do(mreq)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{`asynq_queue_size{queue="` + queueName + `"} 0`, `asynq_tasks_processed_total{queue="` + queueName + `"}`,
		"flashsale_db_pool_max_conns 12", `flashsale_http_requests_total{code="200",method="GET",route="/v1/dashboard"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("GET /metrics: no %s", want)
		}
	}

	// The queue monitor (asynqmon), signed in by the same cookie, shows the
	// queue with the orders it processed.
	err = chromedp.Do(ctx, chromedp.Navigate(base+"/monitoring/queues/"+queueName))
	if err == nil {
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`document.body.innerText.includes(%q) && document.body.innerText.includes("Processed")`, queueName),
			chromedp.WithPollingTimeout(20*time.Second)))
	}
	screenshot(ctx, t, "monitoring.png")
	if err != nil {
		t.Errorf("queue monitor: %v", err)
	}
}
