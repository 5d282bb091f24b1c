-- Withdraws an order's task that no worker has taken: deletes it if it is
-- pending, as asynq v0.26's DeleteTask does a pending task (internal/rdb
-- deleteTaskCmd; an order task has no unique key or group), and leaves a
-- task in any other state as it is.
--
-- KEYS[1]: the task hash, asynq:{<queue>}:t:<task id>
-- KEYS[2]: asynq:{<queue>}:pending
-- ARGV[1]: the task id
-- Returns: 1 if the task was pending and is deleted, 0 if there is no such
-- task or it is not pending (running, retrying, archived...).
if redis.call("HGET", KEYS[1], "state") ~= "pending" then
	return 0
end
if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
	return 0
end
redis.call("DEL", KEYS[1])
return 1
