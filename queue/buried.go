package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Buried orders. asynq keeps at most 10,000 archived tasks, and none older
// than 90 days: archiving one more deletes the oldest, payload and all. An
// order whose last try could not record its outcome (PostgreSQL down, often
// why its tries ran out) would then be in neither the queue nor the
// database: accepted, and gone. The worker buries such an order first, in a
// hash asynq does not trim, and its rescue scan records the order once
// PostgreSQL answers, then unburies it.

// buriedKey is the hash of buried orders, order id → payload. It lives
// under the queue's asynq key prefix and hash tag: in the queue's Redis
// Cluster slot, and deleted with keys by that prefix (asynq's DeleteQueue
// does not know it). [Inspector.Lookup] and [Inspector.States] report a
// buried order that has no task as Dead, as they would its archived task:
// the API answers it failed.
func (i *Inspector) buriedKey() string { return "asynq:{" + i.queue + "}:flashsale:buried" }

// lookupBuried is [Inspector.Lookup] for an order with no task: a buried
// one is Dead (its failure is yet to be recorded), any other ErrNotFound.
func (i *Inspector) lookupBuried(ctx context.Context, id string) (TaskInfo, error) {
	v, err := i.rdb.HGet(ctx, i.buriedKey(), id).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return TaskInfo{}, ErrNotFound
	case err != nil:
		return TaskInfo{}, fmt.Errorf("look up order %q: %w: %w", id, ErrUnavailable, err)
	}
	o, err := Decode([]byte(v))
	if err != nil {
		return TaskInfo{}, ErrNotFound // Buried drops it
	}
	return TaskInfo{State: Dead, Order: o}, nil
}

// AnyBuried reports whether any order is buried (almost never).
func (i *Inspector) AnyBuried(ctx context.Context) (bool, error) {
	n, err := i.rdb.Exists(ctx, i.buriedKey()).Result()
	if err != nil {
		return false, fmt.Errorf("buried orders: %w: %w", ErrUnavailable, err)
	}
	return n == 1, nil
}

// Bury keeps o until [Inspector.Unbury]; see above.
func (i *Inspector) Bury(ctx context.Context, o Order) error {
	task, err := Encode(o)
	if err != nil {
		return err
	}
	if err := i.rdb.HSet(ctx, i.buriedKey(), o.ID, task.Payload()).Err(); err != nil {
		return fmt.Errorf("bury order %q: %w: %w", o.ID, ErrUnavailable, err)
	}
	return nil
}

// Buried returns about limit buried orders from cursor on (0: from the
// start), in no particular order, and the cursor to go on from (0: the end
// was reached). A payload that does not decode is unburied (it cannot be
// recorded).
func (i *Inspector) Buried(ctx context.Context, cursor uint64, limit int) ([]Order, uint64, error) {
	var out []Order
	var bad []string
	for {
		kv, next, err := i.rdb.HScan(ctx, i.buriedKey(), cursor, "", int64(limit)).Result()
		if err != nil {
			return nil, 0, fmt.Errorf("buried orders: %w: %w", ErrUnavailable, err)
		}
		for k := 0; k+1 < len(kv); k += 2 {
			o, err := Decode([]byte(kv[k+1]))
			if err != nil {
				bad = append(bad, kv[k])
				continue
			}
			out = append(out, o)
		}
		cursor = next
		if cursor == 0 || len(out) >= limit {
			break
		}
	}
	if len(bad) > 0 {
		if err := i.Unbury(ctx, bad...); err != nil {
			return nil, 0, err
		}
	}
	return out, cursor, nil
}

// Unbury forgets the buried orders ids (those not buried are ignored).
func (i *Inspector) Unbury(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := i.rdb.HDel(ctx, i.buriedKey(), ids...).Err(); err != nil {
		return fmt.Errorf("unbury %d orders: %w: %w", len(ids), ErrUnavailable, err)
	}
	return nil
}
