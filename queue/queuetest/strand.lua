-- What asynq v0.26's dequeue script does (internal/rdb dequeueCmd), for a
-- worker that never gets the reply: move the oldest pending task to the
-- active list under a lease.
--
-- KEYS[1]: asynq:{<queue>}:pending
-- KEYS[2]: asynq:{<queue>}:active
-- KEYS[3]: asynq:{<queue>}:lease
-- ARGV[1]: the task key prefix, asynq:{<queue>}:t:
-- ARGV[2]: the lease's expiry, Unix seconds
-- Returns: the task id, or nil when nothing is pending.
local id = redis.call("RPOPLPUSH", KEYS[1], KEYS[2])
if not id then
	return nil
end
redis.call("HSET", ARGV[1] .. id, "state", "active")
redis.call("HDEL", ARGV[1] .. id, "pending_since")
redis.call("ZADD", KEYS[3], ARGV[2], id)
return id
