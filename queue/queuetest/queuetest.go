// Package queuetest has helpers for tests that need asynq's queue in a
// state a healthy worker would not leave it in.
package queuetest

import (
	"context"
	_ "embed"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed strand.lua
var strandSrc string

var strandScript = redis.NewScript(strandSrc)

// Depth returns the pending and active task counts of queue with two
// LLENs in one round trip, reading asynq v0.26's lists directly. asynq's
// own Inspector.GetQueueInfo runs a script over the whole queue (memory
// sampling included) and takes tens of milliseconds on a loaded machine:
// too slow to catch a moment that lasts a fraction of a second, such as
// the workers holding many tasks at once. queue's tests check the figures
// against asynq's.
func Depth(ctx context.Context, rdb redis.Cmdable, queue string) (pending, active int64, err error) {
	prefix := "asynq:{" + queue + "}:"
	var p, a *redis.IntCmd
	_, err = rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		p = pipe.LLen(ctx, prefix+"pending")
		a = pipe.LLen(ctx, prefix+"active")
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return p.Val(), a.Val(), nil
}

// Strand moves the oldest pending task of queue to asynq's active list
// under a lease ending at leaseUntil, as a worker's dequeue does, without
// any worker holding it: the state after a worker crashed (leaseUntil in
// the past: asynq reports it orphaned) or lost the dequeue's reply
// (leaseUntil ahead). It returns the task id.
func Strand(t testing.TB, rdb redis.Cmdable, queue string, leaseUntil time.Time) string {
	t.Helper()
	prefix := "asynq:{" + queue + "}:"
	id, err := strandScript.Run(context.Background(), rdb,
		[]string{prefix + "pending", prefix + "active", prefix + "lease"},
		prefix+"t:", leaseUntil.Unix()).Text()
	if err != nil {
		t.Fatalf("strand a task of %s: %v", queue, err)
	}
	return id
}
