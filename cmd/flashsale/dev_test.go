package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/internal/testenv"
)

// TestMain lets this test binary stand in for flashsale when started as
// one of its servers: `flashsale dev` starts its API and workers as its own
// executable with the command first, which under `go test` is this binary;
// the signal tests start it as any command that waits on its database.
//
// Started as a worker with DEV_TEST_WORKER set (a test's dev passes it on:
// not a FLASHSALE_ variable), it is a stand-in worker instead, that stops
// as that variable says (see fakeWorker); as an API with DEV_TEST_API set,
// a stand-in API that never gets ready (see fakeAPI).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" && os.Getenv("DEV_TEST_WORKER") != "" {
		os.Exit(fakeWorker(os.Getenv("DEV_TEST_WORKER"), os.Stdout))
	}
	if len(os.Args) > 1 && os.Args[1] == "api" && os.Getenv("DEV_TEST_API") != "" {
		os.Exit(fakeAPI(os.Stdout))
	}
	if len(os.Args) > 1 && (os.Args[1] == "api" || os.Args[1] == "worker" || os.Args[1] == "migrate" || os.Args[1] == "dev") {
		main() // exits
	}
	gin.SetMode(gin.ReleaseMode) // as run does: no route listing per API started
	os.Exit(m.Run())
}

// devRun is a `flashsale dev` run in this process (its API and worker as
// child processes of this test binary).
type devRun struct {
	base           string // the API's base URL
	stdout, stderr *testenv.LogBuffer
	cancel         context.CancelFunc
	done           chan error
}

// devOn starts `flashsale dev` with one worker on the database at dbURL,
// with a queue and key prefix of the test's own on the shared Redis, and
// waits until it prints that it is running. Extra args are added to its
// own. It is stopped at cleanup, if the test did not stop it.
func devOn(t *testing.T, dbURL, ns string, args ...string) *devRun {
	t.Helper()
	addr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRun{base: "http://" + addr, stdout: &testenv.LogBuffer{}, stderr: &testenv.LogBuffer{}, cancel: cancel, done: make(chan error, 1)}
	args = append([]string{"-workers", "1", "-http-addr", addr, "-database-url", dbURL, "-redis-url", testenv.RedisURL(),
		"-queue", "q_" + ns, "-key-prefix", ns + ":"}, args...)
	go func() { d.done <- runDev(ctx, args, d.stdout, d.stderr) }()
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(d.stdout.String(), "flashsale is running") {
		select {
		case err := <-d.done:
			d.done <- err // for stop
			t.Fatalf("dev ended before it was running: %v\n%s", err, d.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev not running after 60s:\n%s", d.stderr)
		}
	}
	return d
}

// stop ends the run as Ctrl-C does and waits for it, at most 60s (dev
// gives each child childStopGrace, 50s, to stop).
func (d *devRun) stop(t *testing.T) {
	t.Helper()
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("dev: %v\n%s", err, d.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("dev did not stop within 60s:\n%s", d.stderr)
	}
}

// devNamespace gives a test a namespace for dev's queue and keys on the
// shared Redis, removed at cleanup (after dev stopped: cleanups run last
// registered first).
func devNamespace(t *testing.T) string {
	t.Helper()
	return testenv.QueueNamespace(t, testenv.Redis(t))
}

// A rerun of dev on the same database says in one line that the demo
// product is already there, and the lines it prints to create and restock
// a product work: they name a product that does not exist yet (from an
// operator review: on a rerun they answered product_exists). Its buy line
// places a new order on each run, which the same line sent again in that
// run replays: its Idempotency-Key was try-1 on every run, so a rerun's
// line replayed the first run's order; and its order succeeds (its buyer,
// alice on every run, was over the product's limit of one on a rerun).
func TestDevRerunKeepsTheDemoProductAndItsLinesWork(t *testing.T) {
	t.Parallel()
	ns := devNamespace(t)
	db := testenv.NewDatabase(t)
	const token = "dev-rerun-token-0123"
	orders := map[string]int{} // order id → the run whose buy line placed it
	for run := 1; run <= 3; run++ {
		d := devOn(t, db, ns, "-admin-token", token)
		out := d.stdout.String()
		buy := regexp.MustCompile(`-X POST \S+/v1/orders .*\n.*-H 'Idempotency-Key: ([^']+)' -d '(\{"product_id":"demo-phone"[^']*)'`).FindStringSubmatch(out)
		if buy == nil {
			t.Fatalf("run %d: no buy line in:\n%s", run, out)
		}
		var first string
		for range 2 {
			status, body := devSend(t, http.MethodPost, d.base+"/v1/orders", "", buy[1], buy[2])
			var placed struct {
				OrderID string `json:"order_id"`
			}
			if err := json.Unmarshal([]byte(body), &placed); status != http.StatusAccepted || err != nil {
				t.Fatalf("run %d: the printed buy line answered %d %s, want 202", run, status, body)
			}
			if first != "" {
				if placed.OrderID != first {
					t.Errorf("run %d: the buy line sent again placed order %s, want a replay of %s", run, placed.OrderID, first)
				}
				continue
			}
			first = placed.OrderID
			if prev, ok := orders[first]; ok {
				t.Errorf("run %d: the printed buy line (Idempotency-Key %s) replayed order %s of run %d, want a new order",
					run, buy[1], first, prev)
			} else {
				orders[first] = run
			}
			// It buys: its buyer is this run's (the demo product sells one
			// per buyer; a fixed alice's order ended limit_exceeded).
			testenv.Eventually(t, 30*time.Second, func() error {
				status, body := devSend(t, http.MethodGet, d.base+"/v1/orders/"+first+"?wait=5s", "", "", "")
				if !strings.Contains(body, `"status":"succeeded"`) {
					return fmt.Errorf("run %d: the buy line's order reads %d %s, want succeeded", run, status, body)
				}
				return nil
			})
		}
		already := strings.Contains(d.stderr.String(), "demo product already there")
		if already != (run > 1) {
			t.Errorf("run %d: 'demo product already there' logged: %v, want %v\n%s", run, already, run > 1, d.stderr)
		}
		// The printed create and restock lines, as an operator pastes them.
		m := regexp.MustCompile(`-d '(\{"id":"([^"]+)"[^']*)'\n.*?-X POST \S+/v1/products/([^/]+)/restock .*-H 'Idempotency-Key: ([^']+)' -d '([^']*)'`).FindStringSubmatch(out)
		if m == nil || m[2] != m[3] {
			t.Fatalf("run %d: no create and restock lines of one product in:\n%s", run, out)
		}
		id := m[2]
		if status, body := devSend(t, http.MethodPost, d.base+"/v1/products", token, "", m[1]); status != http.StatusCreated {
			t.Errorf("run %d: the printed create line (%s) answered %d %s, want 201", run, id, status, body)
		}
		status, body := devSend(t, http.MethodPost, d.base+"/v1/products/"+id+"/restock", token, m[4], m[5])
		if !strings.Contains(body, `"stock":110`) {
			t.Errorf("run %d: the printed restock line answered %d %s, want the stock at 110", run, status, body)
		}
		if run == 1 && !strings.Contains(out, "demo product (stock 100, one per buyer)") {
			t.Errorf("run 1: the demo product is not said to have stock 100:\n%s", out)
		}
		d.stop(t)
	}
}

// devSend sends one request, with the admin token and an Idempotency-Key
// if given, and returns the answer.
func devSend(t *testing.T, method, url, token, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// dev's processes log in the format of dev's own lines, "auto" included
// (from an operator review: dev wrote JSON to a pipe, its processes text),
// each line marked with the process that wrote it: in JSON a "process"
// field, so that every line is one JSON object; in text a "[name] " prefix.
func TestDevLogsInOneFormat(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"auto", "json", "text"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			d := devOn(t, testenv.NewDatabase(t), devNamespace(t), "-log-format", format)
			// dev is running once its API answers: its worker may still be
			// starting, and a SIGTERM before it handles signals ends it
			// without a line.
			testenv.Eventually(t, 30*time.Second, func() error {
				if !strings.Contains(d.stderr.String(), "worker started") {
					return errors.New("no 'worker started' line yet")
				}
				return nil
			})
			d.stop(t) // its shutdown lines too
			from := map[string]int{}
			for line := range strings.Lines(d.stderr.String()) {
				proc := "dev"
				if format == "text" {
					if name, rest, ok := strings.Cut(line, "] "); ok && strings.HasPrefix(name, "[") {
						proc, line = name[1:], rest
					}
					if !strings.HasPrefix(line, "time=") {
						t.Errorf("%s wrote a line that is not slog's text: %q", proc, line)
					}
				} else {
					var v map[string]any
					if err := json.Unmarshal([]byte(line), &v); err != nil {
						t.Errorf("a line that is not a JSON object: %q: %v", line, err)
						continue
					}
					if p, ok := v["process"].(string); ok {
						proc = p
					} else if v["component"] != "dev" {
						t.Errorf("a line of no process, not dev's: %q", line)
					}
				}
				from[proc]++
			}
			for _, p := range []string{"dev", "api", "worker-1"} {
				if from[p] == 0 {
					t.Errorf("no line from %s (lines by process: %v):\n%s", p, from, d.stderr)
				}
			}
		})
	}
}

// dev stopped before it has probed its PostgreSQL (a Ctrl-C while its
// private Redis starts, here a context already ended) stops there: it
// does not take the probe's failure, which is only the stop's, for "nothing
// answers" and initdb and start a private PostgreSQL (seconds, on the way
// to a stop) beside the one its URL names, which does answer.
func TestDevStoppedBeforeItsDatabaseStartsNoPrivateOne(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	ns := devNamespace(t)
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stdout, stderr := &testenv.LogBuffer{}, &testenv.LogBuffer{}
	err := runDev(ctx, []string{"-workers", "1", "-data-dir", dataDir, "-database-url", db, "-redis-url", testenv.RedisURL(),
		"-queue", "q_" + ns, "-key-prefix", ns + ":", "-log-format", "json"}, stdout, stderr)
	if err != nil {
		t.Errorf("dev stopped during its start: %v, want nil", err)
	}
	if strings.Contains(stderr.String(), "started a private PostgreSQL") {
		t.Errorf("dev stopped before it probed its database started a private PostgreSQL:\n%s", stderr)
	}
	if _, err := os.Stat(dataDir + "/postgres"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev stopped before it probed its database made %s/postgres (stat: %v), want none:\n%s", dataDir, err, stderr)
	}
	if !strings.Contains(stderr.String(), "stopped during its start") {
		t.Errorf("no line saying dev stopped during its start:\n%s", stderr)
	}
}

// dev on an address of every interface prints, and waits on, URLs that
// reach its API on loopback, and refuses port 0 at once, naming the flag
// (from a user review: with -http-addr :PORT its curl lines named
// http://:PORT, which curl refuses; with port 0 it waited 30s for an API
// at port 0, then said it was not ready).
func TestDevOnEveryInterfacePrintsURLsThatWork(t *testing.T) {
	t.Parallel()
	t.Run("every interface", func(t *testing.T) {
		t.Parallel()
		addr, err := cluster.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(addr)
		d := devOn(t, testenv.NewDatabase(t), devNamespace(t), "-http-addr", ":"+port)
		out := d.stdout.String()
		if strings.Contains(out, "http://:") || !strings.Contains(out, "curl -s -X POST http://127.0.0.1:"+port+"/v1/orders") {
			t.Errorf("dev on :%s printed:\n%s\nwant its URLs on http://127.0.0.1:%s", port, out, port)
		}
	})
	t.Run("port 0", func(t *testing.T) {
		t.Parallel()
		ns := devNamespace(t)
		start := time.Now()
		err := runDev(t.Context(), []string{"-workers", "1", "-http-addr", "127.0.0.1:0", "-database-url", testenv.NewDatabase(t),
			"-redis-url", testenv.RedisURL(), "-queue", "q_" + ns, "-key-prefix", ns + ":"}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), `bad -http-addr="127.0.0.1:0"`) {
			t.Fatalf("dev -http-addr 127.0.0.1:0: %v (after %v), want an error naming -http-addr", err, time.Since(start))
		}
	})
}

func TestDevBaseURL(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"127.0.0.1:8080": "http://127.0.0.1:8080", ":8080": "http://127.0.0.1:8080", "0.0.0.0:8080": "http://127.0.0.1:8080",
		"[::]:8080": "http://[::1]:8080", "[::1]:8080": "http://[::1]:8080", "localhost:8080": "http://localhost:8080",
	} {
		if got, err := devBaseURL(addr); err != nil || got != want {
			t.Errorf("devBaseURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
}

// fakeWorker is a worker process of dev's tests that stops as how says,
// at its SIGTERM: "partial" writes a last line without a newline and exits
// 0; "fail" exits 3; "ignore" goes on (until it is killed). It says "fake
// worker started" once it handles SIGTERM, and returns its exit status.
func fakeWorker(how string, out io.Writer) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	fmt.Fprintln(out, "fake worker started")
	<-sig
	switch how {
	case "partial":
		fmt.Fprint(out, "last words without a newline")
		return 0
	case "fail":
		fmt.Fprintln(out, "failed to stop")
		return 3
	case "ignore":
		for range sig {
		}
	}
	fmt.Fprintf(out, "unknown DEV_TEST_WORKER=%q\n", how)
	return 1
}

// devWithFakeWorker is devOn with its worker a fakeWorker that stops as how
// says, once that worker is up (it handles SIGTERM). Not parallel: it sets
// the environment dev's processes inherit.
func devWithFakeWorker(t *testing.T, how string) *devRun {
	t.Helper()
	t.Setenv("DEV_TEST_WORKER", how)
	d := devOn(t, testenv.NewDatabase(t), devNamespace(t), "-log-format", "text")
	testenv.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(d.stderr.String(), "[worker-1] fake worker started\n") {
			return errors.New("the fake worker has not started yet")
		}
		return nil
	})
	return d
}

// A child's last line that does not end in a newline is written, marked
// as its lines are, once the child has exited: dev buffers a child's
// output line by line, and dropped what was left in the buffer.
func TestDevWritesAChildsLastPartialLine(t *testing.T) {
	d := devWithFakeWorker(t, "partial")
	d.stop(t)
	if !strings.Contains(d.stderr.String(), "[worker-1] last words without a newline\n") {
		t.Errorf("dev dropped its worker's last line, which did not end in a newline:\n%s", d.stderr)
	}
}

// dev stopped by Ctrl-C fails, naming the child, when a child does not
// stop cleanly (from a review: it exited 0 whatever its processes' ends,
// so a script could not tell a worker that failed its shutdown, orders
// possibly left undecided, from a clean stop).
func TestDevFailsWhenAChildDoesNotStopCleanly(t *testing.T) {
	d := devWithFakeWorker(t, "fail")
	d.cancel()
	d.cancel = nil // stopped here, not at cleanup
	select {
	case err := <-d.done:
		if err == nil || !strings.Contains(err.Error(), "worker-1 did not stop cleanly: exit status 3") {
			t.Errorf("dev stopped with its worker exiting 3: %v, want an error naming worker-1 and its status\n%s", err, d.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("dev did not stop within 60s:\n%s", d.stderr)
	}
}

// A child still running after the grace period is killed, and stopChildren
// says so, naming it; one that stops cleanly is not named.
func TestStopChildrenNamesAKilledChild(t *testing.T) {
	t.Parallel()
	out := &testenv.LogBuffer{}
	exited := make(chan string, 2)
	var procs []*child
	for name, how := range map[string]string{"worker-1": "ignore", "worker-2": "partial"} {
		c, err := startChild(os.Args[0], name, []string{"worker"}, append(cluster.BaseEnv(), "DEV_TEST_WORKER="+how), false, out, exited)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, c)
		t.Cleanup(func() { _ = c.cmd.Process.Kill(); <-c.done })
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if strings.Count(out.String(), "fake worker started\n") < 2 {
			return errors.New("the fake workers have not started yet")
		}
		return nil
	})
	// A grace the clean child's stop fits in with room (a race-enabled
	// binary sleeps 1s at exit).
	err := stopChildren(procs, 10*time.Second, slog.New(slog.DiscardHandler))
	if err == nil || err.Error() != "worker-1 did not stop within 10s and was killed" {
		t.Errorf("stopChildren: %v, want an error naming worker-1 alone, killed\n%s", err, out)
	}
}

// A child that has already ended when the grace period runs out (here:
// its turn comes after another child's, whose deadline ended everyone's
// time) is not killed, nor named killed: it is named by its own end,
// exit status 3, and one that exited 0 is not named at all. Before,
// stopChildren chose at random between its end and the deadline, both
// ready, and called such a child killed ("did not stop within ... and was
// killed"), with a warning that it was being killed. The ended children
// are named several times (one process each): each name is one more
// chance for that random choice.
func TestStopChildrenDoesNotNameAnEndedChildKilled(t *testing.T) {
	t.Parallel()
	out := &testenv.LogBuffer{}
	exited := make(chan string, 3)
	started := map[string]*child{}
	for name, how := range map[string]string{"worker-1": "ignore", "failed": "fail", "clean": "partial"} {
		c, err := startChild(os.Args[0], name, []string{"worker"}, append(cluster.BaseEnv(), "DEV_TEST_WORKER="+how), false, out, exited)
		if err != nil {
			t.Fatal(err)
		}
		started[name] = c
		t.Cleanup(func() { _ = c.cmd.Process.Kill(); <-c.done })
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if strings.Count(out.String(), "fake worker started\n") < 3 {
			return errors.New("the fake workers have not started yet")
		}
		return nil
	})
	// The two that stop end before stopChildren starts.
	for _, name := range []string{"failed", "clean"} {
		c := started[name]
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not end within 30s of its SIGTERM", name)
		}
	}
	procs := []*child{started["worker-1"]}
	var want []string
	want = append(want, "worker-1 did not stop within 1s and was killed")
	for i := 2; i <= 17; i++ {
		name := fmt.Sprintf("worker-%d", i)
		ended := started["clean"]
		if i%2 == 0 {
			ended = started["failed"]
			want = append(want, name+" did not stop cleanly: exit status 3")
		}
		procs = append(procs, &child{name: name, cmd: ended.cmd, done: ended.done, err: ended.err})
	}
	var logs testenv.LogBuffer
	err := stopChildren(procs, time.Second, slog.New(slog.NewTextHandler(&logs, nil)))
	if got := fmt.Sprint(err); got != strings.Join(want, "\n") {
		t.Errorf("stopChildren:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if n := strings.Count(logs.String(), "killing"); n != 1 || !strings.Contains(logs.String(), "process=worker-1 ") {
		t.Errorf("stopChildren warned of %d kills, want one, of worker-1:\n%s", n, logs.String())
	}
}

// fakeAPI is an API process of dev's tests that never listens, so that dev
// stays in its start (waiting for the API to be ready) until it is
// stopped: it says "fake api started" once it handles SIGTERM, and exits
// 0 at it.
func fakeAPI(out io.Writer) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	fmt.Fprintln(out, "fake api started")
	<-sig
	return 0
}

// dev stopped during its start (a Ctrl-C while it waits for its API)
// fails, naming the child, when a child it had started does not stop
// cleanly: it stops what it started on the way out, and ignored how that
// went, so the stop read as a clean one (exit 0) though its worker exited
// 3. Not parallel: it sets the environment dev's processes inherit.
func TestDevStoppedDuringItsStartFailsWhenAChildDoesNotStopCleanly(t *testing.T) {
	t.Setenv("DEV_TEST_WORKER", "fail")
	t.Setenv("DEV_TEST_API", "never-ready")
	addr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ns := devNamespace(t)
	db := testenv.NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &testenv.LogBuffer{}
	code, stopped := make(chan int, 1), make(chan struct{})
	go func() {
		defer close(stopped)
		code <- run(ctx, []string{"dev", "-workers", "1", "-http-addr", addr, "-database-url", db,
			"-redis-url", testenv.RedisURL(), "-queue", "q_" + ns, "-key-prefix", ns + ":", "-log-format", "text"}, io.Discard, stderr)
	}()
	t.Cleanup(func() { // dev and its children stopped before the database and namespace go
		cancel()
		select {
		case <-stopped:
		case <-time.After(60 * time.Second):
			t.Errorf("dev did not stop within 60s:\n%s", stderr)
		}
	})
	testenv.Eventually(t, 60*time.Second, func() error {
		if !strings.Contains(stderr.String(), "[worker-1] fake worker started\n") || !strings.Contains(stderr.String(), "[api] fake api started\n") {
			return errors.New("the fake API and worker have not started yet")
		}
		return nil
	})
	cancel() // as Ctrl-C does, while dev waits for its API to be ready
	select {
	case c := <-code:
		if c != 1 || !strings.Contains(stderr.String(), "worker-1 did not stop cleanly: exit status 3") {
			t.Errorf("dev stopped during its start, its worker exiting 3: exit %d, want 1 and a line naming worker-1 and its status:\n%s", c, stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("dev did not stop within 60s:\n%s", stderr)
	}
}

// In JSON mode, a child's line gets the process as a field only if it is a
// JSON object; any other line, a JSON object cut short included, gets the
// "[name] " prefix. Before, a line that began `{"` got the field whatever
// followed: a child's last line cut mid-object (it exited, or was killed,
// while writing it), flushed at its exit, came out as
// `{"process":"worker-1","time":...,"msg":"cut` — a line marked as a JSON
// log line of that process that no JSON reader can read.
func TestPrefixWriterMarksOnlyJSONObjectsWithAField(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
	}{
		{"a JSON line", `{"level":"INFO","msg":"ok"}` + "\n", `{"process":"worker-1","level":"INFO","msg":"ok"}` + "\n"},
		{"a last JSON line without a newline", `{"level":"INFO","msg":"ok"}`, `{"process":"worker-1","level":"INFO","msg":"ok"}` + "\n"},
		{"a last JSON line cut short", `{"level":"INFO","msg":"cu`, `[worker-1] {"level":"INFO","msg":"cu` + "\n"},
		{"a JSON line cut short", `{"level":"INFO","msg":"cu` + "\n" + `{"msg":"next"}` + "\n",
			`[worker-1] {"level":"INFO","msg":"cu` + "\n" + `{"process":"worker-1","msg":"next"}` + "\n"},
		{"a line of text", "panic: boom\n", "[worker-1] panic: boom\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			pw := &prefixWriter{name: "worker-1", json: true, w: &out}
			if _, err := io.WriteString(pw, tc.in); err != nil {
				t.Fatal(err)
			}
			if err := pw.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != tc.want {
				t.Errorf("wrote %q, got %q, want %q", tc.in, got, tc.want)
			}
			for line := range strings.Lines(out.String()) {
				if strings.HasPrefix(line, `{"process":`) && !json.Valid([]byte(line)) {
					t.Errorf("a line marked with a process field that is no JSON: %q", line)
				}
			}
		})
	}
}
