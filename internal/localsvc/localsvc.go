// Package localsvc starts private redis-server and PostgreSQL processes on free
// loopback ports. `flashsale dev` uses it when nothing answers at the configured
// addresses, and tests use it for anything that kills, pauses or restarts a
// server, or that needs several Redis nodes.
//
// The package only manages processes: it never touches a server it did not
// start. Every method is safe for concurrent use.
package localsvc

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled is returned when a server binary cannot be found.
var ErrNotInstalled = errors.New("localsvc: server binary not installed")

// Process is a child process that can be started again with the same
// command: a private server here, or a process of the flashsale binary in a
// test cluster (package cluster). It runs in its own process group and is
// killed if this process dies. Its methods are safe for concurrent use.
type Process struct {
	// Path is the program; Args its arguments; Env its environment (nil:
	// this process's); LogPath receives its output (appended).
	Path    string
	Args    []string
	Env     []string
	LogPath string
	// Credential runs it as another user (nil: as this one).
	Credential *syscall.Credential
	// OnStart, if set, is called at each start with the pid and a channel
	// closed when that run has exited.
	OnStart func(pid int, exited <-chan struct{})

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts the process; it fails if it is running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := filepath.Base(p.Path)
	if p.cmd != nil {
		select {
		case <-p.exited:
		default:
			return fmt.Errorf("localsvc: %s already running (pid %d)", name, p.cmd.Process.Pid)
		}
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("localsvc: open log: %w", err)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group, so a Ctrl-C aimed at the parent does not reach the
	// child before the parent had a chance to stop it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.Credential, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("localsvc: start %s: %w", name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	if p.OnStart != nil {
		p.OnStart(cmd.Process.Pid, exited)
	}
	return nil
}

// PID is the current (or last) run's process id, 0 if never started.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process is alive (a paused one is alive).
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig; a process that is not running is not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("localsvc: signal %v: %w", sig, err)
	}
	return nil
}

// Wait waits for the process to exit, up to timeout.
func (p *Process) Wait(timeout time.Duration) error {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("localsvc: %s still running after %v", filepath.Base(p.Path), timeout)
	}
}

// Stop sends sig (after SIGCONT: a paused process cannot handle it), waits
// up to grace, then kills.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) error {
	_ = p.Signal(syscall.SIGCONT)
	if err := p.Signal(sig); err != nil {
		return err
	}
	if err := p.Wait(grace); err != nil {
		_ = p.Signal(syscall.SIGKILL)
		return p.Wait(5 * time.Second)
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it; callers retry on
// a bind failure. It picks at random below the kernel's ephemeral range
// (ip_local_port_range), where the kernel does not hand out the local ports
// of outgoing connections: a port from that range, freed, was soon taken by
// one of the many connections tests open in parallel (a worker's metrics
// listener failed to bind in CI). It falls back to a kernel-chosen port.
func FreePort() (int, error) {
	lo, hi := 20000, ephemeralLow()-1
	for range 50 {
		if hi <= lo {
			break
		}
		port := lo + rand.IntN(hi-lo+1)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			_ = l.Close()
			return port, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("localsvc: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1024 {
		return 32768
	}
	return n
}

// FindBinary looks name up in PATH, then in the usual PostgreSQL install
// folders (/usr/lib/postgresql/<version>/bin, newest first).
func FindBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrNotInstalled, name)
}

// waitFor polls check every few milliseconds until it succeeds or timeout passes.
func waitFor(timeout time.Duration, exited func() bool, check func() error) error {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return nil
		}
		if exited() {
			return fmt.Errorf("server exited during start: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", timeout, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// owns returns an error unless the process listens on addr itself: a server
// that answers there may be another process that took the port (after a
// restart on the same port, or between FreePort and the bind).
func (p *Process) owns(addr string) error {
	if !ListensOn(p.PID(), addr) {
		return fmt.Errorf("%s is answered by another process than %s (pid %d)", addr, filepath.Base(p.Path), p.PID())
	}
	return nil
}

// ListensOn reports whether process pid has a TCP listener on addr
// (127.0.0.1:port), from /proc/net/tcp's listening sockets and pid's file
// descriptors. Without /proc/net/tcp, or when pid's descriptors cannot be
// read, it answers true: it cannot tell. A readiness check that only
// connects to addr would accept another process that took the port.
func ListensOn(pid int, addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || pid <= 0 {
		return false
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return true
	}
	inodes := map[string]bool{}
	want := fmt.Sprintf(":%04X", n)
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		// local_address, ..., st (0A: LISTEN), ..., inode
		if len(f) > 9 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false // it exited
	case err != nil:
		return true // not ours to read: cannot tell
	}
	for _, fd := range fds {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && inodes[target] {
			return true
		}
	}
	return false
}
