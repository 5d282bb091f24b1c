package localsvc_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/flashsale/flashsale/internal/localsvc"
)

func TestRedisLifecycle(t *testing.T) {
	t.Parallel()
	r, err := localsvc.StartRedis(localsvc.RedisOptions{Dir: t.TempDir(), AppendFsync: "always"})
	if err != nil {
		t.Fatalf("StartRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Kill() })
	if err := localsvc.Ping(r.Addr()); err != nil {
		t.Fatalf("ping after start: %v", err)
	}
	if err := r.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if err := localsvc.Ping(r.Addr()); err == nil {
		t.Fatalf("ping after kill succeeded, want error")
	}
	if err := r.Start(); err != nil {
		t.Fatalf("Start again: %v", err)
	}
	if err := localsvc.Ping(r.Addr()); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
}

// A restart on a port that another process took meanwhile fails, though
// that process answers PING: the start counts as ready only when the
// server's own process listens there.
func TestRedisRestartOnATakenPort(t *testing.T) {
	t.Parallel()
	r, err := localsvc.StartRedis(localsvc.RedisOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("StartRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Kill() })
	if err := r.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	taker, err := net.Listen("tcp", r.Addr())
	if err != nil {
		t.Fatalf("take the port: %v", err)
	}
	t.Cleanup(func() { _ = taker.Close() })
	go func() { // answers every line with +PONG, as a Redis would
		for {
			c, err := taker.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := c.Write([]byte("+PONG\r\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	if err := localsvc.Ping(r.Addr()); err != nil {
		t.Fatalf("the taker does not answer PING: %v", err)
	}
	if err := r.Start(); err == nil {
		t.Fatal("Start on a port another process holds: got ready, want an error")
	}
}

func TestPostgresLifecycle(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "flashsale-pg-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	p, err := localsvc.StartPostgres(localsvc.PostgresOptions{Dir: dir})
	if err != nil {
		t.Fatalf("StartPostgres: %v", err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	query := func() error {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, p.URL("postgres"))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		var n int
		return c.QueryRow(ctx, "select 1").Scan(&n)
	}
	if err := query(); err != nil {
		t.Fatalf("query: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := query(); err == nil {
		t.Fatalf("query after stop succeeded, want error")
	}
	if err := p.Start(); err != nil {
		t.Fatalf("Start again: %v", err)
	}
	if err := query(); err != nil {
		t.Fatalf("query after restart: %v", err)
	}
}
