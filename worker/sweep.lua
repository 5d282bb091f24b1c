-- sweep.lua: is the fleet's archive sweep due, and from which page? Run by
-- the holder of the rescuer lock at each rescue scan.
--
-- KEYS[1] -> <prefix>archive-sweep:{<queue>}       (marker: a sweep started
--            or ended within the last archive interval; value: the id of the
--            process that swept)
-- KEYS[2] -> <prefix>archive-sweep:{<queue>}:page  (the page the next sweep
--            starts from; absent: page 1)
-- ARGV[1] -> the archive interval in milliseconds
-- ARGV[2] -> the asking process's id
-- Returns 0 if a sweep ran within the interval (the marker is there),
-- else sets the marker for the interval and returns the page to start
-- from (at least 1). Errors if KEYS[2] holds no string.
local page = tonumber(redis.call("GET", KEYS[2]))
if not redis.call("SET", KEYS[1], ARGV[2], "NX", "PX", ARGV[1]) then
  return 0
end
if not page or page < 1 then
  return 1
end
return math.floor(page)
