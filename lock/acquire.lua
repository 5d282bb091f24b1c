-- acquire.lua: take the lock on one node and mint a fencing token.
--
-- KEYS[1]  lock key   <prefix>{<key>}
-- KEYS[2]  fence key  <prefix>{<key>}:fence (never expires, never deleted)
-- ARGV[1]  random owner value of this attempt
-- ARGV[2]  TTL in milliseconds
--
-- Returns {1, token} when the key was free and is now set to ARGV[1] with the
--         TTL; token is the fence counter after INCR (strictly greater than
--         every token this node minted before).
-- Returns {1, token} also when the key already holds ARGV[1]: the same
--         attempt run again (a client library resending it after a lost
--         reply), which must not read as busy and leave its value behind.
--         token is then the fence counter as it stands (no INCR): at least
--         what this attempt minted, since no one else could take the key.
-- Returns {0, pttl}  when another value holds the key; pttl is its remaining
--         time to live in milliseconds (-1 if it has none).
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return {1, redis.call('INCR', KEYS[2])}
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {0, redis.call('PTTL', KEYS[1])}
