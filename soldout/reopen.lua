-- reopen.lua: announce a restock and clear the sold-out flag, before the
-- stock is added in PostgreSQL.
--
-- KEYS[1] -> <prefix>soldout:{<product>}
-- KEYS[2] -> <prefix>restock:{<product>}
-- ARGV[1] -> restock generation stored in PostgreSQL (a floor, in case
--            Redis lost the counter)
-- ARGV[2] -> pub/sub channel of flag changes, ARGV[3] -> the product id
-- Returns the new restock generation: max(announced, ARGV[1]) + 1.
local announced = tonumber(redis.call("GET", KEYS[2]) or "0")
local floor = tonumber(ARGV[1])
local gen = math.max(announced, floor) + 1
redis.call("SET", KEYS[2], gen)
redis.call("DEL", KEYS[1])
redis.call("PUBLISH", ARGV[2], ARGV[3])
return gen
