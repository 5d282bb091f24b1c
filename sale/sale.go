// Package sale is the order-taking side of the system: the rules the HTTP
// API applies before an order is queued, and how a buyer learns its outcome.
//
// Placing an order validates it, checks the product exists, applies the
// idempotency key, consults the sold-out fast path, and enqueues one task
// whose id is the order id. The order's outcome is decided later by a worker
// and lives in PostgreSQL; until then the order lives in the queue. Reading
// an order looks in PostgreSQL first and then in the queue.
package sale

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"regexp"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/flashsale/flashsale/internal/coalesce"
	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/notify"
	"github.com/flashsale/flashsale/queue"
	"github.com/flashsale/flashsale/soldout"
)

// Limits on what buyers and admins may send.
const (
	// MaxQuantity is the most units one order may ask for.
	MaxQuantity = 100
	// MaxStock is the most units a product may hold, created or restocked.
	MaxStock = 1_000_000_000
	// MaxIDLength bounds product and user ids.
	MaxIDLength = 64
	// MaxNameLength bounds product names (bytes).
	MaxNameLength = 200
	// MaxIdempotencyKeyLength bounds the Idempotency-Key header.
	MaxIdempotencyKeyLength = 255
	// MaxWait is the longest long-poll on an order.
	MaxWait = 30 * time.Second
	// ReadBudget bounds the reads of [Service.Order], those of a
	// [Service.WaitOrder] past the end of its wait, and
	// [Service.QueueStats]: with Redis or PostgreSQL hanging, a read of an
	// order or of the queue's counts answers ErrUnavailable by then, a
	// long poll within the API's write timeout (MaxWait+15s).
	ReadBudget = 5 * time.Second
	// OrderBudget bounds a whole [Service.PlaceOrder], as ReadBudget an
	// order's reads: with Redis or PostgreSQL hanging (a paused process,
	// a network black hole), an order answers ErrUnavailable by then, not
	// once each call's own bound has passed in turn (the API's Redis
	// client waits go-redis's read timeout, 3s, four times, in the rate
	// limiter and in a try of the enqueue; the sold-out flag's read 2s
	// more: an order waited 14-30s for its 503). Its checks (the rate
	// limiter, the product, the sold-out flag, a keyed order's lookups)
	// end enqueueReserve earlier, so that the enqueue, which rides out a
	// short outage of the queue for up to enqueueRetryBudget, always has
	// some of it. The same as ReadBudget: a buyer retrying learns within a
	// few seconds, far inside the API server's write timeout.
	OrderBudget = 5 * time.Second
	// DefaultProductTimeout is the default of [Options.ProductTimeout], as
	// long as a keyed order's lookups may take.
	DefaultProductTimeout = 5 * time.Second
)

var (
	// ErrInvalid is returned for input outside the documented limits; the
	// error text says which field.
	ErrInvalid = errors.New("sale: invalid input")
	// ErrUnknownProduct is returned when an order names a product that
	// does not exist.
	ErrUnknownProduct = errors.New("sale: unknown product")
	// ErrNotFound is returned for an unknown product or order id.
	ErrNotFound = errors.New("sale: not found")
	// ErrProductExists is returned when creating a product whose id is taken.
	ErrProductExists = errors.New("sale: product exists")
	// ErrSoldOut is returned by [Service.PlaceOrder] when the product is
	// known to be sold out; nothing was queued.
	ErrSoldOut = errors.New("sale: sold out")
	// ErrIdempotencyMismatch is returned when an Idempotency-Key is reused
	// with a different order body.
	ErrIdempotencyMismatch = errors.New("sale: idempotency key reused with a different request")
	// ErrUnavailable is returned when the queue or the database cannot be
	// reached; the request may be retried.
	ErrUnavailable = errors.New("sale: service unavailable")
	// ErrRateLimited is returned by [Service.PlaceOrder] when the user is
	// over the rate limit; nothing was queued. The error is a
	// [*RateLimitedError], which says when to retry.
	ErrRateLimited = errors.New("sale: rate limited")
)

// RateLimitedError is the error of an order refused by the rate limiter.
type RateLimitedError struct {
	// RetryAfter is how long until the user may order again.
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("sale: rate limited: retry after %v", e.RetryAfter)
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitedError) Is(target error) bool { return target == ErrRateLimited }

var (
	idPattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)
	keyPattern = regexp.MustCompile(`^[\x21-\x7e]+$`) // printable ASCII, no spaces
)

// ValidID checks a product or user id: 1 to MaxIDLength characters from
// A-Z a-z 0-9 . _ : - , starting with a letter or digit.
func ValidID(id string) bool { return len(id) <= MaxIDLength && idPattern.MatchString(id) }

// ValidName checks a product name: 1 to MaxNameLength bytes of UTF-8
// without control characters (PostgreSQL cannot store a NUL, and a name is
// shown to people).
func ValidName(name string) bool {
	if name == "" || len(name) > MaxNameLength || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// ValidOrderID checks the shape of an order id (what [Service] generates).
func ValidOrderID(id string) bool {
	if len(id) != 26 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// Service places and reads orders. It is safe for concurrent use.
type Service struct {
	store     *inventory.Store
	producer  *queue.Producer
	inspector *queue.Inspector
	gate      *soldout.Gate
	hub       *notify.Hub

	limiter        Limiter
	onFailOpen     func(context.Context, error)
	productTimeout time.Duration

	// known holds products seen to exist (products are never deleted),
	// so that an order need not read its product: at most maxKnown, then
	// emptied (see rememberProduct). knownMu serializes additions and
	// guards knownN, how many it holds; reads take no lock.
	known    sync.Map // product id → struct{}
	knownMu  sync.Mutex
	knownN   int
	maxKnown int

	// Point lookups of keyed orders, coalesced across concurrent requests
	// into one query and one Redis pipeline per batch. On a sold-out
	// product every keyed order needs both; one each per request cost a
	// third of the hot burst's throughput on the development machine.
	decidedLoader *coalesce.Loader[string, inventory.Order]
	stateLoader   *coalesce.Loader[string, queue.State]

	// buriedMu, a one-slot semaphore (so that a caller stops waiting for
	// it when its context ends), guards buriedAt and buried: whether any
	// order was buried when last asked (see mayBeBuried).
	buriedMu chan struct{}
	buriedAt time.Time
	buried   bool

	idMu    sync.Mutex
	entropy *ulid.MonotonicEntropy

	drain     chan struct{} // closed by Drain: waits end
	drainOnce sync.Once
	repairs   sync.WaitGroup // abandoned restocks' generations still being stored (Close waits)
	repairMu  sync.Mutex
	repairing map[string]int64 // product → newest abandoned generation its one repair stores
}

// Limiter limits how often one user may place orders;
// [github.com/flashsale/flashsale/ratelimit.Limiter] implements it with Redis.
type Limiter interface {
	// Allow counts one order by user. It returns 0 when the order may
	// proceed, or how long the user must wait.
	Allow(ctx context.Context, user string) (time.Duration, error)
}

// Options configures a Service. Nil or the zero value means no rate limit
// and no fail-open reports.
type Options struct {
	// Limiter, when set, limits how often each user (user_id) may place
	// orders, counting every order that passes validation, replays
	// included. Past it [Service.PlaceOrder] returns a [*RateLimitedError].
	// When the limiter fails (Redis unreachable) the order is let through.
	Limiter Limiter
	// OnFailOpen, when set, is told each time a check that may refuse an
	// order early (the rate limiter, the sold-out flag) failed and the
	// order was let through, and when a failed restock leaves its
	// product's sold-out flag off. It must not block; the caller logs it.
	OnFailOpen func(ctx context.Context, err error)
	// ProductTimeout bounds each PostgreSQL statement on products: reading
	// one ([Service.Product], and [Service.PlaceOrder]'s check of a
	// product this process has not seen yet, which also ends with the
	// order's checks: see [OrderBudget]) or a page
	// ([Service.Products]), creating one, and each statement of a
	// [Service.Restock]. Past it the call returns [ErrUnavailable], as when
	// PostgreSQL is down, instead of waiting for a hung server or a lock
	// (a table locked by a migration, a row by a stuck transaction).
	// Default DefaultProductTimeout (5s).
	//
	// A restock as a whole answers within 2 × (ProductTimeout +
	// [soldout.Gate.Settle]), 14.2s with the defaults: see
	// [Service.Restock].
	ProductTimeout time.Duration
}

// New wires a Service. hub may be nil (then waits poll); opts may be nil.
func New(store *inventory.Store, producer *queue.Producer, inspector *queue.Inspector, gate *soldout.Gate, hub *notify.Hub, opts *Options) *Service {
	if opts == nil {
		opts = &Options{}
	}
	s := &Service{
		store: store, producer: producer, inspector: inspector, gate: gate, hub: hub,
		limiter: opts.Limiter, onFailOpen: opts.OnFailOpen,
		productTimeout: DefaultProductTimeout,
		entropy:        ulid.Monotonic(rand.Reader, 0),
		drain:          make(chan struct{}),
		maxKnown:       maxKnown,
		buriedMu:       make(chan struct{}, 1),
	}
	if opts.ProductTimeout > 0 {
		s.productTimeout = opts.ProductTimeout
	}
	// Point lookups of orders (keyed submits, long polls) share one query
	// and one Redis pipeline while one is in flight: a hot burst by hand
	// settled 4,246 and 4,150 orders/s with them coalesced, against 2,527
	// and 2,544 without (BENCHMARKS.md).
	s.decidedLoader = coalesce.New(store.Orders, lookupBatch, lookupTimeout)
	s.stateLoader = coalesce.New(func(ctx context.Context, ids []string) (map[string]queue.State, error) {
		st, err := inspector.States(ctx, ids)
		if err != nil {
			return nil, err
		}
		out := make(map[string]queue.State, len(ids))
		for i, id := range ids {
			if st[i] != 0 {
				out[id] = st[i]
			}
		}
		return out, nil
	}, lookupBatch, lookupTimeout)
	return s
}

// Bounds of one coalesced lookup.
const (
	lookupBatch   = 256
	lookupTimeout = 5 * time.Second
)

// decidedOrder returns the decided order id, through the coalesced loader,
// with the errors of [inventory.Store.Order].
func (s *Service) decidedOrder(ctx context.Context, id string) (inventory.Order, error) {
	o, ok, err := s.decidedLoader.Load(ctx, id)
	switch {
	case err != nil && ctx.Err() != nil && !errors.Is(err, inventory.ErrUnavailable):
		// The caller gave up waiting: as the store says of a cancelled query.
		return inventory.Order{}, fmt.Errorf("order %q: %w: %w", id, inventory.ErrUnavailable, err)
	case err != nil:
		return inventory.Order{}, fmt.Errorf("order %q: %w", id, err)
	case !ok:
		return inventory.Order{}, fmt.Errorf("order %q: %w", id, inventory.ErrNotFound)
	}
	return o, nil
}

// taskState returns the state of order id's task, 0 when the queue holds
// none, through the coalesced loader.
func (s *Service) taskState(ctx context.Context, id string) (queue.State, error) {
	st, _, err := s.stateLoader.Load(ctx, id)
	if err != nil && !errors.Is(err, queue.ErrUnavailable) {
		return 0, fmt.Errorf("order %q: %w: %w", id, queue.ErrUnavailable, err)
	}
	return st, err
}

// queuedTask returns the queued task of order id, with the errors of
// [queue.Inspector.Lookup]. Whether there is one is asked through the
// coalesced loader; only a task that exists is then read in full.
func (s *Service) queuedTask(ctx context.Context, id string) (queue.TaskInfo, error) {
	st, err := s.taskState(ctx, id)
	switch {
	case err != nil:
		return queue.TaskInfo{}, err
	case st == 0:
		return queue.TaskInfo{}, fmt.Errorf("order %q: %w", id, queue.ErrNotFound)
	}
	return s.inspector.Lookup(ctx, id)
}

// productCtx bounds one PostgreSQL statement on products
// (Options.ProductTimeout).
func (s *Service) productCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.productTimeout)
}

func (s *Service) failOpen(ctx context.Context, err error) {
	if s.onFailOpen != nil {
		s.onFailOpen(ctx, err)
	}
}

// CreateProduct creates a product. It returns [ErrInvalid] or [ErrProductExists].
func (s *Service) CreateProduct(ctx context.Context, p inventory.NewProduct) (inventory.Product, error) {
	switch {
	case !ValidID(p.ID):
		return inventory.Product{}, fmt.Errorf("%w: id must be 1-%d characters of A-Z a-z 0-9 . _ : -", ErrInvalid, MaxIDLength)
	case !ValidName(p.Name):
		return inventory.Product{}, fmt.Errorf("%w: name must be 1-%d bytes of UTF-8 without control characters", ErrInvalid, MaxNameLength)
	case p.Stock < 0 || p.Stock > MaxStock:
		return inventory.Product{}, fmt.Errorf("%w: stock must be 0-%d", ErrInvalid, MaxStock)
	case p.PerUserLimit < 0 || p.PerUserLimit > MaxStock:
		return inventory.Product{}, fmt.Errorf("%w: per_user_limit must be 0 (no limit) to %d", ErrInvalid, MaxStock)
	}
	ctx, cancel := s.productCtx(ctx)
	defer cancel()
	out, err := s.store.CreateProduct(ctx, p)
	if err != nil {
		return inventory.Product{}, s.translate(err)
	}
	s.rememberProduct(out.ID)
	return out, nil
}

// Product returns a product, or [ErrNotFound].
func (s *Service) Product(ctx context.Context, id string) (inventory.Product, error) {
	if !ValidID(id) {
		return inventory.Product{}, ErrNotFound
	}
	ctx, cancel := s.productCtx(ctx)
	defer cancel()
	p, err := s.store.Product(ctx, id)
	if err != nil {
		return inventory.Product{}, s.translate(err)
	}
	return p, nil
}

// Products lists products by id, after the given id, at most limit (≤ 1000).
func (s *Service) Products(ctx context.Context, after string, limit int) ([]inventory.Product, error) {
	limit = min(max(limit, 1), 1000)
	ctx, cancel := s.productCtx(ctx)
	defer cancel()
	ps, err := s.store.Products(ctx, after, limit)
	if err != nil {
		return nil, s.translate(err)
	}
	return ps, nil
}

// Restock adds quantity units. It reopens the sold-out fast path first and
// waits until no API process can still be refusing orders on an old flag,
// so it takes a little longer than [soldout.Gate.Settle].
//
// Concurrent restocks of one product may commit in another order than they
// announced themselves; one that finds a newer generation already stored
// adds nothing, announces itself again and waits again (at most
// restockTries times in all), so that no sold-out flag set before its stock
// arrives can outlive it. A restock that fails after announcing stores its
// generation anyway (no stock), or workers' flags would be refused until
// the next restock.
//
// With an idempotency key (1 to MaxIdempotencyKeyLength printable ASCII
// characters), a restock sent again with the same key and quantity adds
// nothing and returns the product as it is, with replay true; with another
// quantity it returns [ErrIdempotencyMismatch]. The key is stored with the
// stock, in one transaction.
//
// The whole call answers within 2 × ([Options.ProductTimeout] +
// [soldout.Gate.Settle]), 14.2s with the defaults: past that it returns
// [ErrUnavailable] and leaves its generation stored, as any failure after
// its announcement does. Such a restock has almost always added nothing:
// its statement is cancelled on the server. But one whose COMMIT reached
// the server while its answer was lost (or whose row lock was freed as the
// cancel was on its way) did add its stock: only a retry with the same key
// can tell (a replay); without one, read the product before restocking
// again.
func (s *Service) Restock(ctx context.Context, id string, quantity int64, key string) (p inventory.Product, replay bool, err error) {
	if quantity < 1 || quantity > MaxStock {
		return inventory.Product{}, false, fmt.Errorf("%w: quantity must be 1-%d", ErrInvalid, MaxStock)
	}
	if key != "" && (len(key) > MaxIdempotencyKeyLength || !keyPattern.MatchString(key)) {
		return inventory.Product{}, false, fmt.Errorf("%w: Idempotency-Key must be 1-%d printable ASCII characters", ErrInvalid, MaxIdempotencyKeyLength)
	}
	if !ValidID(id) {
		// Before the key's lookup: PostgreSQL refuses an id that is not
		// UTF-8 or holds a NUL, an error no caller could act on.
		return inventory.Product{}, false, ErrNotFound
	}
	end := time.Now().Add(s.RestockBound())
	ctx, cancel := context.WithDeadline(ctx, end.Add(-s.productTimeout))
	defer cancel()
	if key != "" {
		// A retry of a restock that went through: answer it without
		// announcing anything.
		if p, err := s.restockReplay(ctx, end, id, quantity, key); !errors.Is(err, inventory.ErrNotFound) {
			return p, err == nil, err
		}
	}
	p, err = s.restock(ctx, end, id, quantity, key)
	if errors.Is(err, inventory.ErrRestockReplayed) {
		// The same key committed meanwhile (two sends at once).
		p, err = s.restockReplay(ctx, end, id, quantity, key)
		return p, err == nil, err
	}
	return p, false, err
}

// RestockBound is how long a whole [Service.Restock] may take: ProductTimeout
// for its work (the reads, announcements and writes of all its tries
// together, each statement still bounded by ProductTimeout on its own),
// room for two waits of Settle (the one a restock cannot do without, and
// one more should another restock overtake it: as the README says, two
// restocks of one product at once may take twice as long), and
// ProductTimeout for its clean-up (confirming a committed restock, or
// storing the generation of one that failed; see restockCleanupCtx).
// 14.2s with the defaults (5s, Settle 2.1s).
//
// Not ProductTimeout alone, nor a multiple of it: Settle does not depend
// on it (2 × the gate's CacheTTL + 100ms), and a ProductTimeout below
// Settle (it may be as low as 100ms) would cut every restock in its wait.
// Before, only each statement was bounded: a restock overtaken again and
// again announced itself restockTries times, and with its clean-ups could
// take well over a minute with the default bound.
func (s *Service) RestockBound() time.Duration {
	return 2 * (s.productTimeout + s.gate.Settle())
}

// restockCleanupCtx bounds a clean-up step of a restock whose call ends at
// end (RestockBound): ProductTimeout from now, and no later than end. It is
// not cancelled with ctx: a restock cut by its bound or abandoned by its
// caller still stores its generation.
func (s *Service) restockCleanupCtx(ctx context.Context, end time.Time) (context.Context, context.CancelFunc) {
	d := time.Now().Add(s.productTimeout)
	if end.Before(d) {
		d = end
	}
	return context.WithDeadline(context.WithoutCancel(ctx), d)
}

// roomToSettle reports whether ctx leaves time for a restock's wait
// (Settle): an announcement that could not finish its wait would only be
// abandoned.
func (s *Service) roomToSettle(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return !ok || time.Until(d) > s.gate.Settle()
}

// restockReplay answers a restock whose key is stored: the product as it
// is, or ErrIdempotencyMismatch for another quantity. It returns
// inventory.ErrNotFound when the key is not stored.
func (s *Service) restockReplay(ctx context.Context, end time.Time, id string, quantity int64, key string) (inventory.Product, error) {
	qctx, cancel := s.productCtx(ctx)
	q, err := s.store.RestockQuantity(qctx, id, key)
	cancel()
	switch {
	case errors.Is(err, inventory.ErrNotFound):
		return inventory.Product{}, err
	case err != nil:
		return inventory.Product{}, s.translate(err)
	case q != quantity:
		return inventory.Product{}, ErrIdempotencyMismatch
	}
	p, err := s.Product(ctx, id)
	if err == nil {
		// The first send may have committed without confirming (its
		// answer lost): confirming again only removes a stale flag.
		s.confirmRestock(ctx, end, id, p.RestockGen)
	}
	return p, err
}

// restock announces, waits and adds the stock, within ctx (the work's part
// of RestockBound); its clean-ups end by end.
func (s *Service) restock(ctx context.Context, end time.Time, id string, quantity int64, key string) (inventory.Product, error) {
	for try := 1; ; try++ {
		p, err := s.Product(ctx, id)
		if err != nil {
			return inventory.Product{}, err
		}
		if p.Stock+quantity > MaxStock {
			return inventory.Product{}, fmt.Errorf("%w: stock would exceed %d", ErrInvalid, MaxStock)
		}
		if try == 1 && !s.roomToSettle(ctx) {
			// Nothing announced yet, so nothing to abandon.
			return inventory.Product{}, fmt.Errorf("%w: restock of %q: no time left for its wait: %w", ErrUnavailable, id, context.DeadlineExceeded)
		}
		gen, err := s.gate.Reopen(ctx, id, p.RestockGen)
		if err != nil {
			// Reopen may have run without its answer arriving: then Redis
			// announced a generation PostgreSQL does not have, and refuses
			// every mark until the next restock.
			s.abandonUnknownRestock(ctx, end, id, p.RestockGen)
			return inventory.Product{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		select {
		case <-time.After(s.gate.Settle()):
		case <-ctx.Done():
			s.abandonRestock(ctx, end, id, gen)
			return inventory.Product{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
		// Bounded as well. A restock cut at the bound is abandoned below,
		// as any failure after Reopen, whether its statement rolled back
		// (pgx cancels it on the server) or committed just before (then
		// abandoning changes nothing); workers' marks at older generations
		// are refused either way, so no flag is left over its stock.
		rctx, cancel := s.productCtx(ctx)
		p, err = s.store.Restock(rctx, inventory.RestockRequest{ProductID: id, Quantity: quantity, Gen: gen, Max: MaxStock, Key: key})
		cancel()
		switch {
		case err == nil:
			s.confirmRestock(ctx, end, id, gen)
			return p, nil
		case errors.Is(err, inventory.ErrRestockReplayed):
			s.abandonRestock(ctx, end, id, gen)
			return inventory.Product{}, err
		case errors.Is(err, inventory.ErrRestockSuperseded) && try < restockTries && s.roomToSettle(ctx):
			continue
		case errors.Is(err, inventory.ErrRestockSuperseded):
			// Out of tries, or of time for another wait. Stores gen if the
			// stored generation is still older (the product changed under
			// a restock refused by its bound).
			s.abandonRestock(ctx, end, id, gen)
			return inventory.Product{}, fmt.Errorf("%w: %d restocks of %q overtaken by others: %w", ErrUnavailable, try, id, err)
		}
		s.abandonRestock(ctx, end, id, gen)
		return inventory.Product{}, s.translate(err)
	}
}

// restockTries bounds the announcements of one restock overtaken by others
// (RestockBound bounds their time).
const restockTries = 5

// confirmRestock tells the gate that the restock at generation gen
// committed (soldout.Gate.Confirm), best effort, by end: a flag a late
// mark set over the new stock, after Redis lost the announcement, goes now
// rather than after FlagTTL.
func (s *Service) confirmRestock(ctx context.Context, end time.Time, id string, gen int64) {
	cctx, cancel := s.restockCleanupCtx(ctx, end)
	defer cancel()
	if _, err := s.gate.Confirm(cctx, id, gen); err != nil {
		s.failOpen(ctx, fmt.Errorf("sale: restock of %q committed, but its confirmation to the sold-out flag failed; a flag set meanwhile would last until it expires: %w", id, err))
	}
}

// abandonUnknownRestock stores, best effort and by end, the generation
// Redis announced for id if a Reopen that failed may have raised it above
// stored, the one in PostgreSQL.
func (s *Service) abandonUnknownRestock(ctx context.Context, end time.Time, id string, stored int64) {
	actx, cancel := s.restockCleanupCtx(ctx, end)
	defer cancel()
	gen, err := s.gate.Announced(actx, id)
	switch {
	case err != nil:
		s.failOpen(ctx, fmt.Errorf("sale: restock of %q failed to announce itself, and whether it did cannot be read; if it did, its sold-out flag stays off until the next restock: %w", id, err))
	case gen > stored:
		s.abandonRestock(ctx, end, id, gen)
	}
}

// abandonRestock stores the generation gen of a restock that announced
// itself and then failed (the database may be what failed), within the
// product timeout and by end (restockCleanupCtx), even if ctx has ended.
// If that fails too (the product's row held by a stuck transaction, as
// when the restock itself was cut at the bound; the database down; no time
// left), it goes on trying in the background, every abandonRetryEvery for
// up to abandonRetryFor or until Drain: until it is stored, workers'
// sold-out marks are refused and the product's orders are queued rather
// than answered 409. Stopped by Drain, it reports (OnFailOpen) that the
// flag stays off only if the stored generation is still older than gen.
func (s *Service) abandonRestock(ctx context.Context, end time.Time, id string, gen int64) {
	bg := context.WithoutCancel(ctx)
	store := func(gen int64) error {
		actx, cancel := s.productCtx(bg)
		defer cancel()
		return s.store.AdvanceRestockGen(actx, id, gen)
	}
	actx, cancel := s.restockCleanupCtx(ctx, end)
	err := s.store.AdvanceRestockGen(actx, id, gen)
	cancel()
	if err == nil {
		return
	}
	// One repair per product, storing the newest generation abandoned:
	// the stored generation only rises, so an older one adds nothing, and
	// each repair holds a pool connection while it waits on the row.
	s.repairMu.Lock()
	if cur, ok := s.repairing[id]; ok {
		s.repairing[id] = max(cur, gen)
		s.repairMu.Unlock()
		return
	}
	if s.repairing == nil {
		s.repairing = map[string]int64{}
	}
	s.repairing[id] = gen
	s.repairMu.Unlock()
	s.repairs.Go(func() {
		target := func() int64 {
			s.repairMu.Lock()
			defer s.repairMu.Unlock()
			return s.repairing[id]
		}
		// done ends the repair unless a newer generation came meanwhile.
		done := func(stored int64) bool {
			s.repairMu.Lock()
			defer s.repairMu.Unlock()
			if s.repairing[id] > stored {
				return false
			}
			delete(s.repairing, id)
			return true
		}
		giveUp := time.Now().Add(abandonRetryFor)
		for {
			t := time.NewTimer(abandonRetryEvery)
			select {
			case <-t.C:
			case <-s.drain:
				t.Stop()
				gen := target()
				done(math.MaxInt64)
				// Said only if so: a restock (of this process or another)
				// may have stored a newer generation since the last try,
				// and then the flag works again.
				rctx, cancel := s.productCtx(bg)
				stored, err := s.store.RestockGen(rctx, id)
				cancel()
				switch {
				case err != nil:
					s.failOpen(bg, fmt.Errorf("sale: restock of %q failed after announcing generation %d, which the database did not store before this process stopped, and whether a newer restock stored its own cannot be read; if none did, its sold-out flag stays off until the next restock: %w", id, gen, err))
				case stored < gen:
					s.failOpen(bg, fmt.Errorf("sale: restock of %q failed after announcing generation %d, which the database did not store before this process stopped (it stores %d); its sold-out flag stays off until the next restock", id, gen, stored))
				}
				return
			}
			gen := target()
			err := store(gen)
			switch {
			case err == nil:
				if done(gen) {
					return
				}
			case time.Now().After(giveUp):
				done(math.MaxInt64)
				s.failOpen(bg, fmt.Errorf("sale: restock of %q failed after announcing generation %d, which the database did not store in %v of tries; its sold-out flag stays off until the next restock: %w", id, gen, abandonRetryFor, err))
				return
			}
		}
	})
}

// How an abandoned restock's generation is stored when the first try
// fails (abandonRestock).
const (
	abandonRetryEvery = time.Second
	abandonRetryFor   = time.Minute
)

// PlaceOrderRequest is a buyer's order.
type PlaceOrderRequest struct {
	ProductID      string
	UserID         string
	Quantity       int
	IdempotencyKey string // optional
}

// Placed is the answer to an accepted order.
type Placed struct {
	OrderID string
	Status  inventory.Status
	// Replay is true when the idempotency key matched an earlier order:
	// nothing new was created and Status is that order's current status.
	Replay bool
}

// Validate checks an order against the documented limits without placing
// it. It returns nil or an error matching [ErrInvalid] that names the field.
func (r PlaceOrderRequest) Validate() error {
	switch {
	case !ValidID(r.ProductID):
		return fmt.Errorf("%w: product_id must be 1-%d characters of A-Z a-z 0-9 . _ : -", ErrInvalid, MaxIDLength)
	case !ValidID(r.UserID):
		return fmt.Errorf("%w: user_id must be 1-%d characters of A-Z a-z 0-9 . _ : -", ErrInvalid, MaxIDLength)
	case r.Quantity < 1 || r.Quantity > MaxQuantity:
		return fmt.Errorf("%w: quantity must be an integer from 1 to %d", ErrInvalid, MaxQuantity)
	case r.IdempotencyKey != "" && (len(r.IdempotencyKey) > MaxIdempotencyKeyLength || !keyPattern.MatchString(r.IdempotencyKey)):
		return fmt.Errorf("%w: Idempotency-Key must be 1-%d printable ASCII characters", ErrInvalid, MaxIdempotencyKeyLength)
	}
	return nil
}

// PlaceOrder validates and queues an order. It returns [ErrInvalid],
// [ErrRateLimited] (a [*RateLimitedError]), [ErrUnknownProduct],
// [ErrSoldOut] (known sold out; nothing queued), [ErrIdempotencyMismatch]
// or [ErrUnavailable].
//
// With an idempotency key, the order id is derived from (user, key), so the
// same pair always names the same order, whichever API process receives it.
//
// It answers within [OrderBudget], even if Redis or PostgreSQL hangs. An
// [ErrUnavailable] is not a final answer: an enqueue cut by the budget may
// have gone through all the same, and a keyed order sent again then finds
// it.
func (s *Service) PlaceOrder(ctx context.Context, r PlaceOrderRequest) (Placed, error) {
	if err := r.Validate(); err != nil {
		return Placed{}, err
	}
	end := time.Now().Add(OrderBudget)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	// Everything before the enqueue runs on checks. Otherwise a keyed
	// order's lookup in a hung PostgreSQL, cut only by the budget, would
	// leave no time to queue it unchecked, as it is when PostgreSQL is
	// down; and a slow limiter or flag would leave none to queue anything.
	checks, cancelChecks := context.WithDeadline(ctx, end.Add(-enqueueReserve))
	defer cancelChecks()
	if s.limiter != nil {
		// Before anything that reads PostgreSQL or the queue: the limit
		// protects them too. A limiter failure fails open.
		wait, err := s.limiter.Allow(checks, r.UserID)
		switch {
		case err != nil && checks.Err() != nil:
			// The caller went away, or the limiter's Redis hangs and took
			// the checks' share of the budget: no limiter failure to
			// report, and no time to go on.
			return Placed{}, fmt.Errorf("%w: %w", ErrUnavailable, checks.Err())
		case err != nil:
			s.failOpen(ctx, fmt.Errorf("sale: rate limiter failed, order let through: %w", err))
		case wait > 0:
			return Placed{}, &RateLimitedError{RetryAfter: wait}
		}
	}
	if err := s.checkProduct(checks, r.ProductID); err != nil {
		return Placed{}, err
	}
	o := queue.Order{
		ProductID: r.ProductID, UserID: r.UserID, Quantity: r.Quantity,
		// Microseconds, as PostgreSQL keeps it: the order's created_at
		// reads the same from its task, its announcement and its row.
		IdempotencyKey: r.IdempotencyKey, AcceptedAt: time.Now().UTC().Truncate(time.Microsecond),
	}
	// The sold-out flag first: it is cached in memory, and a sold-out answer
	// needs fewer lookups below.
	sold, err := s.gate.SoldOut(checks, r.ProductID)
	if err != nil {
		// A Redis error reads as "not sold out": the fast path fails open.
		s.failOpen(ctx, fmt.Errorf("sale: sold-out flag unreadable, order let through: %w", err))
	}
	if r.IdempotencyKey != "" {
		o.ID = KeyedOrderID(r.UserID, r.IdempotencyKey)
	} else {
		o.ID = s.newID()
	}
	if sold {
		if r.IdempotencyKey == "" {
			return Placed{}, ErrSoldOut
		}
		p, err := s.soldOutKeyed(checks, o)
		switch {
		case errors.Is(err, ErrSoldOut):
			// The lookups may have taken seconds (a slow database): a
			// restock may have reopened the product meanwhile and, Settle
			// later, added stock. Refuse only on a flag read now, which the
			// gate trusts for less than Settle, as for an unkeyed order.
			still, ferr := s.gate.SoldOut(checks, r.ProductID)
			if ferr != nil {
				s.failOpen(ctx, fmt.Errorf("sale: sold-out flag unreadable, order let through: %w", ferr))
			}
			if ferr == nil && still {
				return Placed{}, ErrSoldOut
			}
			// Reopened, or unreadable: go on as for a product on sale.
		case !errors.Is(err, errUndecidable):
			return p, err
		}
		// errUndecidable: the database cannot say whether the key's order
		// was decided: queue it, as below, and let a worker decide (sold
		// out, or a replay of the decided order) rather than answer 503.
	}
	if r.IdempotencyKey != "" {
		// A decided order with this key answers for itself.
		prev, err := s.decidedOrder(checks, o.ID)
		switch {
		case err == nil:
			return s.replay(o, prev.ProductID, prev.Quantity, prev.Status)
		case errors.Is(err, inventory.ErrUnavailable):
			// The database is down (a restart): accept the order anyway.
			// Its task id still refuses a duplicate of a queued order, and
			// a worker meeting an already decided order changes nothing;
			// only a different body for a decided key goes unnoticed. The
			// task says so (Unchecked): it may be a re-send of a decided
			// order, and must not be read as that order's state (Order).
			o.Unchecked = true
		case !errors.Is(err, inventory.ErrNotFound):
			return Placed{}, s.translate(err)
		}
		// A buried order (its tries ran out while PostgreSQL was down; its
		// archived task, which would refuse a new one, may be trimmed)
		// answers for itself, failed, until the rescue scan records it.
		if s.mayBeBuried(checks) {
			sctx, cancel := context.WithTimeout(checks, buriedCheckTimeout)
			st, err := s.taskState(sctx, o.ID)
			cancel()
			if err == nil && st == queue.Dead {
				if p, err := s.replayQueued(checks, o); !errors.Is(err, ErrNotFound) {
					return p, err
				}
				// An entry that no longer reads as an order: queue it.
			}
		}
	}
	// Ride out a short outage of the queue's Redis (a restart or failover
	// takes about a second) before answering 503, within the budget. Each
	// try ends with it too (the API's Redis client ends calls at their
	// context's deadline); one cut there may still have gone through: a
	// 503 is not a final answer.
	deadline := time.Now().Add(enqueueRetryBudget)
	if end.Before(deadline) {
		deadline = end
	}
	for attempt := 0; ; attempt++ {
		err := s.producer.Enqueue(ctx, o)
		switch {
		case err == nil && r.IdempotencyKey != "" && !o.Unchecked:
			return s.checkEnqueued(ctx, end, o)
		case err == nil:
			return Placed{OrderID: o.ID, Status: inventory.StatusQueued}, nil
		case errors.Is(err, queue.ErrDuplicate) && attempt > 0 && r.IdempotencyKey == "":
			// An earlier attempt went through but its answer was lost.
			return Placed{OrderID: o.ID, Status: inventory.StatusQueued}, nil
		case errors.Is(err, queue.ErrDuplicate) && attempt > 0 && !o.Unchecked:
			// A keyed order: an earlier attempt may have gone through, its
			// answer lost. Its task is then checked as one just queued.
			return s.enqueuedOnce(ctx, end, o)
		case errors.Is(err, queue.ErrDuplicate):
			return s.replayQueued(ctx, o)
		}
		wait := min(50*time.Millisecond<<attempt, 500*time.Millisecond)
		if time.Now().Add(wait).After(deadline) {
			return Placed{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return Placed{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
	}
}

// checkEnqueued answers a keyed order just queued, whose key's order
// PostgreSQL did not hold decided when PlaceOrder read it. It may hold it
// now: a re-send whose first send a worker was deciding at that read (the
// worker committed and removed its task, which let this one in). The new
// task then duplicates a decided order. A worker reaching it would change
// nothing, but until one did, a read of the order during a PostgreSQL
// outage found a task that never ran and answered queued: a final status
// undone. So PostgreSQL is read again (once per accepted keyed order,
// coalesced with the other point lookups; hot and backlog bursts of the
// binaries with and without it, alternated, differed by less than their
// noise): if it holds the order decided, the task is withdrawn and the
// order answers for itself, as if the first read had found it. If it went
// down since the first read, it cannot say: the task is queued again as
// one accepted during an outage (Unchecked), which no read takes for the
// order's state until PostgreSQL answers.
//
// The window stays open only when Redis fails too: a withdrawal that
// failed before Redis ran it leaves the task as it is (the enqueue that
// follows it, as after any failed withdrawal, finds the task there and
// answers from it), and a second enqueue that fails leaves none and
// answers ErrUnavailable. asynq's task retention, which would make the
// enqueue itself refuse a recently decided order, was weighed and not
// taken: every order's acknowledgement would keep its task, and asynq's
// janitor deletes 100 expired ones every 8 s by default, far fewer than a
// flash sale completes.
//
// The read ends half of enqueueReserve before the order's budget (end): a
// hung PostgreSQL leaves the rest to the withdrawal and the enqueue.
func (s *Service) checkEnqueued(ctx context.Context, end time.Time, o queue.Order) (Placed, error) {
	queued := Placed{OrderID: o.ID, Status: inventory.StatusQueued}
	rctx, cancel := context.WithDeadline(ctx, end.Add(-enqueueReserve/2))
	prev, err := s.decidedOrder(rctx, o.ID)
	cancel()
	switch {
	case err == nil && sameAttempt(o, prev.ProductID, prev.Quantity, prev.CreatedAt):
		// This call's own order (accepted at this call's microsecond),
		// decided already by a quick worker: no duplicate, and no replay.
		return Placed{OrderID: o.ID, Status: prev.Status}, nil
	case err == nil:
		// Withdrawn, or taken by a worker (which finds the order decided),
		// or the withdrawal failed: the order is decided and answers for
		// itself.
		_, _ = s.inspector.Withdraw(ctx, o.ID)
		return s.replay(o, prev.ProductID, prev.Quantity, prev.Status)
	case !errors.Is(err, inventory.ErrUnavailable):
		return queued, nil // not decided (or an error that says nothing of it)
	}
	if ok, werr := s.inspector.Withdraw(ctx, o.ID); werr == nil && !ok {
		// Taken by a worker (a task that ran reads unavailable during the
		// outage): left as it is.
		return queued, nil
	}
	// Withdrawn, or the withdrawal failed: Redis may have run it all the
	// same (its reply lost) and the task be gone, so it is queued again in
	// either case; a task still there refuses it.
	o.Unchecked = true
	switch err := s.producer.Enqueue(ctx, o); {
	case err == nil:
		return queued, nil
	case errors.Is(err, queue.ErrDuplicate):
		// The task not withdrawn after all, or another send of the key
		// came in between.
		return s.replayQueued(ctx, o)
	default:
		return Placed{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}

// enqueuedOnce answers a keyed order, PostgreSQL not holding it decided
// when PlaceOrder read it, whose enqueue was refused after an earlier
// attempt whose answer was lost. If the task there is that attempt's (the
// same body, accepted at the same time), the order was queued by this call
// and is answered as one just queued (checkEnqueued): the task may
// duplicate an order decided since the read. Otherwise it is another
// send's, answered as any duplicate.
func (s *Service) enqueuedOnce(ctx context.Context, end time.Time, o queue.Order) (Placed, error) {
	ti, err := s.inspector.Lookup(ctx, o.ID)
	if err != nil {
		return s.replayQueued(ctx, o)
	}
	if t := ti.Order; !t.Unchecked && sameAttempt(o, t.ProductID, t.Quantity, t.AcceptedAt) {
		return s.checkEnqueued(ctx, end, o)
	}
	return s.replayTask(ctx, o, ti)
}

// sameAttempt reports whether an order of product and quantity accepted at
// accepted (read from its task or its row) is o itself: the same body,
// accepted at the same microsecond, by this PlaceOrder call.
func sameAttempt(o queue.Order, product string, quantity int, accepted time.Time) bool {
	return product == o.ProductID && quantity == o.Quantity && accepted.Equal(o.AcceptedAt)
}

// buriedCheckTimeout bounds the extra look, in PlaceOrder, at a keyed
// order that may be buried: a slow Redis answers the enqueue instead.
const buriedCheckTimeout = time.Second

// mayBeBuried reports whether any order may be buried, from one EXISTS at
// most every second (true when Redis cannot say). Keyed orders look for
// their buried self only then: the look took a keyed PlaceOrder from 22-23
// to 26 µs in a reviewer's parallel in-process benchmark, and buried orders
// are rare. A second is safe: a buried
// order's archived task, which refuses a new one meanwhile, is trimmed
// only after 10,000 later tasks were archived.
//
// While one caller asks Redis, the others wait for its answer, or until
// their context ends: then they cannot say either (true). A sync.Mutex
// would keep them past their order's budget while Redis hangs.
func (s *Service) mayBeBuried(ctx context.Context) bool {
	select {
	case s.buriedMu <- struct{}{}:
	case <-ctx.Done():
		return true
	}
	defer func() { <-s.buriedMu }()
	if time.Since(s.buriedAt) < time.Second {
		return s.buried
	}
	cctx, cancel := context.WithTimeout(ctx, buriedCheckTimeout)
	defer cancel()
	some, err := s.inspector.AnyBuried(cctx)
	s.buriedAt, s.buried = time.Now(), some || err != nil
	return s.buried
}

// soldOutKeyed answers a keyed order for a product flagged sold out. A
// re-sent order that was accepted before the sell-out answers for itself,
// not for the product. Queue first, then the database: a task is removed
// only after its outcome committed, so an accepted order is found in one or
// the other. Only when both say "not found" is the order new and refused;
// if either could not be read, the order may have been accepted, and a 409
// would be a final answer the buyer cannot take back. When the queue says
// "not found" but the database cannot be read (a restart), it returns
// errUndecidable: the order can still be queued, and a worker decides it
// (its task id refuses nothing then, and a worker meeting a decided order
// changes nothing). When the queue cannot be read: ErrUnavailable.
//
// The database is read even when the queue has the task: an order decided
// while its task is still there (its acknowledgement not in yet, a worker
// killed after its commit, a stranded task whose rescue decided it)
// answers with its outcome, as GET /v1/orders/{id} and a re-send before the
// sell-out do, not "queued".
func (s *Service) soldOutKeyed(ctx context.Context, o queue.Order) (Placed, error) {
	ti, qerr := s.queuedTask(ctx, o.ID)
	prev, derr := s.decidedOrder(ctx, o.ID)
	switch {
	case derr == nil:
		return s.replay(o, prev.ProductID, prev.Quantity, prev.Status)
	case qerr == nil && answersFromDB(ti) && !errors.Is(derr, inventory.ErrNotFound):
		// A dead or unchecked task's order reads from the database (see
		// replayTask), which cannot be read.
		return Placed{}, s.translate(derr)
	case qerr == nil && !neverRan(ti) && !errors.Is(derr, inventory.ErrNotFound):
		// A task that ran may have its order decided (see Order): only the
		// database, which cannot be read, can say.
		return Placed{}, s.translate(derr)
	case qerr == nil:
		return s.replay(o, ti.Order.ProductID, ti.Order.Quantity, taskStatus(ti))
	case !errors.Is(qerr, queue.ErrNotFound):
		return Placed{}, fmt.Errorf("%w: %w", ErrUnavailable, qerr)
	case errors.Is(derr, inventory.ErrUnavailable):
		return Placed{}, errUndecidable
	case !errors.Is(derr, inventory.ErrNotFound):
		return Placed{}, s.translate(derr)
	}
	return Placed{}, ErrSoldOut
}

// errUndecidable: see soldOutKeyed.
var errUndecidable = errors.New("sale: cannot tell whether the order was decided")

// enqueueRetryBudget is how long PlaceOrder retries an unreachable queue
// (within OrderBudget).
const enqueueRetryBudget = 3 * time.Second

// enqueueReserve is the part of OrderBudget that PlaceOrder's checks leave
// to the enqueue: a single round trip when Redis answers.
const enqueueReserve = time.Second

// replayQueued answers a keyed order whose task already exists.
func (s *Service) replayQueued(ctx context.Context, o queue.Order) (Placed, error) {
	ti, err := s.inspector.Lookup(ctx, o.ID)
	switch {
	case err == nil:
		return s.replayTask(ctx, o, ti)
	case errors.Is(err, queue.ErrNotFound):
		// Decided and acknowledged between the enqueue and the lookup.
		prev, err := s.decidedOrder(ctx, o.ID)
		if err != nil {
			return Placed{}, s.translate(err)
		}
		return s.replay(o, prev.ProductID, prev.Quantity, prev.Status)
	default:
		return Placed{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}

// answersFromDB reports whether a keyed order whose task is ti must be
// answered from the database when it has the order (see replayTask): the
// task is dead, or was accepted unchecked during an outage.
func answersFromDB(ti queue.TaskInfo) bool { return ti.State == queue.Dead || ti.Order.Unchecked }

// replayTask answers a keyed order from its task, unless the task is dead
// (archived or buried) and the database has the order decided: a task
// archived after its outcome committed (its acknowledgement lost, its last
// try cut short) must not read otherwise than GET /v1/orders/{id}, which
// reads the database first. The same for an unchecked task (accepted
// during an outage): it may be a re-send of a decided order, with another
// body. If the database cannot be read, neither can the answer (see Order).
func (s *Service) replayTask(ctx context.Context, o queue.Order, ti queue.TaskInfo) (Placed, error) {
	if answersFromDB(ti) {
		prev, err := s.decidedOrder(ctx, o.ID)
		switch {
		case err == nil:
			return s.replay(o, prev.ProductID, prev.Quantity, prev.Status)
		case !errors.Is(err, inventory.ErrNotFound):
			return Placed{}, s.translate(err)
		}
	}
	if o.Unchecked && !neverRan(ti) {
		// The database could not be read for this re-send (Unchecked), and
		// a task that ran may have its order decided: as Order, answer
		// unavailable rather than undo a final status.
		return Placed{}, fmt.Errorf("%w: order %q: its task ran and the database cannot be read", ErrUnavailable, o.ID)
	}
	return s.replay(o, ti.Order.ProductID, ti.Order.Quantity, taskStatus(ti))
}

func (s *Service) replay(o queue.Order, product string, quantity int, status inventory.Status) (Placed, error) {
	if product != o.ProductID || quantity != o.Quantity {
		return Placed{}, ErrIdempotencyMismatch
	}
	return Placed{OrderID: o.ID, Status: status, Replay: true}, nil
}

func (s *Service) checkProduct(ctx context.Context, id string) error {
	if _, ok := s.known.Load(id); ok {
		return nil
	}
	ctx, cancel := s.productCtx(ctx)
	defer cancel()
	if _, err := s.store.Product(ctx, id); err != nil {
		if errors.Is(err, inventory.ErrNotFound) {
			return ErrUnknownProduct
		}
		return s.translate(err)
	}
	s.rememberProduct(id)
	return nil
}

// maxKnown is how many products a Service remembers as existing: a
// long-running API process takes orders for every product of every sale,
// and would otherwise keep each for good.
const maxKnown = 100_000

// rememberProduct notes that product id exists. Past maxKnown every product
// is forgotten: what known holds is only a saving, so the cost is one read
// of each product ordered again.
func (s *Service) rememberProduct(id string) {
	if _, ok := s.known.Load(id); ok {
		return
	}
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	if s.knownN >= s.maxKnown {
		s.known.Clear()
		s.knownN = 0
	}
	if _, loaded := s.known.LoadOrStore(id, struct{}{}); !loaded {
		s.knownN++
	}
}

// KeyedOrderID derives the order id of an idempotent order: 26 characters
// of base32 of SHA-256(user, 0, key), the same length and alphabet as the
// ULIDs of other orders.
func KeyedOrderID(user, key string) string {
	h := sha256.New()
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return crockford.EncodeToString(h.Sum(nil))[:26]
}

var crockford = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

func (s *Service) newID() string {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return ulid.MustNew(ulid.Now(), s.entropy).String()
}

// OrderView is an order as buyers see it, decided or not.
type OrderView struct {
	ID        string
	ProductID string
	UserID    string
	Quantity  int
	Status    inventory.Status
	Reason    string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Order returns an order's current state, or [ErrNotFound]. Its reads end
// within [ReadBudget].
func (s *Service) Order(ctx context.Context, id string) (OrderView, error) {
	if !ValidOrderID(id) {
		return OrderView{}, ErrNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, ReadBudget)
	defer cancel()
	v, dbErr := s.decided(ctx, id)
	dbDown := errors.Is(dbErr, ErrUnavailable)
	if dbErr == nil || (!errors.Is(dbErr, ErrNotFound) && !dbDown) {
		return v, dbErr
	}
	// Not decided, or the database is down: the queue may know the order.
	ti, err := s.inspector.Lookup(ctx, id)
	switch {
	case dbDown && (err != nil || !neverRan(ti) || ti.Order.Unchecked):
		// Only a task that never ran tells that its order is undecided. A
		// done task's order is decided, and the order of one that ran may
		// be (a running one's round may have committed; one retried after
		// its worker died may have committed before; a dead one's run may
		// have been cut short after its commit): only PostgreSQL can say,
		// and a final status read before must not read queued now. Nor
		// does a task accepted unchecked during an outage: it may be a
		// re-send of a key whose order was decided (and its task gone).
		return OrderView{}, dbErr
	case err == nil && ti.State != queue.Done:
		return queuedView(id, ti), nil
	case err == nil, errors.Is(err, queue.ErrNotFound):
		// Decided and acknowledged after the first read: the outcome is
		// committed before the task is removed, so read it again.
		return s.decided(ctx, id)
	default:
		return OrderView{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}

func (s *Service) decided(ctx context.Context, id string) (OrderView, error) {
	o, err := s.decidedOrder(ctx, id)
	if err != nil {
		return OrderView{}, s.translate(err)
	}
	return OrderView{ID: o.ID, ProductID: o.ProductID, UserID: o.UserID, Quantity: o.Quantity,
		Status: o.Status, Reason: o.Reason, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}, nil
}

// neverRan reports whether ti is a task no worker has run yet: waiting,
// never retried. (A task that asynq put back at a shutdown after its
// handler outlived the shutdown timeout also reads so: a narrow case.)
func neverRan(ti queue.TaskInfo) bool { return ti.State == queue.Waiting && ti.Retried == 0 }

// taskStatus is the status of an order that PostgreSQL does not hold
// decided, from its task. A dead task (archived, or its order buried) is
// not a final answer: its last try may have been cut short while its order
// sat in a round that still commits (asynq archives a task whose deadline
// passed without waiting for the handler), so the order reads as
// processing until PostgreSQL holds its outcome: that round's, or the
// failure the rescue scan records once no run of it can decide it.
func taskStatus(ti queue.TaskInfo) inventory.Status {
	switch ti.State {
	case queue.Running, queue.Dead:
		return inventory.StatusProcessing
	}
	return inventory.StatusQueued
}

// WaitOrder returns the order once it is final or wait has passed
// (capped at MaxWait), whichever comes first. Workers announce each decided
// order with its outcome, which answers the wait without reading the
// database; a jittered re-check every second covers a lost announcement.
// While the database or Redis is unreachable (a restart) it keeps waiting,
// re-checking every 250ms. If one is still down when the wait ends, it
// answers the state the wait last read of the order, which the order had
// then (a read that found it not yet decided in PostgreSQL and its task
// still in the queue), and reports the error only if no read of the wait
// could tell, or the order's fields cannot be had (its task, read for them
// then, gone or replaced by one accepted unchecked). Its reads end by the
// wait's end plus [ReadBudget], even if Redis or PostgreSQL hangs.
func (s *Service) WaitOrder(ctx context.Context, id string, wait time.Duration) (OrderView, error) {
	deadline := time.Now().Add(min(max(wait, 0), MaxWait))
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(ReadBudget))
	defer cancel()
	until := func() time.Duration {
		select {
		case <-s.drain:
			return 0 // draining: the wait has run out
		default:
			return time.Until(deadline)
		}
	}
	// What this wait last read of the order while it was not decided: for
	// an answer if an outage covers the wait's end, not its whole length.
	var last pending
	for first := true; ; first = false {
		var w *notify.Watch
		if s.hub != nil {
			w = s.hub.Watch(id)
		}
		var err error
		left := until()
		// A waiter that will be told of the decision need not read the
		// order in full while it is not decided: at first, when the queue
		// holds its task as waiting; at a re-check (a lost announcement, or
		// a copy of the task deciding it), when the database does not have
		// it and the queue still holds its task. Both reads are coalesced
		// across waiters; the full read looks the task up on its own. In
		// one backlog run each (`bench -only backlog`, INFO commandstats)
		// the task lookups (HMGET) went from 3,669 to 1,806 and scripts
		// from 67,879 to 66,228; the drain did not change measurably.
		skip := false
		if w != nil && left > 0 {
			if first {
				skip = s.waiting(ctx, id)
			} else {
				v, derr := s.decided(ctx, id)
				if derr == nil {
					w.Stop()
					return v, nil
				}
				if errors.Is(derr, ErrNotFound) {
					// Not decided when read; its task's state read after.
					// (The first read's waiting task is no such proof: it
					// may be a redelivered copy of a decided order's.)
					if st, ok := s.held(ctx, id); ok {
						skip = true
						last.status = taskStatus(queue.TaskInfo{State: st})
					}
				}
			}
		}
		if !skip {
			var v OrderView
			v, err = s.Order(ctx, id)
			if err == nil && !v.Status.Final() {
				last = pending{status: v.Status, view: &v}
			}
			left = until()
			if (err != nil && !errors.Is(err, ErrUnavailable)) || (err == nil && v.Status.Final()) || left <= 0 || ctx.Err() != nil {
				if w != nil {
					w.Stop()
				}
				if errors.Is(err, ErrUnavailable) && last.status != "" {
					if lv, ok := s.lastRead(ctx, id, last); ok {
						return lv, nil
					}
				}
				return v, err
			}
		}
		transient := errors.Is(err, ErrUnavailable)
		recheck := time.Duration(float64(time.Second) * (0.75 + 0.5*mrand.Float64()))
		if transient {
			recheck = 250 * time.Millisecond
		}
		var woken <-chan struct{}
		if w != nil {
			woken = w.C
		}
		t := time.NewTimer(min(recheck, left))
		select {
		case <-woken:
			if o, ok := w.Outcome(); ok && inventory.Status(o.Status).Final() {
				t.Stop()
				return viewOf(o), nil
			}
		case <-t.C:
		case <-s.drain:
		case <-ctx.Done():
		}
		t.Stop()
		if w != nil {
			w.Stop()
		}
	}
}

// pending is what a wait last read of an order that was not decided: its
// status, and its view if the read was a full one.
type pending struct {
	status inventory.Status // "" if no read could tell
	view   *OrderView
}

// lastRead is the order as last read by a wait, p: the view read then, or
// one built from its task, which holds the order's fields (they never
// change), with the status read then. ok is false if neither can be had.
// A task accepted unchecked (during an outage) is no source: it may be a
// re-send, with another body, of the order decided since that read.
func (s *Service) lastRead(ctx context.Context, id string, p pending) (v OrderView, ok bool) {
	if p.view != nil {
		v = *p.view
	} else {
		ti, err := s.inspector.Lookup(ctx, id)
		if err != nil || ti.Order.Unchecked {
			return OrderView{}, false
		}
		v = queuedView(id, ti)
	}
	v.Status = p.status
	return v, true
}

// held returns the state of order id's task if the queue holds it, waiting
// or running: one coalesced read of its state.
func (s *Service) held(ctx context.Context, id string) (queue.State, bool) {
	if !ValidOrderID(id) {
		return 0, false
	}
	st, err := s.taskState(ctx, id)
	return st, err == nil && (st == queue.Waiting || st == queue.Running)
}

// Drain ends every wait of [Service.WaitOrder], running or to come: each
// answers its order's state as it stands, as if its wait had run out. A
// server calls it when it begins to shut down
// ([net/http.Server.RegisterOnShutdown]), so that long polls answer at once
// while other requests finish.
func (s *Service) Drain() { s.drainOnce.Do(func() { close(s.drain) }) }

// Close drains the service ([Service.Drain]) and waits for its background
// work to end. Call it before closing the store and Redis clients.
func (s *Service) Close() {
	s.Drain()
	s.repairs.Wait()
}

// waiting reports whether the queue holds order id's task as waiting
// (pending, scheduled, retrying): one coalesced read of its state.
func (s *Service) waiting(ctx context.Context, id string) bool {
	if !ValidOrderID(id) {
		return false
	}
	st, err := s.taskState(ctx, id)
	return err == nil && st == queue.Waiting
}

func queuedView(id string, ti queue.TaskInfo) OrderView {
	o := ti.Order
	return OrderView{ID: id, ProductID: o.ProductID, UserID: o.UserID, Quantity: o.Quantity,
		Status: taskStatus(ti), CreatedAt: o.AcceptedAt, UpdatedAt: o.AcceptedAt}
}

func viewOf(o notify.Outcome) OrderView {
	return OrderView{ID: o.OrderID, ProductID: o.ProductID, UserID: o.UserID, Quantity: o.Quantity,
		Status: inventory.Status(o.Status), Reason: o.Reason, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

// QueueStats returns the order queue's counts, or [ErrUnavailable] within
// [ReadBudget]: an admin read (GET /v1/queue, the dashboard's) on a hung
// Redis answers by then, not after go-redis's own bounds in turn.
func (s *Service) QueueStats(ctx context.Context) (queue.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, ReadBudget)
	defer cancel()
	st, err := s.inspector.Stats(ctx)
	if err != nil {
		return queue.Stats{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return st, nil
}

func (s *Service) translate(err error) error {
	switch {
	case errors.Is(err, inventory.ErrNotFound):
		return ErrNotFound
	case errors.Is(err, inventory.ErrProductExists):
		return ErrProductExists
	case errors.Is(err, inventory.ErrInvalid):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	case errors.Is(err, inventory.ErrUnavailable):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
