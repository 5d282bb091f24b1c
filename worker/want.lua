-- want.lua: a worker process announces it is waiting for a product's lock.
--
-- KEYS[1] -> <prefix>want:{<product>}        (process id -> expiry, server ms)
-- KEYS[2] -> <prefix>want:{<product>}:since  (process id -> first announcement)
-- ARGV[1] -> process id
-- ARGV[2] -> lifetime of the announcement in milliseconds
-- Returns the number of live announcements.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call("ZRANGE", KEYS[1], "-inf", now, "BYSCORE")
if #gone > 0 then
  redis.call("ZREM", KEYS[1], unpack(gone))
  redis.call("ZREM", KEYS[2], unpack(gone))
end
redis.call("ZADD", KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call("ZADD", KEYS[2], "NX", now, ARGV[1])
redis.call("PEXPIRE", KEYS[1], 2 * tonumber(ARGV[2]))
redis.call("PEXPIRE", KEYS[2], 2 * tonumber(ARGV[2]))
return redis.call("ZCARD", KEYS[1])
