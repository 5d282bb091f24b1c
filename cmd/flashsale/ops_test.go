package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/internal/testenv"
)

// flashsale loadtest's -admin-token defaults to $FLASHSALE_ADMIN_TOKEN, and
// the flag package prints a string flag's default in the usage: `loadtest
// -h`, and the usage printed to stderr after any mistyped flag (a CI log),
// showed the admin token in clear. No other command shows it (their flags'
// defaults are empty). Not parallel: it sets the environment.
func TestLoadtestUsageHidesTheAdminToken(t *testing.T) {
	const secret = "s3cret-admin-token-0123456789"
	t.Setenv("FLASHSALE_ADMIN_TOKEN", secret)
	for _, args := range [][]string{{"loadtest", "-h"}, {"loadtest", "-no-such-flag"}} {
		var stdout, stderr strings.Builder
		run(context.Background(), args, &stdout, &stderr)
		if out := stdout.String() + stderr.String(); strings.Contains(out, secret) {
			_, line, _ := strings.Cut(out, "-admin-token string\n")
			line, _, _ = strings.Cut(line, "\n")
			t.Errorf("%v shows the admin token: %q", args, line)
		}
	}
}

// tlsRedisStub listens on 127.0.0.1 over TLS (a self-signed certificate)
// and answers +PONG to each PING line: a rediss:// Redis that is up. It
// stops at cleanup.
func tlsRedisStub(t *testing.T) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.StartTLS() // for its certificate only
	cfg := srv.TLS.Clone()
	srv.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(strings.ToUpper(line), "PING") {
						_, _ = c.Write([]byte("+PONG\r\n"))
					}
				}
			}()
		}
	}()
	return "rediss://" + ln.Addr().String() + "/0"
}

// `flashsale dev` uses the Redis at the configured address when one
// answers there (README, Run it): a rediss:// (TLS) Redis that is up is one.
// dev probed it with a plaintext PING, which a TLS server does not answer
// with +PONG, took it for "nothing answers", and silently ran everything on
// a private redis-server instead of the configured one.
func TestDevUsesARedisThatAnswersOverTLS(t *testing.T) {
	t.Parallel()
	redisURL := tlsRedisStub(t)
	stderr, done, cancel := startDevWith(t, t.TempDir(), testenv.NewDatabase(t), redisURL)
	deadline := time.After(60 * time.Second)
	for !strings.Contains(stderr.String(), "started a private redis-server") {
		select {
		case <-done:
			// It went on with the configured Redis (whose children then
			// fail on the stub): what the README says.
			return
		case <-deadline:
			t.Fatalf("dev neither used nor replaced the configured Redis in 60s:\n%s", stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	<-done
	t.Errorf("dev replaced %s, which answers (over TLS), with a private redis-server:\n%s", redisURL, stderr)
}

// `flashsale dev` starts a private PostgreSQL only "when nothing answers"
// at the configured address (README, Run it). A server that answers with
// an error of its own (here: a role it does not know; equally a wrong
// password, pg_hba refusing the host, too many connections) does answer:
// dev must use it, and so report that error, not silently run everything
// on a private PostgreSQL instead of the database the operator named.
func TestDevDoesNotReplaceAPostgresThatRefusesItsLogin(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("no_such_role_review5", "wrong")
	dataDir := t.TempDir()
	stderr, done, cancel := startDevWith(t, dataDir, u.String(), testenv.RedisURL())
	var derr error
	deadline := time.After(60 * time.Second)
wait:
	for {
		select {
		case derr = <-done:
			break wait
		case <-deadline:
			t.Fatalf("dev still running after 60s:\n%s", stderr)
		case <-time.After(20 * time.Millisecond):
			if strings.Contains(stderr.String(), "started a private PostgreSQL") {
				cancel()
				derr = <-done
				break wait
			}
		}
	}
	_, statErr := os.Stat(filepath.Join(dataDir, "postgres"))
	if statErr == nil || strings.Contains(stderr.String(), "started a private PostgreSQL") {
		t.Errorf("dev set up a private PostgreSQL (%s/postgres) instead of the configured one, which answers (refusing the login); dev: %v\n%s",
			dataDir, derr, stderr)
	}
	if derr == nil {
		t.Errorf("dev on a database that refuses its login ended without an error:\n%s", stderr)
	}
}

// dev probes the configured Redis at redisAddr's address: a URL without a
// port means Redis's 6379 there, an IPv6 literal included ([::1] has
// colons but no port); probed at "[::1]", which does not dial, a Redis
// that answers was taken for none and replaced by a private one.
func TestRedisAddrDefaultsThePort(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"redis://127.0.0.1/0":    "127.0.0.1:6379",
		"redis://[::1]/0":        "[::1]:6379",
		"redis://[::1]:6380/0":   "[::1]:6380",
		"rediss://u:p@example/0": "example:6379",
		"redis://example:6390/0": "example:6390",
	} {
		if got, ok := redisAddr(in); !ok || got != want {
			t.Errorf("redisAddr(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// startDevWith runs `flashsale dev` with one worker, its data under
// dataDir, on the given database and Redis URLs and the test's own queue
// and key prefix. It returns dev's log, the channel of its result, and the
// cancel that stops it (also called at cleanup).
func startDevWith(t *testing.T, dataDir, databaseURL, redisURL string) (stderr *testenv.LogBuffer, done <-chan error, cancel func()) {
	t.Helper()
	ns := devNamespace(t)
	addr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stdout, stderr := &testenv.LogBuffer{}, &testenv.LogBuffer{}
	result := make(chan error, 1)
	go func() {
		result <- runDev(ctx, []string{"-workers", "1", "-data-dir", dataDir, "-http-addr", addr, "-database-url", databaseURL,
			"-redis-url", redisURL, "-queue", "q_" + ns, "-key-prefix", ns + ":", "-log-format", "json"}, stdout, stderr)
	}()
	return stderr, result, cancel
}
