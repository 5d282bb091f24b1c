package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
)

// An api, worker or dev process SIGTERMed during its start (here: waiting
// on its database, whose schema table the test holds locked) stops
// cleanly: exit 0, with a log line saying so, and every line a log line.
// Before, the signal cancelled its start's calls, and it failed: exit 1 and
// a line that is no log line ("flashsale worker: FLASHSALE_DATABASE_URL:
// ...: context canceled"), which dev, stopping its processes, showed as
// theirs. migrate, whose run is all its work, stops as cleanly but with
// exit 1: cut short, it did not do what it was run for (stoppedUnfinished).
//
// The process is this test binary as that command (TestMain runs main).
func TestSignalDuringStartIsACleanStop(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	if _, err := inventory.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	ns := testenv.QueueNamespace(t, testenv.Redis(t))
	for _, tc := range []struct {
		name, msg string
		exit      int
	}{
		{"api", "stopped during its start: signal received", 0},
		{"worker", "stopped during its start: signal received", 0},
		{"dev", "stopped during its start: signal received", 0},
		{"migrate", "stopped before it finished: signal received", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One at a time: all wait on the same lock.
			holder, _ := testenv.HoldLock(t, db, `LOCK TABLE goose_db_version IN ACCESS EXCLUSIVE MODE`)
			watch, err := pgx.Connect(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			defer watch.Close(ctx)

			env := []string{"FLASHSALE_DATABASE_URL=" + db, "FLASHSALE_REDIS_URL=" + testenv.RedisURL(),
				"FLASHSALE_QUEUE=q_" + ns, "FLASHSALE_KEY_PREFIX=" + ns + ":"}
			if tc.name == "dev" {
				// dev needs its API's port (it refuses port 0).
				addr, err := cluster.FreeAddr()
				if err != nil {
					t.Fatal(err)
				}
				env = append(env, "FLASHSALE_HTTP_ADDR="+addr)
			}
			p := startServer(t, tc.name, env...)
			// Its start waits on the lock: its signal handler is in place.
			testenv.Eventually(t, 30*time.Second, func() error {
				p.failIfEnded(t, "its start waited on the database")
				waiting, err := testenv.WaitsOn(ctx, watch, holder)
				if err == nil && !waiting {
					err = errors.New("its start does not wait on the locked schema table yet")
				}
				return err
			})
			p.wantStop(t, tc.exit, tc.msg)
		})
	}
}

// An api whose Redis stops answering after its start's ping, while its
// subscriptions (decided orders, sold-out changes) wait for their
// confirmation, stops cleanly at a SIGTERM, as elsewhere in its start
// (a review's note). Before, that wait was on a context no signal ended,
// and go-redis reads the confirmation with no deadline: the api ignored
// the SIGTERM and waited for ever.
func TestSignalWhileSubscriptionsWaitIsACleanStop(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	if _, err := inventory.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	ns := testenv.QueueNamespace(t, testenv.Redis(t))
	redisURL, stalled := stallingRedis(t)
	p := startServer(t, "api", "FLASHSALE_DATABASE_URL="+db, "FLASHSALE_REDIS_URL="+redisURL,
		"FLASHSALE_QUEUE=q_"+ns, "FLASHSALE_KEY_PREFIX="+ns+":")
	select {
	case <-stalled:
	case <-p.exited:
		t.Fatalf("api ended before it subscribed: %s\n%s", exitStatus(p.err), p.out)
	case <-time.After(30 * time.Second):
		t.Fatalf("api did not subscribe within 30s:\n%s", p.out)
	}
	p.wantStop(t, 0, "stopped during its start: signal received")
}

// serverProcess is this test binary run as a flashsale command (TestMain
// runs main) with its output collected.
type serverProcess struct {
	name   string
	cmd    *exec.Cmd
	out    *testenv.LogBuffer
	exited chan struct{} // closed when it has ended, err then set
	err    error
}

// startServer starts this test binary as name (a command) with the
// given FLASHSALE_ settings, logging in JSON and the API on a free port.
// It is stopped at cleanup, if the test did not stop it.
func startServer(t *testing.T, name string, env ...string) *serverProcess {
	t.Helper()
	p := &serverProcess{name: name, out: &testenv.LogBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], name)
	p.cmd.Env = append(append(cluster.BaseEnv(), "FLASHSALE_HTTP_ADDR=127.0.0.1:0", "FLASHSALE_LOG_FORMAT=json"), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Should the test binary die, its child stops too (a signal it
	// handles: it holds nothing of its own to clean up).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		// A failed test still stops it: a SIGTERM every second (a second
		// one ends it at once).
		for {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
				return
			case <-time.After(time.Second):
			}
		}
	})
	return p
}

// failIfEnded fails the test if the process has ended before what it was
// expected to reach (before).
func (p *serverProcess) failIfEnded(t *testing.T, before string) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("%s ended before %s: %s\n%s", p.name, before, exitStatus(p.err), p.out)
	default:
	}
}

// wantStop sends SIGTERM to a process in its start and wants it to stop
// within 30s with exit status exit, every line a log line, and one of them
// msg.
func (p *serverProcess) wantStop(t *testing.T, exit int, msg string) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30s of a SIGTERM during its start:\n%s", p.name, p.out)
	}
	var logged bool
	for line := range strings.Lines(p.out.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("%s wrote a line that is no log line: %q", p.name, line)
			continue
		}
		if rec["msg"] == msg && rec["component"] == p.name {
			logged = true
		}
	}
	if p.cmd.ProcessState.ExitCode() != exit || !logged {
		t.Errorf("%s SIGTERMed during its start: ended with %v, logged %q: %v; want exit status %d and that line:\n%s",
			p.name, exitStatus(p.err), msg, logged, exit, p.out)
	}
}

// stallingRedis is a proxy to the shared Redis that stops answering, as a
// Redis that froze, once a client sends SUBSCRIBE: from then on no
// connection through it gets an answer (the subscription's connection is
// made, its handshake answered, its confirmation never comes), and stalled
// is closed. It returns the Redis URL through the proxy; the proxy and its
// connections are closed at cleanup.
func stallingRedis(t *testing.T) (redisURL string, stalled <-chan struct{}) {
	t.Helper()
	u, err := url.Parse(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	upstream := u.Host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Host = ln.Addr().String()
	st := make(chan struct{})
	var stall sync.Once
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			_ = c.Close()
			return false
		}
		conns = append(conns, c)
		return true
	}
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for _, c := range conns {
			_ = c.Close()
		}
	})
	// pipe copies src to dst, nothing once stalled, until either ends.
	pipe := func(dst, src net.Conn, watch bool) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if watch && bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
				stall.Do(func() { close(st) })
			}
			select {
			case <-st:
			default:
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = c.Close()
				continue
			}
			if !track(c) || !track(up) {
				_ = up.Close()
				return
			}
			go pipe(up, c, true)
			go pipe(c, up, false)
		}
	}()
	return u.String(), st
}

// exitStatus says how a process ended, from exec.Cmd.Wait's error.
func exitStatus(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return fmt.Sprint(err)
}

// An api or worker SIGTERMed once it runs stops cleanly and says so: exit 0
// and a log line of its stop (the worker said "worker stopped"; the api
// said only that it was shutting down, so its log could not tell a clean
// end from one cut short).
func TestSignalWhileRunningLogsTheStop(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	if _, err := inventory.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	ns := testenv.QueueNamespace(t, testenv.Redis(t))
	for _, tc := range []struct{ name, running, stopped string }{
		{"api", "api listening", "api stopped"},
		{"worker", "worker started", "worker stopped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startServer(t, tc.name, "FLASHSALE_DATABASE_URL="+db, "FLASHSALE_REDIS_URL="+testenv.RedisURL(),
				"FLASHSALE_QUEUE=q_"+ns, "FLASHSALE_KEY_PREFIX="+ns+":")
			testenv.Eventually(t, 30*time.Second, func() error {
				p.failIfEnded(t, "it ran")
				if !strings.Contains(p.out.String(), `"msg":"`+tc.running+`"`) {
					return fmt.Errorf("%s has not logged %q yet", tc.name, tc.running)
				}
				return nil
			})
			p.wantStop(t, 0, tc.stopped)
		})
	}
}

// Only a start cut short by a signal is a clean stop: a failure once the
// server has started (its shutdown outlasting its bound) is returned even
// though the signal came first. Before, the signal tests ended in clean
// stops only: a stoppedDuringStart that forgot whether the server had
// started ended an API whose requests were cut off by the shutdown's bound
// with exit status 0 and "stopped during its start".
func TestStoppedDuringStartOnlyBeforeTheStart(t *testing.T) {
	t.Parallel()
	failed := errors.New("shutdown: context deadline exceeded")
	signalled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		started bool
		err     error
		want    error
	}{
		{"start cut by the signal", signalled, false, context.Canceled, nil},
		{"failed after the start and the signal", signalled, true, failed, failed},
		{"failed during the start, no signal", context.Background(), false, failed, failed},
		{"stopped cleanly", signalled, true, nil, nil},
	} {
		var log bytes.Buffer
		got := stoppedDuringStart(tc.ctx, slog.New(slog.NewTextHandler(&log, nil)), tc.started, tc.err)
		if got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
		if logged := strings.Contains(log.String(), "stopped during its start"); logged != (tc.err != nil && tc.want == nil) {
			t.Errorf("%s: logged %q", tc.name, log.String())
		}
	}
}
