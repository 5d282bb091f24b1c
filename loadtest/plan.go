package loadtest

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
)

// plannedOrder is one logical order: one Idempotency-Key and one body.
type plannedOrder struct {
	Key       string
	UserID    string
	ProductID string
	Quantity  int
}

// job is one POST /v1/orders to send: an order's original or its duplicate.
type job struct {
	order int
	dup   bool
}

// plan is the deterministic content of a run: what is created and sent.
type plan struct {
	products []string
	orders   []plannedOrder
	jobs     []job
	dups     int
}

// Independent random streams, so that changing one knob (say MaxQuantity)
// does not reshuffle what another (say Users) produced.
const (
	streamUsers = iota + 1
	streamQuantity
	streamDups
)

func newRand(seed uint64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, stream*0x9e3779b97f4a7c15))
}

// newPlan builds the plan of c, which must have its defaults applied.
func newPlan(c Config) *plan {
	p := &plan{products: make([]string, c.Products)}
	for j := range p.products {
		p.products[j] = c.RunID + "-p" + strconv.Itoa(j)
	}

	// Deal the orders to buyers evenly (each buyer gets floor or ceil of
	// N/U orders), in a seeded shuffle so buyers and products are not
	// correlated.
	users := make([]int, c.Orders)
	for i := range users {
		users[i] = i % c.Users
	}
	ur := newRand(c.Seed, streamUsers)
	ur.Shuffle(len(users), func(a, b int) { users[a], users[b] = users[b], users[a] })

	qr := newRand(c.Seed, streamQuantity)
	p.orders = make([]plannedOrder, c.Orders)
	for i := range p.orders {
		prod := 0
		if !c.Hot {
			prod = i % c.Products
		}
		q := 1
		if c.MaxQuantity > 1 {
			q = 1 + qr.IntN(c.MaxQuantity)
		}
		p.orders[i] = plannedOrder{
			Key:       c.RunID + "-k" + strconv.Itoa(i),
			UserID:    c.RunID + "-u" + strconv.Itoa(users[i]),
			ProductID: p.products[prod],
			Quantity:  q,
		}
	}

	// Pick the duplicated orders and place each duplicate about Concurrency
	// jobs after its original.
	p.dups = int(math.Round(c.DupRate * float64(c.Orders)))
	type placed struct {
		pos float64
		j   job
	}
	all := make([]placed, 0, c.Orders+p.dups)
	for i := range c.Orders {
		all = append(all, placed{float64(i), job{order: i}})
	}
	if p.dups > 0 {
		dr := newRand(c.Seed, streamDups)
		for _, i := range dr.Perm(c.Orders)[:p.dups] {
			all = append(all, placed{float64(i+c.Concurrency) + 0.5, job{order: i, dup: true}})
		}
		slices.SortStableFunc(all, func(a, b placed) int { return cmp.Compare(a.pos, b.pos) })
	}
	p.jobs = make([]job, len(all))
	for k, a := range all {
		p.jobs[k] = a.j
	}
	return p
}
