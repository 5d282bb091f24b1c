// Command bench is `make bench`: it runs the benchmark of package bench
// against the Redis and PostgreSQL on this machine, prints the tables and
// writes them into BENCHMARKS.md.
//
//	go run ./internal/bench/cmd/bench [-binary bin/flashsale] [-out BENCHMARKS.md] [-quick] [-only hot,ceiling]
//
// It exits 1 when a part could not be measured or an invariant was
// violated; missed performance goals are reported, not failures.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/flashsale/flashsale/internal/bench"
	"github.com/flashsale/flashsale/internal/cluster"
)

func main() {
	if bench.IsHelper(os.Args[1:]) {
		os.Exit(bench.HelperMain(os.Args[1:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	began := time.Now()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg bench.Config
	binary := fs.String("binary", "", "built flashsale binary (default: build ./cmd/flashsale into a temporary directory)")
	out := fs.String("out", "", "Markdown file whose \""+bench.SectionHeading+"\" section receives the results (empty: print only)")
	command := fs.String("command", "", "how the run was started, for the record (default: this command line)")
	note := fs.String("note", "", "a note printed with the results (e.g. that the machine was shared)")
	quick := fs.Bool("quick", false, "small numbers for trying changes (2,000 orders); never written to -out")
	only := fs.String("only", "", "comma-separated parts to run ("+strings.Join(bench.Parts, ", ")+"); never written to -out")
	timeout := fs.Duration("timeout", 9*time.Minute, "bound on the measurements (stopping processes and cleaning up may take up to 30s more)")
	logs := fs.String("logs", "", "directory for process logs (default: a temporary one, removed unless something failed)")
	fs.IntVar(&cfg.Orders, "orders", bench.DefaultOrders, "orders (and no-op tasks) per part")
	fs.Int64Var(&cfg.HotStock, "hot-stock", bench.DefaultHotStock, "stock of the hot product")
	fs.IntVar(&cfg.SpreadProducts, "spread-products", bench.DefaultSpreadProducts, "products of the spread part")
	fs.Int64Var(&cfg.SpreadStock, "spread-stock", bench.DefaultSpreadStock, "stock of each spread product")
	fs.IntVar(&cfg.APIs, "apis", bench.DefaultAPIs, "API processes (and producers, HTTP front and lock-in-request servers)")
	fs.IntVar(&cfg.Workers, "workers", bench.DefaultWorkers, "worker processes (and no-op consumers)")
	fs.IntVar(&cfg.WorkerConcurrency, "worker-concurrency", bench.DefaultWorkerConcurrency, "FLASHSALE_WORKER_CONCURRENCY of workers and consumers")
	fs.IntVar(&cfg.Concurrency, "concurrency", bench.DefaultConcurrency, "load generator's requests in flight")
	fs.StringVar(&cfg.RedisURL, "redis-url", bench.DefaultRedisURL, "Redis on this machine (its DB number is ignored)")
	fs.IntVar(&cfg.RedisDB, "redis-db", bench.DefaultRedisDB, "Redis DB the run owns: must be empty; flushed during and after the run")
	fs.StringVar(&cfg.DatabaseURL, "database-url", bench.DefaultDatabaseURL, "PostgreSQL maintenance database on this machine; the run creates and drops databases next to it")
	fs.DurationVar(&cfg.ScenarioTimeout, "scenario-timeout", bench.DefaultScenarioTimeout, "bound on each part's load test")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["orders"] {
			cfg.Orders = 2_000
		}
		if !set["hot-stock"] {
			cfg.HotStock = 500
		}
		if !set["spread-products"] {
			cfg.SpreadProducts = 100
		}
	}
	for _, p := range strings.Split(*only, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Only = append(cfg.Only, p)
		}
	}
	invocation := strings.TrimSpace("go run ./internal/bench/cmd/bench " + shellJoin(withoutFlag(args, "command")))
	if *command == "" {
		*command = invocation
	}
	cfg.Progress = stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	tmp, err := os.MkdirTemp("", "flashsale-bench-*")
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	keepTmp := false
	defer func() {
		if !keepTmp {
			_ = os.RemoveAll(tmp)
		}
	}()
	cfg.LogDir = *logs
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(tmp, "logs")
	}
	if cfg.Binary = *binary; cfg.Binary == "" {
		root, err := moduleRoot()
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "bench: building ./cmd/flashsale\n")
		if cfg.Binary, err = cluster.Build(ctx, root, tmp, false); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
	}
	if cfg.Binary, err = filepath.Abs(cfg.Binary); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	cfg.Helper = []string{self}

	commit := sourceCommit(ctx) // before the run: what was built
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	res.Command, res.Invocation, res.Note, res.Elapsed = *command, invocation, *note, time.Since(began)
	res.Commit = commit
	section := bench.Render(*res)
	fmt.Fprintf(stdout, "\n%s\n", section)

	failed := failures(*res, cfg.Only)
	if len(failed) > 0 {
		keepTmp = true
		fmt.Fprintf(stderr, "bench: %s; process logs kept in %s\n", strings.Join(failed, "; "), cfg.LogDir)
	}
	switch {
	case *out == "":
	case *quick || len(cfg.Only) > 0:
		fmt.Fprintf(stderr, "bench: -quick and -only runs are not written to %s\n", *out)
	case ctx.Err() != nil || !allRan(*res):
		fmt.Fprintf(stderr, "bench: not every part was measured; %s left as it was\n", *out)
	case len(failed) > 0:
		fmt.Fprintf(stderr, "bench: a part failed; %s left as it was\n", *out)
	default:
		if err := writeSection(*out, section); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "bench: wrote the %q section of %s\n", bench.SectionHeading, *out)
	}
	if len(failed) > 0 {
		return 1
	}
	return 0
}

// failures lists the selected parts that were not measured or whose
// invariants did not hold.
func failures(r bench.Results, only []string) []string {
	selected := func(p string) bool { return len(only) == 0 || slices.Contains(only, p) }
	var out []string
	if selected(bench.PartCeiling) && !r.Ceiling.OK() {
		out = append(out, "queue ceiling: "+orText(r.Ceiling.Err, "tasks missing"))
	}
	if selected(bench.PartFront) && !r.Front.OK() {
		out = append(out, "HTTP front: "+orText(r.Front.Err, "orders missing or failed"))
	}
	for _, s := range []struct {
		part string
		res  bench.ScenarioResult
	}{{bench.PartHot, r.Hot}, {bench.PartSpread, r.Spread}, {bench.PartBacklog, r.Backlog},
		{bench.PartOneByOne, r.OneByOne}, {bench.PartLockInRequest, r.LockInRequest}} {
		switch {
		case !selected(s.part):
		case !s.res.Ran:
			out = append(out, s.part+": "+s.res.Err)
		case !s.res.OK:
			out = append(out, s.part+": invariants violated")
		}
	}
	return out
}

func allRan(r bench.Results) bool {
	return r.Ceiling.Ran && r.Front.Ran && r.Hot.Ran && r.Spread.Ran && r.Backlog.Ran && r.OneByOne.Ran && r.LockInRequest.Ran
}

func orText(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// writeSection replaces (or adds) the bench section of the Markdown file.
func writeSection(path, section string) error {
	doc, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, []byte(bench.ReplaceSection(string(doc), bench.SectionHeading, section)), 0o644)
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory; pass -binary")
		}
		dir = parent
	}
}

// shellJoin joins args for a shell, quoting those that need it.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./,:") == "" {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

// withoutFlag returns args without the flag name and its value.
func withoutFlag(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		switch {
		case a == name && len(args[i]) > len(a):
			i++ // its value follows
		case strings.HasPrefix(a, name+"=") && len(args[i]) > len(a):
		default:
			out = append(out, args[i])
		}
	}
	return out
}

// sourceCommit names the source being measured: the checkout's commit,
// with "+ changes" when files differ from it (a new, untracked source file
// too, which the build takes in); empty when git cannot
// tell (not a checkout, no git).
func sourceCommit(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	commit := strings.TrimSpace(string(out))
	// BENCHMARKS.md itself (an earlier run's output) is not source.
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--", ".", ":!BENCHMARKS.md").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		commit += " + changes"
	}
	return commit
}
