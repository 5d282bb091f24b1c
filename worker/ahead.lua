-- ahead.lua: did another worker process announce before this one that it
-- waits for this product's lock, and does it still?
--
-- KEYS[1] -> <prefix>want:{<product>}        (process id -> expiry, server ms)
-- KEYS[2] -> <prefix>want:{<product>}:since  (process id -> first announcement)
-- ARGV[1] -> the asking process's id
-- Returns 1 if a live announcement of another process is older than the
-- asker's (or either's first time is unknown), else 0. Equal times order
-- by process id, so that two processes never both wait for the other.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = redis.call("ZSCORE", KEYS[2], ARGV[1])
for _, m in ipairs(redis.call("ZRANGE", KEYS[1], "(" .. now, "+inf", "BYSCORE")) do
  if m ~= ARGV[1] then
    local s = redis.call("ZSCORE", KEYS[2], m)
    if not s or not mine then return 1 end
    s, mine = tonumber(s), tonumber(mine)
    if s < mine or (s == mine and m < ARGV[1]) then return 1 end
  end
end
return 0
