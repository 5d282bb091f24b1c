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
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled is returned when a server binary cannot be found.
var ErrNotInstalled = errors.New("localsvc: server binary not installed")

// process is one child server process, restartable with the same arguments.
type process struct {
	mu      sync.Mutex
	name    string
	args    []string
	cred    *syscall.Credential
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.exited:
		default:
			return fmt.Errorf("localsvc: %s already running (pid %d)", filepath.Base(p.name), p.cmd.Process.Pid)
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("localsvc: open log: %w", err)
	}
	cmd := exec.Command(p.name, p.args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group, so a Ctrl-C aimed at the parent does not reach the
	// server before the parent had a chance to stop it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("localsvc: start %s: %w", filepath.Base(p.name), err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	return nil
}

func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *process) running() bool {
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

// signal sends sig to the process; a process that already exited is not an error.
func (p *process) signal(sig syscall.Signal) error {
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

// wait waits for the process to exit, up to timeout.
func (p *process) wait(timeout time.Duration) error {
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
		return fmt.Errorf("localsvc: %s did not exit within %v", filepath.Base(p.name), timeout)
	}
}

// stop sends sig, waits up to grace, then kills.
func (p *process) stop(sig syscall.Signal, grace time.Duration) error {
	_ = p.signal(syscall.SIGCONT) // a paused process cannot handle sig
	if err := p.signal(sig); err != nil {
		return err
	}
	if err := p.wait(grace); err != nil {
		_ = p.signal(syscall.SIGKILL)
		return p.wait(5 * time.Second)
	}
	return nil
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1. Another process
// may take it before the caller binds it; callers retry on a bind failure.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("localsvc: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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
