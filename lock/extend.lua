-- extend.lua: owner-safe TTL reset. Never creates a missing key, so an
-- expired lock is never silently re-acquired.
--
-- KEYS[1]  lock key  <prefix>{<key>}
-- ARGV[1]  owner value
-- ARGV[2]  new TTL in milliseconds
--
-- Returns 1 when the key held ARGV[1] and its TTL was set to ARGV[2].
-- Returns 0 when the key is missing or holds another value; nothing changes.
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
