-- want.lua: a worker process announces it is waiting for a product's lock.
--
-- KEYS[1] -> <prefix>want:<product>  (sorted set: process id -> expiry, server ms)
-- ARGV[1] -> process id
-- ARGV[2] -> lifetime of the announcement in milliseconds
-- Returns the number of live announcements.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
redis.call("ZADD", KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call("PEXPIRE", KEYS[1], 2 * tonumber(ARGV[2]))
return redis.call("ZCARD", KEYS[1])
