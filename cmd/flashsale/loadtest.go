package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/flashsale/flashsale/loadtest"
)

// errZeroFlag is the error of a loadtest flag given 0 that has no meaning.
var errZeroFlag = errors.New("want a value above 0 (leave the flag out for its default)")

func runLoadtest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flashsale loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg loadtest.Config
	var apis string
	fs.StringVar(&apis, "api", "http://127.0.0.1:8080", "comma-separated API base URLs, used round robin")
	fs.IntVar(&cfg.Orders, "orders", 1000, "orders to send")
	fs.IntVar(&cfg.Concurrency, "concurrency", loadtest.DefaultConcurrency, "requests in flight at once")
	fs.IntVar(&cfg.Users, "users", 0, "distinct buyers (0 = one per order)")
	fs.IntVar(&cfg.Products, "products", 1, "products to create")
	fs.BoolVar(&cfg.Hot, "hot", false, "all orders on one product (otherwise spread evenly)")
	fs.Int64Var(&cfg.Stock, "stock", 100, "units of stock per product")
	fs.IntVar(&cfg.PerUserLimit, "per-user-limit", 0, "per-user limit of each product (0 = none)")
	fs.IntVar(&cfg.MaxQuantity, "max-quantity", 1, "largest quantity of one order (1 = single-unit orders)")
	fs.Float64Var(&cfg.DupRate, "dup-rate", 0, "fraction of orders re-sent with the same Idempotency-Key")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open arrival rate in orders/s (0 = closed burst)")
	// Not the variable as the flag's default: the flag package prints a
	// default in the usage (-h, and after a mistyped flag), token and all.
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "admin token to create products (default $FLASHSALE_ADMIN_TOKEN)")
	fs.StringVar(&cfg.RunID, "run-id", "", "prefix of this run's ids (default: time-based)")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the order plan")
	fs.StringVar(&cfg.JSONPath, "json", "", "write every figure as JSON to this file")
	fs.DurationVar(&cfg.Timeout, "timeout", loadtest.DefaultTimeout, "bound on the whole run")
	fs.BoolVar(&cfg.LoopbackOnly, "loopback-only", false, "refuse to send anything off this machine")
	quiet := fs.Bool("quiet", false, "no progress output")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if !given["admin-token"] {
		cfg.AdminToken = os.Getenv("FLASHSALE_ADMIN_TOKEN")
	}
	// loadtest.Config reads a zero as "the default": given as a flag, it
	// was run as that default without a word (-timeout 0 as a bound of
	// 10m, -concurrency 0 as 64). Refused, as a bad value of a flag is.
	for name, zero := range map[string]bool{
		"concurrency": cfg.Concurrency == 0, "products": cfg.Products == 0,
		"max-quantity": cfg.MaxQuantity == 0, "timeout": cfg.Timeout == 0,
	} {
		if given[name] && zero {
			return &exitError{code: 2, err: fmt.Errorf("bad -%s=0: %w", name, errZeroFlag)}
		}
	}
	for _, a := range strings.Split(apis, ",") {
		if a = strings.TrimSpace(a); a != "" {
			cfg.APIs = append(cfg.APIs, a)
		}
	}
	if cfg.AdminToken == "" {
		// It creates its products first; without a token the API's 401 read
		// as a token rejected.
		return &exitError{code: 2, err: errors.New("no admin token: pass --admin-token or set FLASHSALE_ADMIN_TOKEN (the load test creates its products)")}
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	started := time.Now()
	rep, err := loadtest.Run(ctx, cfg)
	if rep != nil {
		if werr := rep.WriteText(stdout); werr != nil && err == nil {
			err = werr
		}
	}
	switch {
	case err != nil && errors.Is(err, loadtest.ErrInvalidConfig):
		return &exitError{code: 2, err: err}
	case errors.Is(err, loadtest.ErrUnauthorized):
		// The error has the API's reason (a wrong token, or none
		// configured there); say where each side's token comes from.
		return fmt.Errorf("%w (this run's token is --admin-token or FLASHSALE_ADMIN_TOKEN; it must be the API's FLASHSALE_ADMIN_TOKEN)", err)
	case err != nil:
		return err
	case !rep.OK:
		return &exitError{code: 1, err: fmt.Errorf("invariants violated (%d violations) in a run of %v", len(rep.Violations), time.Since(started).Round(time.Millisecond))}
	}
	return nil
}
