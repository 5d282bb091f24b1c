-- mark.lua: record that a product sold out at a restock generation, unless
-- a restock has been announced since.
--
-- KEYS[1] -> <prefix>soldout:{<product>}   (the flag: restock generation it was set at)
-- KEYS[2] -> <prefix>restock:{<product>}   (newest announced restock generation)
-- ARGV[1] -> restock generation the worker read with stock = 0
-- ARGV[2] -> flag lifetime in milliseconds (a safety net; restock deletes it)
-- ARGV[3] -> pub/sub channel of flag changes, ARGV[4] -> the product id:
--            API processes drop their cached answer for the product
-- Returns 1 if the flag was set, 0 if a newer restock was announced.
local announced = tonumber(redis.call("GET", KEYS[2]) or "0")
local gen = tonumber(ARGV[1])
if announced > gen then
  return 0
end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
redis.call("PUBLISH", ARGV[3], ARGV[4])
return 1
