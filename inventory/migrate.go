package inventory

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrations embed.FS

// MigrationResult describes one applied migration.
type MigrationResult struct {
	Version int64
	Name    string
}

// Migrate creates the database named in databaseURL when it does not exist,
// then applies every pending migration. It is idempotent, and safe when
// several processes run it at once: a PostgreSQL advisory lock serialises
// them, and a concurrent CREATE DATABASE is tolerated.
func Migrate(ctx context.Context, databaseURL string) ([]MigrationResult, error) {
	// Parse as a pool URL: it may carry pgxpool settings (pool_max_conns),
	// which a plain connection would send to the server as unknown
	// parameters.
	pcfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("%w: database URL: %v", ErrInvalid, err)
	}
	if err := ensureDatabase(ctx, pcfg.ConnConfig); err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*pcfg.ConnConfig)
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("inventory: migration lock: %w", err)
	}
	p, err := newProvider(db, goose.WithSessionLocker(locker))
	if err != nil {
		return nil, err
	}
	res, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("inventory: migrate: %w", translate(err))
	}
	out := make([]MigrationResult, 0, len(res))
	for _, r := range res {
		out = append(out, MigrationResult{Version: r.Source.Version, Name: r.Source.Path})
	}
	return out, nil
}

// newProvider is goose's provider of the embedded migrations on db.
func newProvider(db *sql.DB, opts ...goose.ProviderOption) (*goose.Provider, error) {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub, append(opts, goose.WithDisableGlobalRegistry(true))...)
	if err != nil {
		return nil, fmt.Errorf("inventory: migrations: %w", err)
	}
	return p, nil
}

// CheckSchema returns an error matching [ErrSchemaOutdated] when the
// database lacks migrations this build has (or was never migrated), and
// one matching [ErrUnavailable] when its version cannot be read. It reads
// goose's version table without taking the migration lock. Servers check
// it at start: on an unmigrated database they would otherwise report ready
// and fail every request.
func (s *Store) CheckSchema(ctx context.Context) error {
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	p, err := newProvider(db)
	if err != nil {
		return err
	}
	var target int64
	if srcs := p.ListSources(); len(srcs) > 0 {
		target = srcs[len(srcs)-1].Version
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("inventory: schema version: %w", translate(err))
	}
	if !exists {
		return fmt.Errorf("%w: the database was never migrated (this build needs version %d)", ErrSchemaOutdated, target)
	}
	current, _, err := p.GetVersions(ctx)
	if err != nil {
		return fmt.Errorf("inventory: schema version: %w", translate(err))
	}
	if current < target {
		return fmt.Errorf("%w: the database is at version %d, this build needs %d", ErrSchemaOutdated, current, target)
	}
	return nil
}

// ensureDatabase creates the URL's database if it is missing, connecting to
// the server's "postgres" database to do so.
func ensureDatabase(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("inventory: connect to database %q on %s: %w", cfg.Database, cfg.Host, translate(err))
	}
	name := cfg.Database
	admin := cfg.Copy()
	admin.Database = "postgres"
	aconn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("inventory: connect to create database %q: %w", name, translate(err))
	}
	defer aconn.Close(ctx)
	_, err = aconn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil // created by a concurrent migrate
	}
	if err != nil {
		return fmt.Errorf("inventory: create database %q: %w", name, translate(err))
	}
	return nil
}
