package api

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/singleflight"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/sale"
)

// MonitorPath is where [Config.Monitor] is mounted; a monitor that builds
// its own links (asynqmon's RootPath) must be given this path.
const MonitorPath = "/monitoring"

// MonitorTimeout bounds each request to the queue monitor, as
// [sale.ReadBudget] bounds the API's own reads.
const MonitorTimeout = sale.ReadBudget

// DashboardProducts is the most products /v1/dashboard shows (by id).
const DashboardProducts = 100

// dashboardTTL is how long one /v1/dashboard snapshot is reused: the page
// polls every 500ms during a burst, and every open page would otherwise
// cost a products query and a queue stats call per poll.
const dashboardTTL = 250 * time.Millisecond

//go:embed ui/index.html ui/assets
var uiFS embed.FS

//go:embed openapi.json
var openAPIDoc []byte

// routeUI adds what browsers and tools use besides the JSON API: the live
// sale dashboard (/ and /assets/, data from /v1/dashboard), the admin
// sign-in, the queue monitor (/monitoring/) and the OpenAPI document.
func (s *server) routeUI(r *gin.Engine) error {
	index, err := uiFS.ReadFile("ui/index.html")
	if err != nil {
		return err
	}
	assets, err := fs.Sub(uiFS, "ui/assets")
	if err != nil {
		return err
	}
	files := http.StripPrefix("/assets", http.FileServerFS(assets))

	get(r, "/", func(c *gin.Context) {
		pageHeaders(c)
		c.Data(http.StatusOK, "text/html; charset=utf-8", index)
	})
	get(r, "/assets/*file", func(c *gin.Context) {
		// No directory listings, and an unknown file is the JSON 404 of any
		// unknown path (the file server's own is text/plain).
		name := strings.TrimPrefix(c.Param("file"), "/")
		if fi, err := fs.Stat(assets, name); strings.HasSuffix(name, "/") || err != nil || fi.IsDir() {
			abort(c, http.StatusNotFound, "not_found", "no such endpoint")
			return
		}
		pageHeaders(c)
		c.Header("Cache-Control", "no-cache")
		files.ServeHTTP(c.Writer, c.Request)
	})
	get(r, "/login", s.loginForm)
	r.POST("/login", s.login)
	r.POST("/logout", s.logout)
	get(r, "/openapi.json", func(c *gin.Context) {
		c.Data(http.StatusOK, "application/json", openAPIDoc)
	})

	d := &dashboard{svc: s.svc, ttl: dashboardTTL}
	get(r, "/v1/dashboard", s.adminRead, func(c *gin.Context) {
		v, err := d.snapshot(c.Request.Context())
		if err != nil {
			s.fail(c, err)
			return
		}
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, v)
	})

	if s.cfg.Monitor != nil {
		// A browser page: its address without the slash leads to it (the
		// engine redirects no path by itself), with its query string.
		get(r, MonitorPath, func(c *gin.Context) {
			to := MonitorPath + "/"
			if q := c.Request.URL.RawQuery; q != "" {
				to += "?" + q
			}
			c.Redirect(http.StatusMovedPermanently, to)
		})
		// asynq's Inspector, which the monitor reads the queue with, takes
		// no context: while the queue's Redis hangs each of its calls waits
		// go-redis's timeouts and retries (10 s and more), and the page's
		// polls would each hold a request that long. Bounded as the other
		// admin reads: past MonitorTimeout the monitor's call answers 503
		// (its read finishes in the background, by MonitorTimeout too with
		// the monitor cmd/flashsale builds: queue.CallTimeout).
		monitor := http.TimeoutHandler(s.cfg.Monitor, MonitorTimeout,
			`{"error":{"code":"unavailable","message":"the queue monitor did not answer in time; retry shortly"}}`)
		// GET and HEAD only: the monitor runs read-only, and this refuses
		// the rest (405) before it reaches it. A HEAD reaches the monitor as
		// the GET it stands for (its own router routes GET only); net/http
		// drops the body.
		get(r, MonitorPath+"/*any", s.adminRead, func(c *gin.Context) {
			c.Header("X-Frame-Options", "DENY")
			c.Header("Referrer-Policy", "no-referrer")
			req := c.Request
			if req.Method == http.MethodHead {
				req = req.Clone(req.Context())
				req.Method = http.MethodGet
			}
			monitor.ServeHTTP(timeoutTyped{c.Writer}, req)
		})
	}
	return nil
}

// timeoutTyped gives http.TimeoutHandler's 503 the type of its JSON body:
// it sets no Content-Type of its own, so the answer went out typed as
// net/http guessed it (text/plain, and nosniff), unlike every other error
// of the API. The monitor's own answers, their headers copied before their
// status, keep the type they set.
type timeoutTyped struct{ http.ResponseWriter }

func (w timeoutTyped) WriteHeader(code int) {
	if code == http.StatusServiceUnavailable && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.ResponseWriter.WriteHeader(code)
}

// pageHeaders are the security headers of flashsale's own pages: scripts,
// styles and requests only from this origin, never framed.
func pageHeaders(c *gin.Context) {
	c.Header("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("Referrer-Policy", "no-referrer")
}

// dashboardJSON is the body of GET /v1/dashboard.
type dashboardJSON struct {
	// Time is when the snapshot was taken; the page computes rates from
	// the difference of two snapshots.
	Time     time.Time          `json:"time"`
	Products []dashboardProduct `json:"products"`
	// More is true when there are more than DashboardProducts products.
	More  bool        `json:"more"`
	Queue queue.Stats `json:"queue"`
	// taken is when the snapshot was taken with the monotonic clock
	// reading (Time, in UTC, has none): its age is measured with it, so a
	// step back of the wall clock does not keep serving it.
	taken time.Time
}

type dashboardProduct struct {
	productJSON
	Orders outcomesJSON `json:"orders"`
}

// outcomesJSON counts a product's decided orders by outcome.
type outcomesJSON struct {
	Succeeded     int64 `json:"succeeded"`
	SoldOut       int64 `json:"sold_out"`
	LimitExceeded int64 `json:"limit_exceeded"`
	Failed        int64 `json:"failed"`
}

// dashboard serves snapshots, each shared by every request within ttl.
type dashboard struct {
	svc   Service
	ttl   time.Duration
	group singleflight.Group

	mu   sync.Mutex
	last dashboardJSON
}

func (d *dashboard) snapshot(ctx context.Context) (dashboardJSON, error) {
	d.mu.Lock()
	last := d.last
	d.mu.Unlock()
	if !last.taken.IsZero() && time.Since(last.taken) < d.ttl {
		return last, nil
	}
	v, err, _ := d.group.Do("", func() (any, error) {
		// Shared by concurrent callers: not cancelled with the first one.
		// Bounded as a read of an order is, products and queue counts
		// together: during an outage the page shows the error (503) within
		// seconds and polls again, rather than wait out each call's own
		// bound in turn.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sale.ReadBudget)
		defer cancel()
		return d.load(ctx)
	})
	if err != nil {
		return dashboardJSON{}, err
	}
	snap := v.(dashboardJSON)
	d.mu.Lock()
	if d.last.taken.IsZero() || snap.taken.After(d.last.taken) {
		d.last = snap
	}
	d.mu.Unlock()
	return snap, nil
}

func (d *dashboard) load(ctx context.Context) (dashboardJSON, error) {
	ps, err := d.svc.Products(ctx, "", DashboardProducts+1)
	if err != nil {
		return dashboardJSON{}, err
	}
	st, err := d.svc.QueueStats(ctx)
	if err != nil {
		return dashboardJSON{}, err
	}
	now := time.Now()
	out := dashboardJSON{Time: now.UTC(), taken: now, Queue: st, Products: make([]dashboardProduct, 0, len(ps))}
	if len(ps) > DashboardProducts {
		ps, out.More = ps[:DashboardProducts], true
	}
	for _, p := range ps {
		out.Products = append(out.Products, dashboardProduct{productJSON: toProduct(p), Orders: toOutcomes(p.Orders)})
	}
	return out, nil
}

func toOutcomes(o inventory.OrderCounts) outcomesJSON {
	return outcomesJSON{Succeeded: o.Succeeded, SoldOut: o.SoldOut, LimitExceeded: o.LimitExceeded, Failed: o.Failed}
}
