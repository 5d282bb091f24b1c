// Package calldeadline is a go-redis hook that gives every call a deadline,
// for clients whose callers pass no context (asynq's Inspector): the
// deadline then comes from the hook. It needs a client whose calls honour
// their context's deadline (ContextTimeoutEnabled, as
// queue.NewRedisClient's clients have).
package calldeadline

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Hook ends every call, pipelines, retries and the dial included (go-redis
// dials under the call's context), by the time its func returns when the
// call starts, or by the call's own deadline if that is earlier.
type Hook func() time.Time

// After is a Hook that gives each call d from its start.
func After(d time.Duration) Hook {
	return func() time.Time { return time.Now().Add(d) }
}

// DialHook, ProcessHook and ProcessPipelineHook make a Hook a redis.Hook.
func (h Hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h Hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		ctx, cancel := context.WithDeadline(ctx, h())
		defer cancel()
		return next(ctx, cmd)
	}
}

func (h Hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, cancel := context.WithDeadline(ctx, h())
		defer cancel()
		return next(ctx, cmds)
	}
}
