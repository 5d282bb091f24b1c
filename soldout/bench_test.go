package soldout_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/soldout"
)

// BenchmarkMark: a worker's round that sold out 24 products flags them, one
// Mark each or one MarkMany. One op = the 24 flags.
func BenchmarkMark(b *testing.B) {
	const n = 24
	rdb := testenv.Redis(b)
	prefix := "b:" + testenv.Namespace(b) + ":"
	testenv.DeleteKeys(b, rdb, prefix)
	g := soldout.New(rdb, soldout.Options{KeyPrefix: prefix})
	ctx := context.Background()
	sold := make([]soldout.Sold, n)
	for i := range sold {
		sold[i] = soldout.Sold{Product: fmt.Sprintf("p%d", i)}
	}
	b.Run("one-by-one", func(b *testing.B) {
		for b.Loop() {
			for _, s := range sold {
				if _, err := g.Mark(ctx, s.Product, s.Gen); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("MarkMany", func(b *testing.B) {
		for b.Loop() {
			if _, errs := g.MarkMany(ctx, sold); errs[0] != nil {
				b.Fatal(errs[0])
			}
		}
	})
}
