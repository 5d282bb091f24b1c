package loadtest

import (
	"slices"
	"testing"
)

func planFor(t *testing.T, c Config) *plan {
	t.Helper()
	c.APIs = []string{"http://127.0.0.1:1"}
	if c.RunID == "" {
		c.RunID = "r"
	}
	c, err := c.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return newPlan(c)
}

func TestPlanIsDeterministic(t *testing.T) {
	c := Config{Orders: 500, Users: 40, Products: 7, MaxQuantity: 3, DupRate: 0.2, Seed: 42}
	a, b := planFor(t, c), planFor(t, c)
	if !slices.Equal(a.orders, b.orders) || !slices.Equal(a.jobs, b.jobs) {
		t.Fatal("two plans from the same seed differ, want identical")
	}
	c.Seed = 43
	if d := planFor(t, c); slices.Equal(a.orders, d.orders) {
		t.Fatal("plans from seeds 42 and 43 are identical, want them to differ")
	}
}

func TestPlanShape(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"defaults", Config{Orders: 100}},
		{"spread", Config{Orders: 100, Products: 7, Users: 30}},
		{"hot", Config{Orders: 100, Products: 3, Hot: true}},
		{"multi-unit with dups", Config{Orders: 100, MaxQuantity: 4, DupRate: 0.25, Concurrency: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planFor(t, tt.cfg)
			c, _ := Config{APIs: []string{"http://x"}, RunID: "r", Orders: tt.cfg.Orders, Users: tt.cfg.Users,
				Products: tt.cfg.Products, MaxQuantity: tt.cfg.MaxQuantity}.withDefaults()
			perUser := map[string]int{}
			keys := map[string]bool{}
			for i, o := range p.orders {
				want := p.products[i%c.Products]
				if tt.cfg.Hot {
					want = p.products[0]
				}
				if o.ProductID != want {
					t.Fatalf("order %d on %s, want %s", i, o.ProductID, want)
				}
				if o.Quantity < 1 || o.Quantity > c.MaxQuantity {
					t.Fatalf("order %d quantity %d, want 1..%d", i, o.Quantity, c.MaxQuantity)
				}
				if keys[o.Key] {
					t.Fatalf("key %s used twice, want distinct keys", o.Key)
				}
				keys[o.Key] = true
				perUser[o.UserID]++
			}
			if len(perUser) != c.Users {
				t.Fatalf("%d distinct users, want %d", len(perUser), c.Users)
			}
			lo, hi := c.Orders/c.Users, (c.Orders+c.Users-1)/c.Users
			for u, n := range perUser {
				if n < lo || n > hi {
					t.Fatalf("user %s has %d orders, want %d..%d", u, n, lo, hi)
				}
			}
			wantDups := int(tt.cfg.DupRate * float64(c.Orders))
			dups := 0
			seen := map[int]bool{}
			for _, j := range p.jobs {
				if j.dup {
					dups++
					if !seen[j.order] {
						t.Fatalf("duplicate of order %d sent before its original", j.order)
					}
				}
				seen[j.order] = true
			}
			if dups != wantDups || p.dups != wantDups || len(p.jobs) != c.Orders+wantDups {
				t.Fatalf("%d duplicate jobs (plan says %d) of %d jobs, want %d of %d", dups, p.dups, len(p.jobs), wantDups, c.Orders+wantDups)
			}
		})
	}
}
