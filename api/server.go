package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/flashsale/flashsale/sale"
)

// Defaults of [ServerOptions].
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = sale.MaxWait + 15*time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 16 << 10
)

// ServerOptions are the HTTP server's limits against slow or greedy
// clients. Zero fields take the defaults.
type ServerOptions struct {
	// ReadHeaderTimeout bounds reading a request's line and headers, so a
	// client sending them byte by byte (slowloris) is disconnected;
	// default DefaultReadHeaderTimeout (5s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included; default
	// DefaultReadTimeout (10s).
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end
	// of its answer. It must exceed the longest long poll (sale.MaxWait);
	// default DefaultWriteTimeout (45s).
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection may wait for its
	// next request; default DefaultIdleTimeout (2m).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers; default
	// DefaultMaxHeaderBytes (16 KiB).
	MaxHeaderBytes int
	// BaseContext, when set, gives every request's base context (see
	// [http.Server]); cancelling it ends long polls at shutdown.
	BaseContext func(net.Listener) context.Context
	// Logger receives the server's own errors (such as a failed TLS
	// handshake) at warn level; default slog.Default().
	Logger *slog.Logger
}

// NewServer returns an HTTP server for handler with the options' limits.
func NewServer(handler http.Handler, opts ServerOptions) *http.Server {
	orDefault := func(d, def time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return def
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: orDefault(opts.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       orDefault(opts.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      orDefault(opts.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       orDefault(opts.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		BaseContext:       opts.BaseContext,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
}
