package inventory_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
)

// The purchase row Apply writes carries the product's per-user limit as
// max_units, so that the schema's CHECK (units <= max_units) refuses an
// over-limit purchase whatever a later writer does: raising the units past
// the limit must fail with a check violation.
func TestPurchaseRowCarriesTheLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := inventorytest.NewDatabase(t)
	s := inventorytest.Open(t, url, nil)
	inventorytest.CreateProduct(t, s, "p", 10, 2)
	if _, err := s.Apply(ctx, inventory.Batch{Orders: []inventory.OrderRequest{req("a", "p", "u", 1, 1)}, Tokens: map[string]int64{"p": 1}}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var maxUnits int
	if err := conn.QueryRow(ctx, `SELECT max_units FROM purchases WHERE product_id = 'p' AND user_id = 'u'`).Scan(&maxUnits); err != nil || maxUnits != 2 {
		t.Errorf("max_units = %d, %v; want the limit, 2", maxUnits, err)
	}
	var pgErr *pgconn.PgError
	if _, err := conn.Exec(ctx, `UPDATE purchases SET units = 3 WHERE product_id = 'p' AND user_id = 'u'`); !errors.As(err, &pgErr) || pgErr.Code != "23514" {
		t.Errorf("raising units past the limit: got %v, want a check violation (23514)", err)
	}
}
