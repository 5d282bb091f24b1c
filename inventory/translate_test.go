package inventory

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flashsale/flashsale/internal/testenv"
)

// SQLSTATE 55000 reads as unavailable only at connection start (a database
// refusing connections, TestRefusedConnectionsAreUnavailable): from a query
// it says the statement cannot run in this state, a bug that a retry would
// repeat.
func TestTranslateKeepsAQuerys55000(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SEQUENCE s"); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "SELECT currval('s')") // no nextval yet in this session
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55000" {
		t.Fatalf("currval before nextval: %v, want SQLSTATE 55000", err)
	}
	if err := translate(err); errors.Is(err, ErrUnavailable) {
		t.Errorf("translate(%v) is ErrUnavailable, want it returned as it is", err)
	}
}

// Which server errors are retryable: what translate maps to ErrUnavailable
// the worker retries with backoff, anything else fails the orders for good.
func TestTranslateServerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code string
		want error // nil: returned as it is
	}{
		{"08006", ErrUnavailable}, // connection failure
		{"53300", ErrUnavailable}, // too many connections
		{"57P01", ErrUnavailable}, // admin shutdown
		{"57014", ErrUnavailable}, // query cancelled
		{"40001", ErrUnavailable}, // serialization failure
		{"40P01", ErrUnavailable}, // deadlock
		{"55P03", ErrUnavailable}, // lock not available
		{"25P03", ErrUnavailable}, // idle in transaction timeout
		{"3D000", ErrSchemaOutdated},
		{"23514", nil}, // check violation
		{"23505", nil}, // unique violation
		{"42601", nil}, // syntax error
		{"55000", nil}, // object not in prerequisite state, from a query
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			t.Parallel()
			in := &pgconn.PgError{Code: tt.code}
			err := translate(in)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr != in {
				t.Errorf("translate(%s) = %v: lost the server error", tt.code, err)
			}
			for _, sentinel := range []error{ErrUnavailable, ErrSchemaOutdated} {
				if got := errors.Is(err, sentinel); got != (sentinel == tt.want) {
					t.Errorf("translate(%s) = %v: errors.Is(%v) = %v", tt.code, err, sentinel, got)
				}
			}
		})
	}
}
