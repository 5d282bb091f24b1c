-- The counts of asynq v0.26's GetQueueInfo (internal/rdb currentStatsCmd),
-- read here so that the read takes a context ([Inspector.Stats]); without
-- the memory usage asynq also samples, which Stats does not report.
--
-- KEYS[1]: asynq:{<queue>}:pending
-- KEYS[2]: asynq:{<queue>}:active
-- KEYS[3]: asynq:{<queue>}:scheduled
-- KEYS[4]: asynq:{<queue>}:retry
-- KEYS[5]: asynq:{<queue>}:archived
-- KEYS[6]: asynq:{<queue>}:completed
-- KEYS[7]: asynq:{<queue>}:processed:<yyyy-mm-dd, UTC>
-- KEYS[8]: asynq:{<queue>}:failed:<yyyy-mm-dd, UTC>
-- KEYS[9]: asynq:{<queue>}:paused
-- KEYS[10]: asynq:{<queue>}:groups
-- ARGV[1]: the task key prefix, asynq:{<queue>}:t:
-- ARGV[2]: the group key prefix, asynq:{<queue>}:g:
-- Returns: pending, active, scheduled, retry, archived, completed,
-- processed today, failed today, paused (0 or 1), aggregating (tasks in
-- groups), and the oldest pending task's pending_since (Unix nanoseconds,
-- a string; "0" when nothing is pending). A queue that does not exist
-- reads as all zeros.
local pending = redis.call("LLEN", KEYS[1])
local res = {
	pending,
	redis.call("LLEN", KEYS[2]),
	redis.call("ZCARD", KEYS[3]),
	redis.call("ZCARD", KEYS[4]),
	redis.call("ZCARD", KEYS[5]),
	redis.call("ZCARD", KEYS[6]),
	tonumber(redis.call("GET", KEYS[7]) or "0"),
	tonumber(redis.call("GET", KEYS[8]) or "0"),
	redis.call("EXISTS", KEYS[9]),
}
local aggregating = 0
for _, g in ipairs(redis.call("SMEMBERS", KEYS[10])) do
	aggregating = aggregating + redis.call("ZCARD", ARGV[2] .. g)
end
table.insert(res, aggregating)
local since = "0"
if pending > 0 then
	-- asynq's pending list is served from the right: its last element is
	-- the oldest.
	local id = redis.call("LINDEX", KEYS[1], -1)
	since = redis.call("HGET", ARGV[1] .. id, "pending_since") or "0"
end
table.insert(res, since)
return res
