// Package cluster runs the flashsale binary as real processes (API servers
// and workers) on loopback, for end-to-end tests, the fault suite and
// `make bench`. Each process can be stopped, killed, paused and restarted,
// and its peak memory read.
package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flashsale/flashsale/internal/localsvc"
)

// Config describes a cluster.
type Config struct {
	// Binary is the built flashsale binary.
	Binary string
	// APIs and Workers are how many processes of each to run.
	APIs, Workers int
	// Env is the FLASHSALE_* configuration shared by every process
	// (FLASHSALE_HTTP_ADDR is set per API). It is the whole of it: the
	// processes get this program's environment without its FLASHSALE_*
	// variables ([BaseEnv]), so the shell a test runs from cannot change
	// what the test runs.
	Env map[string]string
	// WorkerEnv, if set, adds per-worker settings (index from 0).
	WorkerEnv func(i int) map[string]string
	// LogDir receives one log file per process. Required.
	LogDir string
	// WorkerMetrics gives every worker a metrics listener on a free port
	// (FLASHSALE_METRICS_ADDR), which [Proc.WaitReady] then waits for.
	WorkerMetrics bool
	// DeferWorkers leaves the workers stopped: Start launches only the
	// APIs, and [Cluster.StartWorkers] the workers, when the caller wants
	// a queue to fill first.
	DeferWorkers bool
}

// Proc is one process of the cluster.
type Proc struct {
	Name string
	// Addr is the API's listen address, or the worker's metrics address
	// (empty unless Config.WorkerMetrics).
	Addr string
	api  bool

	args    []string
	env     []string
	logPath string

	mu      sync.Mutex
	proc    *localsvc.Process // created at the first Start
	peakRSS int64             // bytes, highest seen across restarts
}

// Cluster is a set of running processes.
type Cluster struct {
	cfg     Config
	APIs    []*Proc
	Workers []*Proc
}

// BaseEnv is this program's environment without its FLASHSALE_* variables:
// what a process of a cluster starts from before its own configuration.
func BaseEnv() []string {
	env := os.Environ()
	out := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "FLASHSALE_") {
			out = append(out, kv)
		}
	}
	return out
}

// Start launches the processes and waits until every API answers /readyz.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg}
	base := BaseEnv()
	for k, v := range cfg.Env {
		base = append(base, k+"="+v)
	}
	for i := range cfg.APIs {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p := &Proc{Name: fmt.Sprintf("api-%d", i+1), Addr: addr, api: true, args: []string{"api"},
			env: append(append([]string{}, base...), "FLASHSALE_HTTP_ADDR="+addr)}
		c.APIs = append(c.APIs, p)
	}
	for i := range cfg.Workers {
		env := append([]string{}, base...)
		if cfg.WorkerEnv != nil {
			for k, v := range cfg.WorkerEnv(i) {
				env = append(env, k+"="+v)
			}
		}
		p := &Proc{Name: fmt.Sprintf("worker-%d", i+1), args: []string{"worker"}, env: env}
		if cfg.WorkerMetrics {
			addr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			p.Addr = addr
			p.env = append(p.env, "FLASHSALE_METRICS_ADDR="+addr)
		}
		c.Workers = append(c.Workers, p)
	}
	for _, p := range c.All() {
		p.logPath = filepath.Join(cfg.LogDir, p.Name+".log")
	}
	procs := c.All()
	if cfg.DeferWorkers {
		procs = c.APIs
	}
	if err := c.start(ctx, procs); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// StartWorkers starts every worker that is not running and waits, where a
// worker has a metrics address, until it answers /healthz.
func (c *Cluster) StartWorkers(ctx context.Context) error {
	var stopped []*Proc
	for _, w := range c.Workers {
		if !w.Running() {
			stopped = append(stopped, w)
		}
	}
	return c.start(ctx, stopped)
}

func (c *Cluster) start(ctx context.Context, procs []*Proc) error {
	for _, p := range procs {
		if err := p.Start(c.cfg.Binary); err != nil {
			return err
		}
	}
	for _, p := range procs {
		if p.Addr == "" {
			continue
		}
		for attempt := 1; ; attempt++ {
			err := p.WaitReady(ctx, 30*time.Second)
			if err == nil {
				break
			}
			if attempt == 3 {
				return err
			}
			if ok, rerr := p.rebind(c.cfg.Binary); rerr != nil {
				return rerr
			} else if !ok {
				return err
			}
		}
	}
	return nil
}

// rebind gives p another free address and starts it again, when it exited
// at start because its address was taken (a free port can be bound by
// another process between freeAddr and p's listen). It reports whether it
// did.
func (p *Proc) rebind(binary string) (bool, error) {
	// The log is appended to across starts: only this address's failure.
	if p.Running() || !strings.Contains(tail(p.logPath), p.Addr+": bind: address already in use") {
		return false, nil
	}
	addr, err := freeAddr()
	if err != nil {
		return false, err
	}
	key := "FLASHSALE_METRICS_ADDR="
	if p.api {
		key = "FLASHSALE_HTTP_ADDR="
	}
	p.mu.Lock()
	p.Addr = addr
	env := slices.DeleteFunc(slices.Clone(p.env), func(kv string) bool { return strings.HasPrefix(kv, key) })
	p.env = append(env, key+addr)
	if p.proc != nil {
		p.proc.Env = p.env
	}
	p.mu.Unlock()
	return true, p.Start(binary)
}

// All returns every process, APIs first.
func (c *Cluster) All() []*Proc { return append(append([]*Proc{}, c.APIs...), c.Workers...) }

// URLs returns the base URLs of the APIs.
func (c *Cluster) URLs() []string {
	var out []string
	for _, p := range c.APIs {
		out = append(out, "http://"+p.Addr)
	}
	return out
}

// Binary is the binary the cluster runs, for restarts.
func (c *Cluster) Binary() string { return c.cfg.Binary }

// Stop ends every process: SIGTERM, then SIGKILL after 30s.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, p := range c.All() {
		wg.Go(func() { _ = p.Stop(30 * time.Second) })
	}
	wg.Wait()
}

// Start (re)starts the process with binary.
func (p *Proc) Start(binary string) error {
	p.mu.Lock()
	if p.proc == nil {
		p.proc = &localsvc.Process{Args: p.args, Env: p.env, LogPath: p.logPath, OnStart: func(pid int, exited <-chan struct{}) {
			go p.watchRSS(pid, exited)
		}}
	}
	proc := p.proc
	p.mu.Unlock()
	proc.Path = binary
	if err := proc.Start(); err != nil {
		return fmt.Errorf("cluster: %s: %w", p.Name, err)
	}
	return nil
}

// process returns the underlying process, nil before the first Start.
func (p *Proc) process() *localsvc.Process {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc
}

// watchRSS samples the process's high-water mark of resident memory
// (VmHWM) until it exits.
func (p *Proc) watchRSS(pid int, stop <-chan struct{}) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if v := readVmHWM(pid); v > 0 {
			p.mu.Lock()
			p.peakRSS = max(p.peakRSS, v)
			p.mu.Unlock()
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func readVmHWM(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// PeakRSS is the highest resident memory seen, in bytes.
func (p *Proc) PeakRSS() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peakRSS
}

// PID is the current process id.
func (p *Proc) PID() int {
	if proc := p.process(); proc != nil {
		return proc.PID()
	}
	return 0
}

// Running reports whether the process is alive.
func (p *Proc) Running() bool {
	proc := p.process()
	return proc != nil && proc.Running()
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	proc := p.process()
	if proc == nil {
		return errors.New("cluster: not started")
	}
	return proc.Signal(sig)
}

// Wait waits for the process to exit, up to timeout.
func (p *Proc) Wait(timeout time.Duration) error {
	if proc := p.process(); proc != nil {
		return proc.Wait(timeout)
	}
	return nil
}

// Kill sends SIGKILL and waits for the exit.
func (p *Proc) Kill() error {
	_ = p.Signal(syscall.SIGKILL)
	return p.Wait(10 * time.Second)
}

// Stop sends SIGTERM (after SIGCONT, in case it is paused), waits up to
// grace, then kills.
func (p *Proc) Stop(grace time.Duration) error {
	if proc := p.process(); proc != nil && proc.Running() {
		return proc.Stop(syscall.SIGTERM, grace)
	}
	return nil
}

// WaitReady polls an API's /readyz, or a worker's /healthz, until it
// answers 200.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	path := "/healthz" // a worker's metrics listener
	if p.api {
		path = "/readyz"
	}
	for {
		resp, err := client.Get("http://" + p.Addr + path)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			// Another process that took the port (another test's
			// flashsale) may answer too: the listener must be p's.
			if resp.StatusCode == http.StatusOK && localsvc.ListensOn(p.PID(), p.Addr) {
				return nil
			}
		}
		if !p.Running() {
			return fmt.Errorf("cluster: %s exited during start; log: %s", p.Name, tail(p.logPath))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: %s not ready after %v; log: %s", p.Name, timeout, tail(p.logPath))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LogPath is the process's log file.
func (p *Proc) LogPath() string { return p.logPath }

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func freeAddr() (string, error) {
	port, err := localsvc.FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// Build compiles ./cmd/flashsale from the module at root into dir and
// returns the binary's path. race builds with the race detector.
func Build(ctx context.Context, root, dir string, race bool) (string, error) {
	out := filepath.Join(dir, "flashsale")
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/flashsale")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cluster: go build: %w: %s", err, b)
	}
	return out, nil
}
