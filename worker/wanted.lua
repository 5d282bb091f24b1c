-- wanted.lua: is another worker process waiting for this product's lock?
--
-- KEYS[1] -> <prefix>want:{<product>}  (sorted set: process id -> expiry, server ms)
-- ARGV[1] -> the asking process's id (its own announcement does not count)
-- Returns 1 if another process has a live announcement, else 0.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call("ZRANGE", KEYS[1], "(" .. now, "+inf", "BYSCORE", "LIMIT", 0, 2)
for _, member in ipairs(live) do
  if member ~= ARGV[1] then
    return 1
  end
end
return 0
