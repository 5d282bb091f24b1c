-- fence.lua: raise the fence counter to at least a minimum (never lowers it).
--
-- KEYS[1]  fence key  <prefix>{<key>}:fence
-- ARGV[1]  minimum, a non-negative decimal integer without leading zeros
--
-- Returns the counter after the call, max(counter, ARGV[1]), as a decimal
-- string. The comparison is done on the decimal strings (length first), so it
-- is exact over the whole int64 range, where Lua numbers (doubles) are not.
local cur = redis.call('GET', KEYS[1])
if not cur then
	cur = '0'
end
local min = ARGV[1]
if string.len(cur) < string.len(min) or (string.len(cur) == string.len(min) and cur < min) then
	redis.call('SET', KEYS[1], min)
	return min
end
return cur
