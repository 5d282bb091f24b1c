package localsvc

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RedisOptions configures a private redis-server.
type RedisOptions struct {
	// Dir holds the server's files (log, AOF). Required; created if missing.
	Dir string
	// Port to listen on, 127.0.0.1 only. 0 picks a free port.
	Port int
	// AppendOnly turns on the AOF with the given fsync policy
	// ("always", "everysec", "no"); empty means AOF off.
	AppendFsync string
	// Args are extra redis-server arguments, such as "--notify-keyspace-events", "Eg".
	Args []string
}

// Redis is a private redis-server process.
type Redis struct {
	proc *Process
	port int
	dir  string
}

// StartRedis starts a redis-server and waits until it answers PING.
func StartRedis(opts RedisOptions) (*Redis, error) {
	bin, err := FindBinary("redis-server")
	if err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, fmt.Errorf("localsvc: RedisOptions.Dir is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("localsvc: redis dir: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		args := []string{
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", opts.Dir, "--save", "", "--daemonize", "no",
			"--dbfilename", "dump.rdb", "--protected-mode", "no",
			"--maxmemory-policy", "noeviction",
		}
		if opts.AppendFsync != "" {
			args = append(args, "--appendonly", "yes", "--appendfsync", opts.AppendFsync)
		} else {
			args = append(args, "--appendonly", "no")
		}
		args = append(args, opts.Args...)
		r := &Redis{
			proc: &Process{Path: bin, Args: args, LogPath: filepath.Join(opts.Dir, "redis.log")},
			port: port,
			dir:  opts.Dir,
		}
		if err := r.proc.Start(); err != nil {
			return nil, err
		}
		if err := r.waitReady(10 * time.Second); err != nil {
			_ = r.proc.Stop(syscall.SIGKILL, time.Second)
			lastErr = err
			if opts.Port != 0 {
				break
			}
			continue // probably lost the port race; try another
		}
		return r, nil
	}
	return nil, fmt.Errorf("localsvc: redis-server: %w (log in %s)", lastErr, opts.Dir)
}

func (r *Redis) waitReady(timeout time.Duration) error {
	return waitFor(timeout, func() bool { return !r.proc.Running() }, func() error {
		if err := Ping(r.Addr()); err != nil {
			return err
		}
		return r.proc.owns(r.Addr())
	})
}

// Ping sends PING to the Redis server at addr and expects PONG, or NOAUTH
// from a server that requires a password.
func Ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return ping(c)
}

// PingTLS is [Ping] over TLS (a rediss:// server, which does not answer a
// plaintext PING). It only asks whether a Redis answers at addr, so it does
// not verify the certificate: clients connect with their own settings.
func PingTLS(addr string) error {
	host, _, _ := net.SplitHostPort(addr)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr,
		&tls.Config{ServerName: host, InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	return ping(c)
}

// ping sends PING on c, reads the reply and closes c.
func ping(c net.Conn) error {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// NOAUTH is a server that is up and wants a password.
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("unexpected reply %q", strings.TrimSpace(line))
	}
	return nil
}

// Addr is host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL is a redis:// URL for database db.
func (r *Redis) URL(db int) string { return fmt.Sprintf("redis://%s/%d", r.Addr(), db) }

// Dir is the server's data folder.
func (r *Redis) Dir() string { return r.dir }

// PID is the current process id, 0 if never started.
func (r *Redis) PID() int { return r.proc.PID() }

// Running reports whether the process is alive (a paused process is alive).
func (r *Redis) Running() bool { return r.proc.Running() }

// Kill sends SIGKILL and waits for the process to exit.
func (r *Redis) Kill() error { return r.proc.Stop(syscall.SIGKILL, 5*time.Second) }

// Stop asks the server to shut down (SIGTERM) and waits, killing it after 10s.
func (r *Redis) Stop() error { return r.proc.Stop(syscall.SIGTERM, 10*time.Second) }

// Pause stops the process with SIGSTOP; Resume continues it.
func (r *Redis) Pause() error { return r.proc.Signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (r *Redis) Resume() error { return r.proc.Signal(syscall.SIGCONT) }

// Start starts the server again, on the same port and folder, after Stop or
// Kill, and waits until it answers.
func (r *Redis) Start() error {
	if err := r.proc.Start(); err != nil {
		return err
	}
	if err := r.waitReady(30 * time.Second); err != nil {
		return fmt.Errorf("localsvc: redis-server restart: %w", err)
	}
	return nil
}
