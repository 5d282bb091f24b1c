package localsvc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresOptions configures a private PostgreSQL server.
type PostgresOptions struct {
	// Dir is the data folder. If it holds no cluster yet, initdb creates one.
	// Required. When running as root, the folder is handed to the "postgres"
	// system user, because PostgreSQL refuses to run as root.
	Dir string
	// Port to listen on, 127.0.0.1 only. 0 picks a free port.
	Port int
	// Settings are extra "-c name=value" server settings.
	Settings map[string]string
}

// Postgres is a private PostgreSQL server process.
type Postgres struct {
	proc *Process
	port int
	dir  string
}

// StartPostgres initialises the cluster if needed, starts the server and waits
// until it accepts connections. The superuser is "postgres" with trust auth
// on 127.0.0.1 only.
func StartPostgres(opts PostgresOptions) (*Postgres, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("localsvc: PostgresOptions.Dir is required")
	}
	initdb, err := FindBinary("initdb")
	if err != nil {
		return nil, err
	}
	postgres, err := FindBinary("postgres")
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("localsvc: postgres dir: %w", err)
	}
	if cred != nil {
		if err := os.Chown(opts.Dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("localsvc: chown postgres dir: %w", err)
		}
	}
	data := filepath.Join(opts.Dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("localsvc: initdb: %w: %s", err, out)
		}
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		args := []string{"-D", data, "-p", strconv.Itoa(port),
			"-c", "listen_addresses=127.0.0.1",
			"-c", "unix_socket_directories=" + opts.Dir,
			"-c", "max_connections=300",
			"-c", "shared_buffers=128MB",
		}
		for k, v := range opts.Settings {
			args = append(args, "-c", k+"="+v)
		}
		p := &Postgres{
			proc: &Process{Path: postgres, Args: args, Credential: cred, LogPath: filepath.Join(opts.Dir, "postgres.log")},
			port: port,
			dir:  opts.Dir,
		}
		if cred != nil {
			// The log is opened by this process, so any owner works, but
			// keep it readable for the server user too.
			f, err := os.OpenFile(p.proc.LogPath, os.O_CREATE|os.O_WRONLY, 0o644)
			if err == nil {
				_ = f.Close()
			}
		}
		if err := p.proc.Start(); err != nil {
			return nil, err
		}
		if err := p.waitReady(30 * time.Second); err != nil {
			_ = p.proc.Stop(syscall.SIGQUIT, 5*time.Second)
			lastErr = err
			if opts.Port != 0 {
				break
			}
			continue
		}
		return p, nil
	}
	return nil, fmt.Errorf("localsvc: postgres: %w (log in %s)", lastErr, opts.Dir)
}

// serverCredential returns the credential to run PostgreSQL under: nil when
// not root, the "postgres" user when root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("localsvc: running as root needs a \"postgres\" system user to run PostgreSQL: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (p *Postgres) waitReady(timeout time.Duration) error {
	return waitFor(timeout, func() bool { return !p.proc.Running() }, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		if err := conn.Ping(ctx); err != nil {
			return err
		}
		return p.proc.owns(p.Addr())
	})
}

// Addr is host:port.
func (p *Postgres) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// URL is a postgres:// URL for the superuser and database db.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", p.Addr(), db)
}

// Dir is the server's folder (the cluster is in Dir/data).
func (p *Postgres) Dir() string { return p.dir }

// PID is the postmaster's process id.
func (p *Postgres) PID() int { return p.proc.PID() }

// Running reports whether the postmaster is alive.
func (p *Postgres) Running() bool { return p.proc.Running() }

// Stop shuts the server down in "fast" mode (SIGINT: roll back open
// transactions, disconnect clients) and waits for it to exit.
func (p *Postgres) Stop() error { return p.proc.Stop(syscall.SIGINT, 30*time.Second) }

// Kill stops the server in "immediate" mode (SIGQUIT: no clean shutdown,
// crash recovery at the next start), the nearest to a crash that still lets
// the next start reuse the port at once.
func (p *Postgres) Kill() error { return p.proc.Stop(syscall.SIGQUIT, 10*time.Second) }

// Start starts the server again, on the same port and folder, and waits
// until it accepts connections.
func (p *Postgres) Start() error {
	if err := p.proc.Start(); err != nil {
		return err
	}
	if err := p.waitReady(60 * time.Second); err != nil {
		return fmt.Errorf("localsvc: postgres restart: %w", err)
	}
	return nil
}
