package inventory_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
)

// BenchmarkApply measures one batch transaction: b.N batches of size orders
// over products products.
func BenchmarkApply(b *testing.B) {
	for _, bc := range []struct{ size, products int }{{1, 1}, {64, 1}, {64, 64}, {256, 1}} {
		b.Run(fmt.Sprintf("orders=%d/products=%d", bc.size, bc.products), func(b *testing.B) {
			ctx := context.Background()
			s := inventorytest.NewStore(b)
			tokens := map[string]int64{}
			for p := range bc.products {
				id := fmt.Sprintf("p%d", p)
				inventorytest.CreateProduct(b, s, id, 1<<40, 0)
				tokens[id] = 1
			}
			seq := 0
			b.ResetTimer()
			for range b.N {
				batch := inventory.Batch{Tokens: tokens}
				for i := range bc.size {
					seq++
					batch.Orders = append(batch.Orders, inventory.OrderRequest{
						ID: fmt.Sprintf("o%09d", seq), ProductID: fmt.Sprintf("p%d", i%bc.products),
						UserID: fmt.Sprintf("u%d", seq), Quantity: 1, IdempotencyKey: fmt.Sprintf("k%d", seq),
						AcceptedAt: time.Now(),
					})
				}
				if _, err := s.Apply(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*bc.size)/b.Elapsed().Seconds(), "orders/s")
		})
	}
}
