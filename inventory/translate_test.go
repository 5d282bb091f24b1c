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
