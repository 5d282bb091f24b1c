-- release.lua: owner-safe delete that wakes the waiters.
--
-- KEYS[1]  lock key  <prefix>{<key>}
-- ARGV[1]  owner value
-- ARGV[2]  pub/sub channel of the key (<prefix>{<key>}:released)
--
-- Returns 1 when the key held ARGV[1]: it is deleted and ARGV[1] is published
--         on ARGV[2] (the releasing client knows its own values and ignores
--         that message: it wakes its own waiters without Redis).
-- Returns 0 when the key is missing or holds another value; nothing changes.
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	redis.call('PUBLISH', ARGV[2], ARGV[1])
	return 1
end
return 0
