package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// Helper programs: the baselines' processes, run from the binary named by
// Config.Helper (never from the product binary).
const (
	helperProduce = "noop-produce"
	helperConsume = "noop-consume"
	helperFront   = "noop-http-serve"
	helperLIR     = "lock-in-request-serve"
)

var helpers = []string{helperProduce, helperConsume, helperFront, helperLIR}

// IsHelper reports whether args (os.Args[1:]) ask for one of the helper
// programs; main functions (and TestMain of tests that run the harness)
// then call [HelperMain] instead of their own work.
func IsHelper(args []string) bool { return len(args) > 0 && slices.Contains(helpers, args[0]) }

// HelperMain runs the helper program args[0] with the flags in args[1:]
// until it is done or receives SIGTERM, and returns the exit status.
func HelperMain(args []string, stderr io.Writer) int {
	if !IsHelper(args) {
		fmt.Fprintf(stderr, "bench helper: unknown program %q\n", args)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var err error
	switch args[0] {
	case helperProduce:
		err = runProducer(ctx, fs, args[1:])
	case helperConsume:
		err = runConsumer(ctx, fs, args[1:])
	case helperFront:
		err = runFrontServer(ctx, fs, args[1:], stderr)
	case helperLIR:
		err = runLIRServer(ctx, fs, args[1:], stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// writeJSON writes v to path atomically (a reader never sees half a file).
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// serveUntilDone serves h on addr until ctx ends, then shuts down; it
// says on stderr where name listens.
func serveUntilDone(ctx context.Context, addr string, h http.Handler, stderr io.Writer, name string) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stderr, "%s listening on %s\n", name, ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
