// Package inventorytest gives tests a migrated database of their own.
package inventorytest

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
)

// NewDatabase creates a fresh database on the shared PostgreSQL, migrates
// it, drops it at cleanup and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	url := testenv.NewDatabase(t)
	Migrate(t, url)
	return url
}

// Migrate applies the migrations to the database at url or fails the test.
func Migrate(t testing.TB, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := inventory.Migrate(ctx, url); err != nil {
		t.Fatalf("inventorytest: migrate: %v", err)
	}
}

// NewStore returns a Store on a fresh migrated database, closed at cleanup.
func NewStore(t testing.TB) *inventory.Store {
	t.Helper()
	return Open(t, NewDatabase(t), nil)
}

// Open opens a Store on url and closes it at cleanup.
func Open(t testing.TB, url string, opts *inventory.Options) *inventory.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := inventory.Open(ctx, url, opts)
	if err != nil {
		t.Fatalf("inventorytest: open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// CreateProduct creates a product or fails the test.
func CreateProduct(t testing.TB, s *inventory.Store, id string, stock int64, limit int) inventory.Product {
	t.Helper()
	p, err := s.CreateProduct(context.Background(), inventory.NewProduct{ID: id, Name: id, Stock: stock, PerUserLimit: limit})
	if err != nil {
		t.Fatalf("inventorytest: create product %q: %v", id, err)
	}
	return p
}
