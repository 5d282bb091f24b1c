// Command flashsale runs the flash-sale order system.
//
//	flashsale api        the HTTP API
//	flashsale worker     an order worker (run several)
//	flashsale migrate    create or upgrade the database schema
//	flashsale dev        everything on one machine, for trying it out
//	flashsale loadtest   drive running APIs with a burst and check the result
//	flashsale healthcheck  exit 0 when a URL answers 200 (container health checks)
//
// Configuration comes from FLASHSALE_* environment variables; flags of the
// same meaning override them (`flashsale <command> -h` lists both).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/agnivade/levenshtein"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/logging"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"api", "serve the HTTP API", runAPI},
		{"worker", "consume the order queue (run several)", runWorker},
		{"migrate", "create or upgrade the database schema (idempotent)", runMigrate},
		{"dev", "run the API and three workers on this machine, with a demo product", runDev},
		{"loadtest", "send a burst of orders to running APIs and verify the outcome", runLoadtest},
		{"healthcheck", "exit 0 when a URL answers 200 (container health checks)", runHealthcheck},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: flashsale <command> [flags]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nenvironment (after each, the commands that read it; dev reads them all):\n%s", envHelp())
}

func main() {
	// Signals first, before anything else main does: from here on a
	// SIGINT or SIGTERM ends the process cleanly, with a log line, even
	// during a command's start (see stoppedDuringStart). Only the runtime's
	// start and the packages' initialisation come before (a few ms), in
	// which a signal ends the process as it ends any Go program.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts a graceful shutdown; a second one, with the
	// default behaviour restored, ends the process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	// go-redis logs through a process-wide logger; route it to slog's
	// default, which setupFlags points at the command's logger.
	redis.SetLogger(logging.RedisLogger{})
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// run runs the command args name until it ends or ctx does (main's ends
// at the first SIGINT or SIGTERM), and returns the process's exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stdout) // asked for: on stdout, so that `flashsale -h | less` works
		return 0
	}
	gin.SetMode(gin.ReleaseMode)
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		errOut := stderr
		if wantsHelp(args[1:]) {
			// The flag package prints a command's -h to its error output:
			// asked for, it goes to stdout (nothing else is written then).
			errOut = stdout
		}
		err := c.run(ctx, args[1:], stdout, errOut)
		var ee *exitError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ee):
			if ee.err != nil {
				fmt.Fprintf(stderr, "flashsale %s: %v\n", c.name, ee.err)
			}
			return ee.code
		default:
			fmt.Fprintf(stderr, "flashsale %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "flashsale: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// stoppedDuringStart reports a server's start that ctx's end (a signal)
// cut short as the clean stop it is: the start's calls end with ctx, and
// their error ("...: context canceled") is no failure of the server's: the
// process was asked to stop. It logs one line saying so, with where the
// start was cut (interrupted), and returns nil: exit status 0. Before, the
// error ended the process with status 1 and a line that is no log line.
// Any other error, and one once started, is returned as it is.
func stoppedDuringStart(ctx context.Context, log *slog.Logger, started bool, err error) error {
	if err == nil || started || ctx.Err() == nil {
		return err
	}
	log.Info("stopped during its start: signal received", "interrupted", err.Error())
	return nil
}

// stoppedUnfinished is stoppedDuringStart for a job whose whole run is its
// work (migrate): one cut short by ctx's end (a signal) is logged as such,
// in one line, but it did not do what it was run for, so it ends with exit
// status 1 (and no other line): what waits for it to succeed (a deployment's
// next step, compose's service_completed_successfully) must not go on.
// Before, it ended as any failure: status 1 and a line that is no log line
// ("...: context canceled"). Any other error is returned as it is.
func stoppedUnfinished(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	log.Warn("stopped before it finished: signal received", "interrupted", err.Error())
	return &exitError{code: 1}
}

// setup parses the common configuration and builds the logger.
func setup(name string, args []string, stderr io.Writer) (config, *slog.Logger, error) {
	fs := flag.NewFlagSet("flashsale "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return setupFlags(fs, name, args, stderr)
}

func setupFlags(fs *flag.FlagSet, name string, args []string, stderr io.Writer) (config, *slog.Logger, error) {
	cfg, err := loadConfig(fs, name, args)
	if err != nil {
		return cfg, nil, err
	}
	level, _ := logging.ParseLevel(cfg.LogLevel)
	log := logging.New(stderr, cfg.LogFormat, level).With("component", name)
	slog.SetDefault(log) // for go-redis's lines (main) and anything else logging there
	warnUnknownVariables(log)
	return cfg, log, nil
}

// warnUnknownVariables logs a warning for each FLASHSALE_* variable of the
// environment that is no setting (its name only: a value may be a
// secret), with the setting it may have meant. A mistyped name was
// ignored without a word, its setting left at its default: with
// FLASHSALE_LOCK_REDIS_URL for FLASHSALE_LOCK_REDIS_URLS, the workers
// locked on the queue's Redis alone, no quorum, and said nothing.
func warnUnknownVariables(log *slog.Logger) {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "FLASHSALE_") || slices.ContainsFunc(settings, func(s setting) bool { return s.env == k }) {
			continue
		}
		args := []any{"variable", k}
		if m := closestSetting(k); m != "" {
			args = append(args, "did_you_mean", m)
		}
		log.Warn("unknown variable ignored: no setting of flashsale has this name (`flashsale -h` lists them)", args...)
	}
}

// closestSetting is the setting's variable nearest to name by edit
// distance, if it is near enough (at most 3 edits) to be a typo of it.
func closestSetting(name string) string {
	best, bestD := "", 4
	for _, s := range settings {
		if d := levenshtein.ComputeDistance(name, s.env); d < bestD {
			best, bestD = s.env, d
		}
	}
	return best
}

// runHealthcheck exits 0 when url answers 200: the container health check
// of images without a shell or curl. Every failure exits 1, a mistake in
// its command line included (see below).
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flashsale healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080/readyz", "URL that must answer 200")
	if err := parseFlags(fs, args); err != nil {
		// Exit status 1 here, not the 2 of other commands' command-line
		// mistakes: Docker reads a health check's 0 as healthy, 1 as
		// unhealthy and reserves 2, so a mistyped HEALTHCHECK line would
		// not read as unhealthy. -h (flag.ErrHelp) still exits 0.
		var ee *exitError
		if errors.As(err, &ee) {
			return &exitError{code: 1, err: ee.err}
		}
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", *url, resp.Status)
	}
	return nil
}

// wantsHelp reports whether args ask for a command's help, as the flag
// package reads them (-h, -help, with one dash or two).
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "--h", "-help", "--help":
			return true
		}
	}
	return false
}
