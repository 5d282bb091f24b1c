package inventory

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
)

// Options.IdleInTransactionTimeout reaches the pool's sessions, so that
// PostgreSQL ends a session left idle in a transaction (a paused worker's)
// and releases its product row locks.
func TestOpenSetsIdleInTransactionTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := Open(ctx, testenv.NewDatabase(t), &Options{IdleInTransactionTimeout: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting('idle_in_transaction_session_timeout')`).Scan(&got); err != nil || got != "1500ms" {
		t.Errorf("idle_in_transaction_session_timeout = %q, %v; want 1500ms", got, err)
	}
}

// Every session plans each statement for its actual arguments
// (plan_cache_mode force_custom_plan): a generic plan of "id = ANY($1)"
// chosen while the orders table was small stays a sequential scan as it
// grows (Open's comment: 12-18ms a batch instead of 2ms at 20k rows).
func TestOpenPlansEveryStatementForItsArguments(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := Open(ctx, testenv.NewDatabase(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting('plan_cache_mode')`).Scan(&got); err != nil || got != "force_custom_plan" {
		t.Errorf("plan_cache_mode = %q, %v; want force_custom_plan", got, err)
	}
}
