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
