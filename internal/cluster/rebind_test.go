package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/localsvc"
)

// TestMain lets this test binary stand in for a flashsale worker: run as
// "worker" with FAKE_WORKER=1, it serves /healthz on FLASHSALE_METRICS_ADDR
// until SIGTERM, or fails as the worker does when the address is taken.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" && os.Getenv("FAKE_WORKER") == "1" {
		os.Exit(fakeWorker())
	}
	os.Exit(m.Run())
}

func fakeWorker() int {
	ln, err := net.Listen("tcp", os.Getenv("FLASHSALE_METRICS_ADDR"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "flashsale worker: FLASHSALE_METRICS_ADDR: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	return 0
}

// A worker whose metrics port was taken between freeAddr and its listen is
// given another port and started again, rather than failing the cluster,
// also when what took the port answers its health check (another test's
// flashsale would): the listener must be the worker's own.
func TestStartRebindsATakenAddress(t *testing.T) {
	for _, answers := range []bool{false, true} {
		t.Run(fmt.Sprintf("taker answers %v", answers), func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			if answers {
				srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ReadHeaderTimeout: time.Second}
				go func() { _ = srv.Serve(taken) }()
				defer srv.Close()
			}
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			p := &Proc{Name: "worker-1", Addr: taken.Addr().String(), args: []string{"worker"},
				env:     append(os.Environ(), "FAKE_WORKER=1", "FLASHSALE_METRICS_ADDR="+taken.Addr().String()),
				logPath: filepath.Join(t.TempDir(), "worker-1.log")}
			c := &Cluster{cfg: Config{Binary: exe}, Workers: []*Proc{p}}
			defer c.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.start(ctx, []*Proc{p}); err != nil {
				t.Fatalf("start with a taken address: %v", err)
			}
			if p.Addr == taken.Addr().String() || !p.Running() || !localsvc.ListensOn(p.PID(), p.Addr) {
				t.Fatalf("worker at %s (taken: %s), running %v; want it moved, running and listening", p.Addr, taken.Addr(), p.Running())
			}
		})
	}
}
