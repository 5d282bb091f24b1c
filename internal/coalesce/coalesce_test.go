package coalesce_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/flashsale/flashsale/internal/coalesce"
	"github.com/flashsale/flashsale/internal/testenv"
)

// recorder is a Fetch that records its batches and can be held.
type recorder struct {
	mu      sync.Mutex
	batches [][]string
	hold    chan struct{} // if set, the first fetch waits for it to close
	entered chan struct{} // closed when the first fetch has started
	once    sync.Once
	err     error
}

func newRecorder(hold bool) *recorder {
	r := &recorder{entered: make(chan struct{})}
	if hold {
		r.hold = make(chan struct{})
	}
	return r
}

func (r *recorder) fetch(ctx context.Context, keys []string) (map[string]int, error) {
	r.mu.Lock()
	first := len(r.batches) == 0
	r.batches = append(r.batches, slices.Clone(keys))
	r.mu.Unlock()
	if first {
		r.once.Do(func() { close(r.entered) })
		if r.hold != nil {
			<-r.hold
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	out := map[string]int{}
	for _, k := range keys {
		if k != "missing" {
			out[k] = len(k)
		}
	}
	return out, nil
}

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, b := range r.batches {
		out = append(out, len(b))
	}
	return out
}

func TestLoneLookupIsNotDelayed(t *testing.T) {
	t.Parallel()
	r := newRecorder(false)
	l := coalesce.New(r.fetch, 0, 0)
	for _, tt := range []struct {
		key    string
		want   int
		wantOK bool
	}{{"abc", 3, true}, {"missing", 0, false}} {
		v, ok, err := l.Load(context.Background(), tt.key)
		if err != nil || ok != tt.wantOK || v != tt.want {
			t.Errorf("Load(%q) = %d, %v, %v; want %d, %v, nil", tt.key, v, ok, err, tt.want, tt.wantOK)
		}
	}
	if got := r.sizes(); !slices.Equal(got, []int{1, 1}) {
		t.Errorf("batches %v, want one per lookup", got)
	}
}

// Lookups that arrive while a fetch runs go together into the next one,
// in batches of at most max keys, each key once.
func TestLookupsWhileBusyShareABatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		max   int
		keys  []string
		sizes []int // of the batches after the first
	}{
		{"all in one", 0, []string{"a", "bb", "ccc", "dddd", "bb"}, []int{4}},
		{"bounded by max", 2, []string{"a", "bb", "ccc", "dddd", "eeeee"}, []int{2, 2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRecorder(true)
			l := coalesce.New(r.fetch, tt.max, 0)
			var wg sync.WaitGroup
			wg.Go(func() { _, _, _ = l.Load(context.Background(), "first") })
			<-r.entered
			errs := make(chan error, len(tt.keys))
			var queued sync.WaitGroup
			for _, k := range tt.keys {
				queued.Add(1)
				wg.Go(func() {
					queued.Done()
					v, ok, err := l.Load(context.Background(), k)
					if err != nil || !ok || v != len(k) {
						errs <- fmt.Errorf("Load(%q) = %d, %v, %v", k, v, ok, err)
					}
				})
			}
			queued.Wait()
			// Wait until every lookup queues behind the held fetch.
			testenv.Eventually(t, 5*time.Second, func() error {
				if n := l.Pending(); n < len(tt.keys) {
					return fmt.Errorf("%d of %d lookups queued", n, len(tt.keys))
				}
				return nil
			})
			close(r.hold)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := r.sizes(); !slices.Equal(got[1:], tt.sizes) {
				t.Errorf("batch sizes %v, want 1 then %v", got, tt.sizes)
			}
		})
	}
}

func TestFetchErrorFailsTheBatch(t *testing.T) {
	t.Parallel()
	r := newRecorder(false)
	r.err = errors.New("down")
	l := coalesce.New(r.fetch, 0, 0)
	if _, ok, err := l.Load(context.Background(), "a"); !errors.Is(err, r.err) || ok {
		t.Fatalf("Load = %v, %v; want the fetch error", ok, err)
	}
	// A fetch that fails after finding some keys (a pipeline with one
	// command failed, rows read before the connection broke) fails them
	// too: no lookup of the batch is answered from a half-done fetch.
	partial := coalesce.New(func(ctx context.Context, keys []string) (map[string]int, error) {
		return map[string]int{keys[0]: 1}, r.err
	}, 0, 0)
	if v, ok, err := partial.Load(context.Background(), "a"); !errors.Is(err, r.err) || ok || v != 0 {
		t.Fatalf("Load of a fetch that failed after finding it = %d, %v, %v; want 0, false and the fetch error", v, ok, err)
	}
}

func TestCallerGivingUpDoesNotFailOthers(t *testing.T) {
	t.Parallel()
	r := newRecorder(true)
	l := coalesce.New(r.fetch, 0, 0)
	got := make(chan error, 1)
	go func() {
		_, ok, err := l.Load(context.Background(), "first")
		if err == nil && !ok {
			err = errors.New("not found")
		}
		got <- err
	}()
	<-r.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := l.Load(ctx, "gone"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Load = %v, want context.Canceled", err)
	}
	// A lookup whose caller had given up before it asked is not queued.
	if n := l.Pending(); n != 0 {
		t.Errorf("%d lookups queued after a Load with an ended context, want 0", n)
	}
	close(r.hold)
	if err := <-got; err != nil {
		t.Errorf("other Load = %v, want found", err)
	}
}

// Lookups whose callers gave up before their batch was taken are not
// fetched: with a slow store they would pile up ahead of live callers.
func TestAbandonedLookupsAreNotFetched(t *testing.T) {
	t.Parallel()
	r := newRecorder(true)
	l := coalesce.New(r.fetch, 4, 0)
	first := make(chan error, 1)
	go func() {
		_, _, err := l.Load(context.Background(), "first")
		first <- err
	}()
	<-r.entered // the first batch is in flight, held
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() { _, _, _ = l.Load(ctx, fmt.Sprintf("gone%d", i)) })
	}
	waitQueued(t, l, 100)
	cancel() // every one of them gives up
	wg.Wait()
	live := make(chan error, 1)
	go func() {
		_, ok, err := l.Load(context.Background(), "live")
		if err == nil && !ok {
			err = errors.New("not found")
		}
		live <- err
	}()
	waitQueued(t, l, 101)
	close(r.hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-live; err != nil {
		t.Fatalf("live lookup behind abandoned ones: %v", err)
	}
	if got := r.sizes(); !slices.Equal(got, []int{1, 1}) {
		t.Errorf("batches fetched: %v keys, want [1 1] (the first, then only the live one)", got)
	}
}

// Each Fetch runs under a deadline of its own: the timeout given, 5s when
// none is, so that a hung store fails its batch instead of stalling every
// later lookup, and a fetch is never handed a context already over.
func TestFetchRunsUnderItsTimeout(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		timeout   time.Duration
		wantAtMin time.Duration // the fetch's deadline, from its start: at least
		wantAtMax time.Duration // and at most
	}{
		{"default", 0, 4 * time.Second, 5 * time.Second},
		{"given", 200 * time.Millisecond, 0, 200 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var left time.Duration
			l := coalesce.New(func(ctx context.Context, keys []string) (map[string]int, error) {
				deadline, ok := ctx.Deadline()
				if !ok {
					return nil, errors.New("fetch without a deadline")
				}
				left = time.Until(deadline)
				if err := ctx.Err(); err != nil {
					return nil, fmt.Errorf("fetch's context already over: %w", err)
				}
				return map[string]int{keys[0]: 1}, nil
			}, 0, tt.timeout)
			if _, ok, err := l.Load(context.Background(), "a"); err != nil || !ok {
				t.Fatalf("Load = %v, %v; want found", ok, err)
			}
			if left <= tt.wantAtMin || left > tt.wantAtMax {
				t.Errorf("fetch's deadline %v ahead, want within (%v, %v]", left, tt.wantAtMin, tt.wantAtMax)
			}
		})
	}
	// A fetch that hangs until its context ends fails its batch, and the
	// loader serves the next lookup.
	hung := true
	l := coalesce.New(func(ctx context.Context, keys []string) (map[string]int, error) {
		if hung {
			hung = false
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return map[string]int{keys[0]: 1}, nil
	}, 0, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := l.Load(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		t.Fatalf("Load of a hung fetch = %v (caller's context: %v); want the fetch's deadline exceeded", err, ctx.Err())
	}
	if _, ok, err := l.Load(ctx, "b"); err != nil || !ok {
		t.Fatalf("Load after a hung fetch = %v, %v; want found", ok, err)
	}
}

// A fetch whose callers have all given up is cancelled: one that hung (a
// request lost, a partition) ran on until its timeout, and the lookups
// behind it waited as long, though the store answered at once.
func TestFetchNobodyWaitsForIsCancelled(t *testing.T) {
	t.Parallel()
	var hung atomic.Bool
	hung.Store(true)
	inFlight := make(chan struct{})
	l := coalesce.New(func(ctx context.Context, keys []string) (map[string]int, error) {
		if hung.Load() {
			close(inFlight)
			<-ctx.Done() // no reply until the fetch's context ends
			return nil, ctx.Err()
		}
		return map[string]int{keys[0]: 1}, nil
	}, 0, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	gave := make(chan error, 1)
	go func() { _, _, err := l.Load(ctx, "a"); gave <- err }()
	<-inFlight // a is fetched, and the fetch hangs
	cancel()
	if err := <-gave; !errors.Is(err, context.Canceled) {
		t.Fatalf("Load whose caller gave up = %v, want context.Canceled", err)
	}

	hung.Store(false) // the store answers again
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, ok, err := l.Load(ctx, "b"); err != nil || !ok {
		t.Fatalf("Load once the store answers = %v, %v; want found (not held behind a fetch nobody waits for)", ok, err)
	}
}

// A fetch that some caller still waits for runs on when others of its
// batch give up.
func TestFetchACallerWaitsForRunsOn(t *testing.T) {
	t.Parallel()
	unblock, release := make(chan struct{}), make(chan struct{})
	first, second := make(chan struct{}), make(chan struct{})
	l := coalesce.New(func(ctx context.Context, keys []string) (map[string]int, error) {
		if slices.Contains(keys, "blocker") {
			close(first)
			<-unblock
		} else {
			close(second)
			<-release
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out := map[string]int{}
		for _, k := range keys {
			out[k] = len(k)
		}
		return out, nil
	}, 0, time.Minute)
	go func() { _, _, _ = l.Load(context.Background(), "blocker") }()
	<-first
	// x and y queue behind the blocker's fetch, for one batch together.
	ctx, cancel := context.WithCancel(context.Background())
	gave, waited := make(chan error, 1), make(chan error, 1)
	go func() { _, _, err := l.Load(ctx, "x"); gave <- err }()
	go func() {
		_, ok, err := l.Load(context.Background(), "y")
		if err == nil && !ok {
			err = errors.New("not found")
		}
		waited <- err
	}()
	waitQueued(t, l, 2)
	close(unblock)
	<-second // x and y are fetched
	cancel()
	if err := <-gave; !errors.Is(err, context.Canceled) {
		t.Fatalf("Load whose caller gave up = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-waited; err != nil {
		t.Fatalf("Load of a caller still waiting = %v, want found", err)
	}
}

// A batch holds up to max lookups whose callers still wait: those whose
// callers gave up are skipped without taking a place, or a queue with
// abandoned lookups at its head would be fetched in more round trips than
// its live lookups need.
func TestAbandonedLookupsTakeNoPlaceInABatch(t *testing.T) {
	t.Parallel()
	r := newRecorder(true)
	l := coalesce.New(r.fetch, 2, 0)
	first := make(chan error, 1)
	go func() { _, _, err := l.Load(context.Background(), "first"); first <- err }()
	<-r.entered // the first batch is in flight, held
	// The abandoned lookup queues first, at the head.
	ctx, cancel := context.WithCancel(context.Background())
	gave := make(chan error, 1)
	go func() { _, _, err := l.Load(ctx, "gone"); gave <- err }()
	waitQueued(t, l, 1)
	errs := make(chan error, 2)
	for _, k := range []string{"a", "bb"} {
		go func() {
			v, ok, err := l.Load(context.Background(), k)
			if err == nil && (!ok || v != len(k)) {
				err = fmt.Errorf("Load(%q) = %d, %v; want %d, true", k, v, ok, len(k))
			}
			errs <- err
		}()
	}
	waitQueued(t, l, 3)
	cancel()
	if err := <-gave; !errors.Is(err, context.Canceled) {
		t.Fatalf("Load whose caller gave up = %v, want context.Canceled", err)
	}
	close(r.hold)
	for _, ch := range []chan error{first, errs, errs} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if got := r.sizes(); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("batches fetched: %v keys, want [1 2] (the first, then both live lookups: max 2)", got)
	}
}

// A queue whose every lookup was abandoned costs no fetch: a Fetch with no
// keys would still be a round trip (an SQL query, a Redis pipeline) for
// nobody.
func TestOnlyAbandonedLookupsAreNotFetched(t *testing.T) {
	t.Parallel()
	r := newRecorder(true)
	l := coalesce.New(r.fetch, 0, 0)
	first := make(chan error, 1)
	go func() { _, _, err := l.Load(context.Background(), "first"); first <- err }()
	<-r.entered // the first batch is in flight, held
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { _, _, _ = l.Load(ctx, fmt.Sprint("gone", i)) })
	}
	waitQueued(t, l, 3)
	cancel() // every one of them gives up
	wg.Wait()
	close(r.hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The abandoned lookups are taken (and dropped) before a later one is.
	waitQueued(t, l, 0)
	if _, ok, err := l.Load(context.Background(), "live"); err != nil || !ok {
		t.Fatalf("Load(live) = %v, %v; want found", ok, err)
	}
	if got := r.sizes(); !slices.Equal(got, []int{1, 1}) {
		t.Errorf("batches fetched: %v keys, want [1 1] (the first, then the live one; none for the abandoned)", got)
	}
}

// A fetch is cancelled once every caller of its batch has given up, when
// they give up together (one request's context ending for all of them, a
// server shutting down): each one's leaving counts, none is lost to
// another's.
func TestFetchAllItsCallersLeaveAtOnceIsCancelled(t *testing.T) {
	t.Parallel()
	const n = 8
	var hung atomic.Bool
	hung.Store(true)
	unblock, first, inFlight := make(chan struct{}), make(chan struct{}), make(chan struct{})
	l := coalesce.New(func(ctx context.Context, keys []string) (map[string]int, error) {
		switch {
		case slices.Contains(keys, "blocker"):
			close(first)
			<-unblock
		case hung.Load():
			close(inFlight)
			<-ctx.Done() // no reply until the fetch's context ends
			return nil, ctx.Err()
		}
		out := map[string]int{}
		for _, k := range keys {
			out[k] = len(k)
		}
		return out, nil
	}, 0, time.Minute)
	go func() { _, _, _ = l.Load(context.Background(), "blocker") }()
	<-first
	// n lookups queue behind the blocker's fetch, for one batch together.
	ctx, cancel := context.WithCancel(context.Background())
	gave := make(chan error, n)
	for i := range n {
		go func() { _, _, err := l.Load(ctx, fmt.Sprint("k", i)); gave <- err }()
	}
	waitQueued(t, l, n)
	close(unblock)
	<-inFlight // their batch is fetched, and the fetch hangs
	cancel()   // they all give up at once
	for range n {
		if err := <-gave; !errors.Is(err, context.Canceled) {
			t.Fatalf("Load whose caller gave up = %v, want context.Canceled", err)
		}
	}

	hung.Store(false) // the store answers again
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer lcancel()
	if _, ok, err := l.Load(lctx, "b"); err != nil || !ok {
		t.Fatalf("Load once the store answers = %v, %v; want found (not held behind a fetch nobody waits for)", ok, err)
	}
}

// A fetch's context ends when the fetch returns, not at its timeout: with
// one batch after another under load, each would otherwise hold its timer
// and context for the whole timeout.
func TestFetchContextEndsWithTheFetch(t *testing.T) {
	t.Parallel()
	ctxs := make(chan context.Context, 1)
	l := coalesce.New(func(ctx context.Context, keys []string) (map[string]int, error) {
		ctxs <- ctx
		return map[string]int{keys[0]: 1}, nil
	}, 0, time.Hour)
	if _, ok, err := l.Load(context.Background(), "a"); err != nil || !ok {
		t.Fatalf("Load = %v, %v; want found", ok, err)
	}
	ctx := <-ctxs
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch's context not ended 10s after the fetch returned (its timeout: 1h)")
	}
}

// The loader keeps nothing of a lookup it has answered: a burst of lookups
// grows the queue's backing array, which lives on, and the calls left in
// it would keep their values (orders, read for callers long gone).
func TestAnsweredLookupsAreNotRetained(t *testing.T) {
	t.Parallel()
	type order struct{ id string }
	l := coalesce.New(func(ctx context.Context, keys []string) (map[string]*order, error) {
		out := map[string]*order{}
		for _, k := range keys {
			out[k] = &order{id: k}
		}
		return out, nil
	}, 0, 0)
	o, ok, err := l.Load(context.Background(), "a")
	if err != nil || !ok {
		t.Fatalf("Load = %v, %v; want found", ok, err)
	}
	w := weak.Make(o)
	o = nil
	testenv.Eventually(t, 5*time.Second, func() error {
		runtime.GC()
		if w.Value() != nil {
			return errors.New("the answered value is still reachable from the loader")
		}
		return nil
	})
	runtime.KeepAlive(l)
}

// waitQueued waits until l holds n lookups queued behind its fetch.
func waitQueued[K comparable, V any](t *testing.T, l *coalesce.Loader[K, V], n int) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		if got := l.Pending(); got != n {
			return fmt.Errorf("%d lookups queued, want %d", got, n)
		}
		return nil
	})
}
