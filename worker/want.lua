-- want.lua: a worker process announces it is waiting for a product's lock.
--
-- KEYS[1] -> <prefix>want:{<product>}        (process id -> expiry, server ms)
-- KEYS[2] -> <prefix>want:{<product>}:since  (process id -> first announcement)
-- ARGV[1] -> process id
-- ARGV[2] -> lifetime of the announcement in milliseconds
-- ARGV[3] -> the time of this process's first announcement (server ms, as
--            an earlier call returned it), or 0 on its first
-- Returns the time of this process's first announcement.
--
-- The first time is the caller's to keep, not the keys': an announcement
-- whose renewal came late (a paused process, a slow reply) has expired, and
-- this call, or another process's, swept its first time with it, or both
-- keys expired. Taking now then would send a process that has waited all
-- along behind those that came after it.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call("ZRANGE", KEYS[1], "-inf", now, "BYSCORE")
if #gone > 0 then
  redis.call("ZREM", KEYS[1], unpack(gone))
  redis.call("ZREM", KEYS[2], unpack(gone))
end
redis.call("ZADD", KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local first = tonumber(ARGV[3])
if not first or first <= 0 then first = now end
redis.call("ZADD", KEYS[2], "NX", first, ARGV[1])
redis.call("PEXPIRE", KEYS[1], 2 * tonumber(ARGV[2]))
redis.call("PEXPIRE", KEYS[2], 2 * tonumber(ARGV[2]))
return tonumber(redis.call("ZSCORE", KEYS[2], ARGV[1]))
