package inventory_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/inventory"
)

func TestErrorsHideTheDatabasePassword(t *testing.T) {
	t.Parallel()
	const secret = "s3cretpw"
	port, err := localsvc.FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	urls := []string{
		fmt.Sprintf("postgres://app:%s@127.0.0.1:%d/shop?sslmode=disable&connect_timeout=2", secret, port),
		"postgres://app:" + secret + "@127.0.0.1:notaport/shop",
		"postgres://app:" + secret + "@127.0.0.1:5432/shop?pool_max_conns=many",
		"postgres://app:" + secret + "@127.0.0.1:5432/shop?sslmode=bogus",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range urls {
		s, err := inventory.Open(ctx, u, nil)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q): nil error, want one", u)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("Open error shows the password: %v", err)
		} else {
			t.Logf("Open: %v", err)
		}
		if _, err := inventory.Migrate(ctx, u); err == nil {
			t.Errorf("Migrate(%q): nil error, want one", u)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("Migrate error shows the password: %v", err)
		}
	}
}
