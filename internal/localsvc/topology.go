package localsvc

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// SentinelOptions configures a private Redis Sentinel.
type SentinelOptions struct {
	// Dir holds the sentinel's config file (sentinel rewrites it) and log.
	// Required; created if missing.
	Dir string
	// Master is the host:port of the Redis server it monitors, under the
	// name MasterName (default "mymaster"), with a quorum of one.
	Master, MasterName string
	// MasterPassword is the monitored server's password (its requirepass),
	// if it has one.
	MasterPassword string
	// Password, if set, is required of the sentinel's own clients.
	Password string
}

// Sentinel is a private redis-server running as a Sentinel.
type Sentinel struct {
	proc *Process
	port int
}

// StartSentinel starts a Sentinel on a free loopback port and waits until
// it answers PING.
func StartSentinel(opts SentinelOptions) (*Sentinel, error) {
	bin, err := FindBinary("redis-server")
	if err != nil {
		return nil, err
	}
	if opts.Dir == "" || opts.Master == "" {
		return nil, fmt.Errorf("localsvc: SentinelOptions.Dir and Master are required")
	}
	if opts.MasterName == "" {
		opts.MasterName = "mymaster"
	}
	host, port, err := splitHostPort(opts.Master)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("localsvc: sentinel dir: %w", err)
	}
	var lastErr error
	for range 5 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(opts.Dir, "sentinel.conf")
		text := fmt.Sprintf("bind 127.0.0.1\nport %d\nprotected-mode no\ndir %s\n"+
			"sentinel monitor %s %s %d 1\nsentinel down-after-milliseconds %s 2000\n",
			p, opts.Dir, opts.MasterName, host, port, opts.MasterName)
		if opts.MasterPassword != "" {
			text += fmt.Sprintf("sentinel auth-pass %s %s\n", opts.MasterName, opts.MasterPassword)
		}
		if opts.Password != "" {
			text += fmt.Sprintf("requirepass %s\n", opts.Password)
		}
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, fmt.Errorf("localsvc: sentinel config: %w", err)
		}
		s := &Sentinel{port: p, proc: &Process{Path: bin, Args: []string{conf, "--sentinel"},
			LogPath: filepath.Join(opts.Dir, "sentinel.log")}}
		if err := s.proc.Start(); err != nil {
			return nil, err
		}
		err = waitFor(10*time.Second, func() bool { return !s.proc.Running() }, func() error { return Ping(s.Addr()) })
		if err == nil {
			return s, nil
		}
		_ = s.proc.Stop(syscall.SIGKILL, time.Second)
		lastErr = err // probably lost the port race; try another
	}
	return nil, fmt.Errorf("localsvc: sentinel: %w (log in %s)", lastErr, opts.Dir)
}

// Addr is host:port.
func (s *Sentinel) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Kill sends SIGKILL and waits for the process to exit.
func (s *Sentinel) Kill() error { return s.proc.Stop(syscall.SIGKILL, 5*time.Second) }

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("localsvc: %w", err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("localsvc: port of %q: %w", addr, err)
	}
	return host, p, nil
}
