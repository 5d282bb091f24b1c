// Package queue is the contract between the API and the workers: the order
// task, how it is enqueued into asynq, and how a queued order is looked up.
//
// An accepted order is one asynq task whose task id is the order id, so the
// queue itself refuses a second task for an order while the first exists
// ([ErrDuplicate]). Once a worker has recorded the outcome in PostgreSQL the
// task is deleted; a later duplicate is harmless, because the worker finds
// the outcome already recorded and changes nothing.
package queue

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flashsale/flashsale/internal/calldeadline"
	"github.com/flashsale/flashsale/internal/redisurl"
)

// TypeOrder is the asynq task type of an order.
const TypeOrder = "order:place"

var (
	// ErrDuplicate is returned by [Producer.Enqueue] when a task for the
	// order id is already in the queue (pending, running, retrying or dead).
	ErrDuplicate = errors.New("queue: order already queued")
	// ErrNotFound is returned by [Inspector.Lookup] when the queue holds no
	// task for the order id.
	ErrNotFound = errors.New("queue: not found")
	// ErrUnavailable wraps failures to reach the queue's Redis.
	ErrUnavailable = errors.New("queue: unavailable")
	// ErrBadPayload is returned by [Decode] for a task that is not an order.
	ErrBadPayload = errors.New("queue: bad order payload")
	// ErrRescueDepth is returned by [Producer.Rescue] for a task that is
	// itself the MaxRescueDepth-th rescue of its order.
	ErrRescueDepth = errors.New("queue: order rescued too many times")
)

// Order is the task payload: everything a worker needs to decide the order.
type Order struct {
	ID             string    `json:"id"`
	ProductID      string    `json:"product_id"`
	UserID         string    `json:"user_id"`
	Quantity       int       `json:"quantity"`
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	AcceptedAt     time.Time `json:"accepted_at"`
	// Unchecked: a keyed order accepted while PostgreSQL could not say
	// whether its key's order was decided (an outage). The task may stand
	// for an order decided long ago, with another body: until PostgreSQL
	// answers, it tells nothing of the order's status. Workers ignore it.
	Unchecked bool `json:"unchecked,omitempty"`
}

// Encode returns the task for o.
func Encode(o Order) (*asynq.Task, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("queue: encode order %q: %w", o.ID, err)
	}
	return asynq.NewTask(TypeOrder, b), nil
}

// Decode reads an order task's payload. It returns [ErrBadPayload] for
// anything that is not a complete order.
func Decode(payload []byte) (Order, error) {
	var o Order
	if err := json.Unmarshal(payload, &o); err != nil {
		return Order{}, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if o.ID == "" || o.ProductID == "" || o.UserID == "" || o.Quantity < 1 || o.Quantity > math.MaxInt32 {
		// The upper bound is the orders table's integer column: a larger
		// quantity could never be stored as ordered (a failed order's
		// is recorded clamped: inventory.Store.RecordFailed).
		return o, fmt.Errorf("%w: missing field or quantity not from 1 to %d", ErrBadPayload, math.MaxInt32)
	}
	for _, f := range [...]string{o.ID, o.ProductID, o.UserID, o.IdempotencyKey} {
		// Nor could a string PostgreSQL's text columns refuse (a NUL byte;
		// json.Unmarshal already made any invalid UTF-8 valid) or one too
		// long for their indexes: checked here, where a task enters the
		// worker, such an order fails alone, as a bad payload, before any
		// round, scan or sweep sends it to PostgreSQL with other orders.
		// Nothing of it is returned: nothing of it can be recorded.
		if len(f) > MaxFieldBytes || strings.IndexByte(f, 0) >= 0 {
			return Order{}, fmt.Errorf("%w: a field longer than %d bytes or holding a NUL byte", ErrBadPayload, MaxFieldBytes)
		}
	}
	return o, nil
}

// MaxFieldBytes bounds each string field of an order task ([Decode]): the
// API's are far shorter (ids of 64 bytes at most, Idempotency-Keys of 255),
// and two together fit in a PostgreSQL index row (about 2,700 bytes).
const MaxFieldBytes = 1024

// Options are the task settings, shared by the producer and the worker.
type Options struct {
	// Queue is the asynq queue name; default "orders".
	Queue string
	// MaxRetry is how many times a task whose handler failed with a
	// retryable error is tried again; default 25. With the worker's backoff
	// (200ms doubling to 10s) that rides out about three minutes of a
	// database or lock outage before an order is recorded as failed.
	MaxRetry int
	// Timeout bounds one run of the handler; default 30s. asynq stores it
	// in whole seconds.
	Timeout time.Duration
}

// WithDefaults fills zero fields with their defaults.
func (o Options) WithDefaults() Options {
	if o.Queue == "" {
		o.Queue = "orders"
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = 25
	}
	if o.Timeout < time.Second {
		o.Timeout = 30 * time.Second
	}
	return o
}

// Producer enqueues orders.
type Producer struct {
	client *asynq.Client
	opts   Options
}

// NewProducer enqueues through client, which the caller owns and closes.
func NewProducer(client *asynq.Client, opts Options) *Producer {
	return &Producer{client: client, opts: opts.WithDefaults()}
}

// Enqueue adds the order's task to the queue. It returns [ErrDuplicate] when
// a task for this order id is already queued, and [ErrUnavailable] when
// Redis cannot be reached.
func (p *Producer) Enqueue(ctx context.Context, o Order) error {
	task, err := Encode(o)
	if err != nil {
		return err
	}
	_, err = p.client.EnqueueContext(ctx, task,
		asynq.TaskID(o.ID), asynq.Queue(p.opts.Queue),
		asynq.MaxRetry(p.opts.MaxRetry), asynq.Timeout(p.opts.Timeout))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return fmt.Errorf("enqueue order %q: %w", o.ID, ErrDuplicate)
	default:
		return fmt.Errorf("enqueue order %q: %w: %w", o.ID, ErrUnavailable, err)
	}
}

// RescueSuffix ends the task id of a rescue task: a second task for an
// order whose task was stranded (its worker crashed, or never got it).
const RescueSuffix = ":rescue"

// MaxRescueDepth bounds a chain of rescues: a rescue task stranded in turn
// is rescued as id+RescueSuffix+RescueSuffix, and so on, up to this many
// suffixes; a deeper one is left to asynq's own recovery of its lease.
const MaxRescueDepth = 4

// TaskIDs returns every task id an order's task can have: the order's id,
// then its chain of rescue tasks'.
func TaskIDs(orderID string) []string {
	ids := make([]string, MaxRescueDepth+1)
	ids[0] = orderID
	for k := 1; k <= MaxRescueDepth; k++ {
		ids[k] = ids[k-1] + RescueSuffix
	}
	return ids
}

// Rescue enqueues another task for order o, whose task stranded is stuck,
// under the task id stranded+RescueSuffix: derived from the stuck task, so
// that rescuing it twice queues one task ([ErrDuplicate] the second time),
// and a stuck rescue task can itself be rescued. Deciding the order twice
// is harmless: the second decision is a replay.
func (p *Producer) Rescue(ctx context.Context, stranded string, o Order) error {
	if strings.Count(stranded, RescueSuffix) >= MaxRescueDepth {
		return fmt.Errorf("rescue order %q: %w", o.ID, ErrRescueDepth)
	}
	task, err := Encode(o)
	if err != nil {
		return err
	}
	_, err = p.client.EnqueueContext(ctx, task,
		asynq.TaskID(stranded+RescueSuffix), asynq.Queue(p.opts.Queue),
		asynq.MaxRetry(p.opts.MaxRetry), asynq.Timeout(p.opts.Timeout))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return fmt.Errorf("rescue order %q: %w", o.ID, ErrDuplicate)
	default:
		return fmt.Errorf("rescue order %q: %w: %w", o.ID, ErrUnavailable, err)
	}
}

// ActiveTask is an order task that asynq has handed to a worker.
type ActiveTask struct {
	// TaskID is the task's id: the order id, or the order id with
	// [RescueSuffix].
	TaskID string
	Order  Order
	// Orphaned: asynq's lease on the task has lapsed (no worker renewed it
	// for 30s).
	Orphaned bool
	// Held: a live asynq server lists the task among the ones it is
	// running. Servers write that list every 5s (asynq's heartbeat) and it
	// expires 10s after the last write, so a task dequeued in the last 5s
	// may not be listed yet; a task that stays unlisted for longer has no
	// live holder (its worker died, or the dequeue's reply was lost).
	Held bool
}

// ArchivedOrder is an order task in asynq's archive.
type ArchivedOrder struct {
	// TaskID is the task's id: the order id, or the order id with
	// [RescueSuffix].
	TaskID string
	Order  Order
	// LeaseExpired: asynq's recoverer archived it, out of retries, because
	// its lease lapsed (a worker died running its last try), not because a
	// handler failed it. When a whole fleet restarts more than 30s after
	// such a crash, the recoverer (which runs as a server starts) archives
	// the task before any rescue scan could queue it again.
	LeaseExpired bool
}

// Archived lists the orders whose tasks asynq archived (dead: out of
// retries, or refused as permanent failures), page page (from 1) of
// pageSize tasks in the archive's order, oldest first. last is true when
// there is no page after this one. Its error is [ErrUnavailable].
func (i *Inspector) Archived(ctx context.Context, page, pageSize int) (orders []ArchivedOrder, last bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, ended("list archived tasks", err)
	}
	tasks, err := i.in.ListArchivedTasks(i.queue, asynq.Page(page), asynq.PageSize(pageSize))
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("list archived tasks: %w: %w", ErrUnavailable, err)
	}
	orders = make([]ArchivedOrder, 0, len(tasks))
	for _, t := range tasks {
		if o, err := Decode(t.Payload); err == nil {
			orders = append(orders, ArchivedOrder{TaskID: t.ID, Order: o, LeaseExpired: t.LastErr == asynq.ErrLeaseExpired.Error()})
		}
	}
	return orders, len(tasks) < pageSize, nil
}

// HeartbeatInterval is how often an asynq v0.26 server renews its leases
// and rewrites the list of tasks it runs (not configurable in asynq).
const HeartbeatInterval = 5 * time.Second

// Active lists up to limit tasks of the queue that asynq has handed to a
// worker, with whether a live server holds each. Its error is
// [ErrUnavailable].
func (i *Inspector) Active(ctx context.Context, limit int) ([]ActiveTask, error) {
	const pageSize = 500
	var out []ActiveTask
	for page := 1; len(out) < limit; page++ {
		if err := ctx.Err(); err != nil {
			return out, ended("list active tasks", err)
		}
		tasks, err := i.in.ListActiveTasks(i.queue, asynq.PageSize(pageSize), asynq.Page(page))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("list active tasks: %w: %w", ErrUnavailable, err)
		}
		for _, t := range tasks {
			if o, err := Decode(t.Payload); err == nil && len(out) < limit {
				out = append(out, ActiveTask{TaskID: t.ID, Order: o, Orphaned: t.IsOrphaned})
			}
		}
		if len(tasks) < pageSize {
			break
		}
	}
	if len(out) == 0 {
		return out, nil
	}
	// Listed after the tasks: a task dequeued in between is at worst seen
	// unheld once, which the caller's grace period absorbs.
	servers, err := i.in.Servers()
	if err != nil {
		return out, fmt.Errorf("list servers: %w: %w", ErrUnavailable, err)
	}
	held := make(map[string]bool)
	for _, s := range servers {
		for _, w := range s.ActiveWorkers {
			if w.Queue == i.queue {
				held[w.TaskID] = true
			}
		}
	}
	for k := range out {
		out[k].Held = held[out[k].TaskID]
	}
	return out, nil
}

// ended is the error of a read whose context ended (err), before it began
// or while it waited for Redis: ErrUnavailable, as the queue could not be
// read in time, with err kept for errors.Is. A bare context error matched
// none of the package's sentinels, unlike every other failed read.
func ended(what string, err error) error {
	return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
}

// State is where a queued order's task is.
type State int

// Task states, as buyers see them.
const (
	// Waiting: pending, scheduled for a retry, or retrying.
	Waiting State = iota + 1
	// Running: a worker holds the task.
	Running
	// Dead: retries exhausted or failed permanently (archived by asynq).
	Dead
	// Done: the handler succeeded (only seen with task retention).
	Done
)

// TaskInfo is what the queue knows about an order's task.
type TaskInfo struct {
	State   State
	Order   Order
	LastErr string
	Retried int
}

// Inspector reads the queue's state.
type Inspector struct {
	in    *asynq.Inspector
	rdb   redis.UniversalClient
	queue string
	// stats runs one read of the counts at a time (see Stats): each left
	// running by its callers holds a connection until its bound.
	stats singleflight.Group
}

// NewInspector reads the queue through rdb, a client of the queue's Redis
// that the caller owns and closes.
func NewInspector(rdb redis.UniversalClient, opts Options) *Inspector {
	return &Inspector{in: asynq.NewInspectorFromRedisClient(rdb), rdb: rdb, queue: opts.WithDefaults().Queue}
}

// States returns the state of each id's task, 0 where the queue holds
// none, in one round trip for all of them. It reads the state field of
// asynq v0.26's task hashes (asynq:{<queue>}:t:<id>) directly: asynq's
// Inspector has no batch lookup, and one GetTaskInfo per order was a fifth
// of an API's work on a sold-out product (see sale.Service). A buried order
// ([Inspector.Bury]) with no task is Dead. Use [Inspector.Lookup] for the
// task itself.
func (i *Inspector) States(ctx context.Context, ids []string) ([]State, error) {
	out := make([]State, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	cmds := make([]*redis.StringCmd, len(ids))
	var anyBuried *redis.IntCmd
	_, err := i.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, id := range ids {
			cmds[k] = p.HGet(ctx, "asynq:{"+i.queue+"}:t:"+id, "state")
		}
		// Almost always none: the ids without a task are asked about
		// below only when some order is buried.
		anyBuried = p.Exists(ctx, i.buriedKey())
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("task states: %w: %w", ErrUnavailable, err)
	}
	// The pipeline's error is only its first command's: a missing task
	// (redis.Nil) there may hide a dropped connection further on, whose
	// commands must not read as "no task".
	var missing []int
	for k, c := range cmds {
		switch err := c.Err(); {
		case errors.Is(err, redis.Nil):
			missing = append(missing, k) // no such task
			continue
		case err != nil:
			return nil, fmt.Errorf("task states of %d orders: %w: %w", len(ids), ErrUnavailable, err)
		}
		out[k] = stateOf(c.Val())
	}
	if err := anyBuried.Err(); err != nil {
		return nil, fmt.Errorf("task states of %d orders: %w: %w", len(ids), ErrUnavailable, err)
	}
	if len(missing) == 0 || anyBuried.Val() == 0 {
		return out, nil
	}
	buried := make([]*redis.BoolCmd, len(missing))
	if _, err := i.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for n, k := range missing {
			buried[n] = p.HExists(ctx, i.buriedKey(), ids[k])
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("task states of %d orders: %w: %w", len(ids), ErrUnavailable, err)
	}
	for n, k := range missing {
		if buried[n].Val() {
			out[k] = Dead // buried, with no task: as its archived task would be
		}
	}
	return out, nil
}

// stateOf maps asynq's task states, as stored in its task hash or as
// asynq.TaskState.String() names them, to ours.
func stateOf(asynqState string) State {
	switch asynqState {
	case "active":
		return Running
	case "archived":
		return Dead
	case "completed":
		return Done
	}
	return Waiting // pending, scheduled, retry, aggregating
}

// Lookup returns the task of order id, [ErrNotFound] when the queue holds
// none, or [ErrUnavailable]. It answers by the time ctx ends.
func (i *Inspector) Lookup(ctx context.Context, id string) (TaskInfo, error) {
	what := fmt.Sprintf("look up order %q", id)
	if err := ctx.Err(); err != nil {
		return TaskInfo{}, ended(what, err)
	}
	// The task hash of asynq v0.26 (what its GetTaskInfo reads), read under
	// ctx: asynq's call takes no context, so each lookup whose caller gave
	// up (a long poll's bounded read, while Redis hangs) ran on until
	// go-redis gave up, holding a connection; many long polls held many.
	// With a client whose calls end at their context's deadline
	// ([NewRedisClient]'s) the read now ends with ctx; with any other, the
	// caller still stops waiting for it then.
	type reply struct {
		vals []any
		err  error
	}
	ch := make(chan reply, 1)
	go func() {
		vals, err := i.rdb.HMGet(ctx, "asynq:{"+i.queue+"}:t:"+id, "msg", "state").Result()
		ch <- reply{vals, err}
	}()
	var r reply
	select {
	case r = <-ch:
	case <-ctx.Done():
		return TaskInfo{}, ended(what, ctx.Err())
	}
	if r.err != nil && ctx.Err() != nil {
		return TaskInfo{}, ended(what, ctx.Err()) // the read ended with ctx
	}
	if r.err != nil {
		return TaskInfo{}, fmt.Errorf("%s: %w: %w", what, ErrUnavailable, r.err)
	}
	msg, _ := r.vals[0].(string)
	state, _ := r.vals[1].(string)
	if msg == "" {
		return i.lookupBuried(ctx, id)
	}
	payload, retried, lastErr, err := taskMessage([]byte(msg))
	if err != nil {
		// As asynq's GetTaskInfo, which failed on such a task.
		return TaskInfo{}, fmt.Errorf("%s: %w: task message: %w", what, ErrUnavailable, err)
	}
	ti := TaskInfo{LastErr: lastErr, Retried: retried, State: stateOf(state)}
	ti.Order, _ = Decode(payload) // a bad payload still has a state
	return ti, nil
}

// Withdraw deletes order id's task if no worker has taken it yet
// (pending), and reports whether it did; a task in any other state, or
// none, is left as it is (false). It is for a task found to duplicate an
// order already decided, which a worker would only find decided: removed,
// it tells no reader the order is still queued; or for one to be queued
// again with another payload (accepted during an outage). Its error is
// [ErrUnavailable]; Redis may have run it all the same (its reply lost).
func (i *Inspector) Withdraw(ctx context.Context, id string) (bool, error) {
	p := "asynq:{" + i.queue + "}:"
	n, err := withdrawScript.Run(ctx, i.rdb, []string{p + "t:" + id, p + "pending"}, id).Int()
	if err != nil {
		return false, fmt.Errorf("withdraw order %q: %w: %w", id, ErrUnavailable, err)
	}
	return n == 1, nil
}

// withdrawScript deletes a pending task; see withdraw.lua.
var withdrawScript = redis.NewScript(withdrawSrc)

//go:embed withdraw.lua
var withdrawSrc string

// taskMessage reads what Lookup reports of an asynq v0.26 task message
// (its internal TaskMessage, a protocol buffer): payload (field 2),
// retried (6) and error_msg (7), the last try's error.
func taskMessage(b []byte) (payload []byte, retried int, lastErr string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, "", protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.BytesType:
			payload, n = protowire.ConsumeBytes(b)
		case num == 6 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			retried = int(int32(v))
		case num == 7 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			lastErr = string(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, 0, "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	return payload, retried, lastErr, nil
}

// sentinelOptions completes what asynq makes of a redis-sentinel:// URL: it
// gives the URL's password to the sentinels only and ignores the database,
// so a password-protected primary refused every command (NOAUTH) and /2
// meant database 0.
func sentinelOptions(o asynq.RedisFailoverClientOpt, u *url.URL) (asynq.RedisFailoverClientOpt, error) {
	if u.User != nil {
		o.SentinelUsername = u.User.Username()
		o.Username = o.SentinelUsername
		o.Password = o.SentinelPassword
	}
	q := u.Query()
	if q.Has("username") {
		o.Username = q.Get("username")
	}
	if q.Has("password") {
		o.Password = q.Get("password")
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return o, errors.New("queue: redis-sentinel URL: the path must be a database number")
		}
		o.DB = n
	}
	return o, nil
}

// Stats counts the queue's tasks by state.
type Stats struct {
	Queue     string        `json:"queue"`
	Size      int           `json:"size"` // all tasks but completed and archived
	Pending   int           `json:"pending"`
	Active    int           `json:"active"`
	Scheduled int           `json:"scheduled"`
	Retry     int           `json:"retry"`
	Archived  int           `json:"archived"`
	Completed int           `json:"completed"`
	Processed int           `json:"processed_today"`
	Failed    int           `json:"failed_today"`
	Latency   time.Duration `json:"-"` // age of the oldest pending task
	LatencyMS int64         `json:"latency_ms"`
	Paused    bool          `json:"paused"`
}

// Stats returns the queue's counts, or [ErrUnavailable]; it answers by the
// time ctx ends. A queue that never held a task is empty.
//
// Callers share the read in flight rather than each start one: polls
// during an outage do not pile up reads, each holding a connection, and
// many dashboards polling at once do not each read asynq's lists. The
// shared read has its own bound, [StatsTimeout], however long its callers
// would wait: with asynq's Inspector (whose calls take no context) it ran
// on until go-redis gave up (its read timeout, 3s by default or what the
// URL's read_timeout sets, once per try), and every caller meanwhile joined
// it. A read whose request was lost with its connection (a partition, a
// failover) then kept Stats unavailable that long after Redis answered
// again. The bound needs a client whose calls end at their context's
// deadline, as [NewRedisClient]'s do.
func (i *Inspector) Stats(ctx context.Context) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, ended("queue stats", err)
	}
	ch := i.stats.DoChan("", func() (any, error) {
		// Not the first caller's context: one caller giving up must not
		// fail the others.
		rctx, cancel := context.WithTimeout(context.Background(), StatsTimeout)
		defer cancel()
		return i.readStats(rctx)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Stats{}, r.Err
		}
		return r.Val.(Stats), nil
	case <-ctx.Done():
		return Stats{}, ended("queue stats", ctx.Err())
	}
}

// StatsTimeout bounds the read of [Inspector.Stats], shared by its
// callers: a few counts in one script, which a Redis that answers at all
// returns in well under a millisecond.
const StatsTimeout = time.Second

// statsScript reads the counts; see stats.lua.
var statsScript = redis.NewScript(statsSrc)

//go:embed stats.lua
var statsSrc string

// readStats reads the counts as asynq v0.26's GetQueueInfo does (its
// layout of a queue's keys), in one script run under ctx.
func (i *Inspector) readStats(ctx context.Context) (Stats, error) {
	now := time.Now()
	day := now.UTC().Format("2006-01-02") // asynq's daily counters
	p := "asynq:{" + i.queue + "}:"
	keys := []string{p + "pending", p + "active", p + "scheduled", p + "retry", p + "archived", p + "completed",
		p + "processed:" + day, p + "failed:" + day, p + "paused", p + "groups"}
	res, err := statsScript.Run(ctx, i.rdb, keys, p+"t:", p+"g:").Slice()
	if err != nil {
		return Stats{}, fmt.Errorf("queue stats: %w: %w", ErrUnavailable, err)
	}
	var n [10]int
	var since int64
	ok := len(res) == len(n)+1
	for k := 0; ok && k < len(n); k++ {
		var v int64
		v, ok = res[k].(int64)
		n[k] = int(v)
	}
	if ok {
		s, isString := res[len(n)].(string)
		since, err = strconv.ParseInt(s, 10, 64)
		ok = isString && err == nil
	}
	if !ok {
		return Stats{}, fmt.Errorf("queue stats: %w: unexpected reply %v", ErrUnavailable, res)
	}
	st := Stats{
		Queue: i.queue, Pending: n[0], Active: n[1], Scheduled: n[2], Retry: n[3], Archived: n[4], Completed: n[5],
		Processed: n[6], Failed: n[7], Paused: n[8] != 0,
		// As asynq's Size, without its archived and completed tasks: they
		// are done.
		Size: n[0] + n[1] + n[2] + n[3] + n[9],
	}
	if since != 0 {
		st.Latency = now.Sub(time.Unix(0, since))
		st.LatencyMS = st.Latency.Milliseconds()
	}
	return st, nil
}

// ParseRedisURL turns a Redis URL into asynq connection options. Besides
// asynq's own schemes (redis://, rediss://, redis-socket://,
// redis-sentinel://host1,host2?master=name) it accepts
// redis-cluster://host1:port,host2:port for a Redis Cluster. poolSize, when
// positive, sets the connection pool size. Errors never show the URL, which
// may hold a password.
//
// A redis-sentinel:// URL reads as
// redis-sentinel://[user:password@]s1:26379,s2:26379[/db]?master=name[&username=u][&password=p]:
// the user and password before the hosts authenticate to the sentinels, as
// asynq has it, and also to the Redis servers they name, unless username
// and password parameters give those servers' own (go-redis's convention
// for a failover URL). /db selects the database, as in redis://.
//
// A redis:// or rediss:// URL may set pool_size (which wins over poolSize),
// dial_timeout, read_timeout and write_timeout, with go-redis's meaning (as
// the lock's URLs do); every other parameter, of any scheme, is refused
// rather than ignored: asynq reads none of them, and an operator who set
// one would otherwise run without it unawares.
func ParseRedisURL(raw string, poolSize int) (asynq.RedisConnOpt, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error quotes the whole URL, password included.
		return nil, errors.New("queue: redis URL does not parse (a password with special characters must be percent-encoded)")
	}
	if err := checkURLParams(u); err != nil {
		return nil, err
	}
	if u.Scheme == "redis-cluster" || u.Scheme == "redis-sentinel" {
		// Caught here rather than at the first connection attempt.
		addrs := strings.Split(u.Host, ",")
		if slices.Contains(addrs, "") {
			return nil, fmt.Errorf("queue: redis URL: %s:// needs host:port[,host:port...]", u.Scheme)
		}
		if u.Scheme == "redis-sentinel" && u.Query().Get("master") == "" {
			return nil, fmt.Errorf("queue: redis URL: redis-sentinel:// needs ?master=<name>")
		}
	}
	if u.Scheme == "redis-cluster" {
		opt := asynq.RedisClusterClientOpt{Addrs: strings.Split(u.Host, ",")}
		if u.User != nil {
			opt.Username = u.User.Username()
			opt.Password, _ = u.User.Password()
		}
		return opt, nil
	}
	opt, err := asynq.ParseRedisURI(raw)
	if err != nil {
		return nil, fmt.Errorf("queue: redis URL: %w", err)
	}
	if u.User != nil && u.User.Username() != "" {
		switch o := opt.(type) {
		case asynq.RedisClientOpt:
			o.Username = u.User.Username()
			opt = o
		}
	}
	if o, ok := opt.(asynq.RedisFailoverClientOpt); ok {
		if opt, err = sentinelOptions(o, u); err != nil {
			return nil, err
		}
	}
	if poolSize > 0 {
		switch o := opt.(type) {
		case asynq.RedisClientOpt:
			o.PoolSize = poolSize
			opt = o
		case asynq.RedisFailoverClientOpt:
			o.PoolSize = poolSize
			opt = o
		}
	}
	if o, ok := opt.(asynq.RedisClientOpt); ok && u.RawQuery != "" && (u.Scheme == "redis" || u.Scheme == "rediss") {
		if opt, err = clientParams(o, raw, u.Query()); err != nil {
			return nil, err
		}
	}
	return opt, nil
}

// urlParams returns the query parameters ParseRedisURL reads for a
// scheme, and false for a scheme it does not know.
func urlParams(scheme string) ([]string, bool) {
	switch scheme {
	case "redis", "rediss":
		return []string{"pool_size", "dial_timeout", "read_timeout", "write_timeout"}, true
	case "redis-socket":
		return []string{"db"}, true
	case "redis-sentinel":
		return []string{"master", "username", "password"}, true
	case "redis-cluster":
		return nil, true
	}
	return nil, false
}

// checkURLParams refuses a query parameter that u's scheme does not read.
// The error names the parameter, never its value (it may be a password).
func checkURLParams(u *url.URL) error {
	known, ok := urlParams(u.Scheme)
	if !ok || u.RawQuery == "" {
		return nil // an unknown scheme is asynq's to refuse
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return errors.New("queue: redis URL: its query does not parse")
	}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		if !slices.Contains(known, k) {
			if len(known) == 0 {
				return fmt.Errorf("queue: redis URL: parameter %q is not supported (%s:// takes none)", k, u.Scheme)
			}
			return fmt.Errorf("queue: redis URL: parameter %q is not supported (%s:// takes %s)", k, u.Scheme, strings.Join(known, ", "))
		}
	}
	return nil
}

// clientParams sets o's pool size and timeouts from a redis:// URL's
// parameters, parsed by go-redis (so they mean what they mean in a lock
// URL: a Go duration or whole seconds, -1 for none; none is refused for
// dial_timeout, which go-redis cannot honour).
func clientParams(o asynq.RedisClientOpt, raw string, q url.Values) (asynq.RedisClientOpt, error) {
	ro, err := redis.ParseURL(raw)
	if err != nil {
		return o, fmt.Errorf("queue: redis URL: %w", err)
	}
	if err := redisurl.CheckValues(ro, q); err != nil {
		return o, fmt.Errorf("queue: redis URL: %w", err)
	}
	if q.Has("pool_size") {
		o.PoolSize = ro.PoolSize
	}
	if q.Has("dial_timeout") {
		o.DialTimeout = ro.DialTimeout
	}
	if q.Has("read_timeout") {
		o.ReadTimeout = ro.ReadTimeout
	}
	if q.Has("write_timeout") {
		o.WriteTimeout = ro.WriteTimeout
	}
	return o, nil
}

// NewRedisClient returns a go-redis client for opt, as opt's MakeRedisClient
// does, but whose calls also end at their context's deadline
// (ContextTimeoutEnabled; the deadline never extends go-redis's own
// ReadTimeout): a request that bounds its reads, as a long poll does, is
// answered in time even when Redis hangs. Close it when done.
func NewRedisClient(opt asynq.RedisConnOpt) (redis.UniversalClient, error) {
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		return redis.NewClient(&redis.Options{
			Network: o.Network, Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB,
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			PoolSize: o.PoolSize, TLSConfig: o.TLSConfig, ContextTimeoutEnabled: true,
		}), nil
	case asynq.RedisFailoverClientOpt:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: o.MasterName, SentinelAddrs: o.SentinelAddrs,
			SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword,
			Username: o.Username, Password: o.Password, DB: o.DB,
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			PoolSize: o.PoolSize, TLSConfig: o.TLSConfig, ContextTimeoutEnabled: true,
		}), nil
	case asynq.RedisClusterClientOpt:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: o.Addrs, MaxRedirects: o.MaxRedirects, Username: o.Username, Password: o.Password,
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			TLSConfig: o.TLSConfig, ContextTimeoutEnabled: true,
		}), nil
	}
	return nil, fmt.Errorf("queue: unsupported Redis connection options %T", opt)
}

// CallTimeout returns opt, whose clients ([NewRedisClient]'s) end every
// call within timeout. It is for asynq's Inspector on a client of its own,
// whose calls take no context, where its caller stops waiting after
// timeout anyway: the queue monitor (asynqmon, which makes its clients from
// these options), whose requests the API answers 503 past theirs. Such a
// call, left running by the request that gave up on it, otherwise held
// its connection until go-redis gave up (a read timeout per try: about
// 12 s with the defaults; none with read_timeout -1, when a request was
// lost with its connection), and each poll of an open monitor page during
// an outage left one more.
func CallTimeout(opt asynq.RedisConnOpt, timeout time.Duration) asynq.RedisConnOpt {
	return callTimeoutOpt{RedisConnOpt: opt, timeout: timeout}
}

type callTimeoutOpt struct {
	asynq.RedisConnOpt
	timeout time.Duration
}

// MakeRedisClient returns a redis.UniversalClient, as asynq's options do,
// or nil (which asynq refuses) for options NewRedisClient does not know.
func (o callTimeoutOpt) MakeRedisClient() any {
	rdb, err := NewRedisClient(o.RedisConnOpt)
	if err != nil {
		return nil
	}
	rdb.AddHook(calldeadline.After(o.timeout))
	return rdb
}
