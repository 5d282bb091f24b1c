-- confirm.lua: after a restock committed its stock at a generation, make
-- Redis agree with PostgreSQL even if it lost what Reopen wrote (eviction,
-- a restart without persistence, a failover): the newest announced
-- generation is at least the committed one, and a flag set at an older
-- generation goes (it was set before the stock was there).
--
-- KEYS[1] -> <prefix>soldout:{<product>}   (the flag: generation it was set at)
-- KEYS[2] -> <prefix>restock:{<product>}   (newest announced restock generation)
-- ARGV[1] -> the committed restock generation
-- ARGV[2] -> pub/sub channel of flag changes, ARGV[3] -> the product id
-- Returns 1 if it removed a flag, 0 otherwise.
local gen = tonumber(ARGV[1])
local announced = tonumber(redis.call("GET", KEYS[2]) or "0")
if announced < gen then
  redis.call("SET", KEYS[2], gen)
end
local flag = redis.call("GET", KEYS[1])
if flag and tonumber(flag) < gen then
  redis.call("DEL", KEYS[1])
  redis.call("PUBLISH", ARGV[2], ARGV[3])
  return 1
end
return 0
