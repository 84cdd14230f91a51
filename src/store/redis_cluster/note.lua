-- Tells readers of the shared model that a contributor's part reached a
-- version: raises the directory's entry and appends to the feed, only if
-- it is newer (a retried or late note changes nothing).
-- KEYS[1] directory hash (contributor -> part version), KEYS[2] feed stream
-- ARGV[1] contributor, ARGV[2] part version, ARGV[3] feed length kept (~)
-- Reply: 1 noted, 0 already known
local v = tonumber(ARGV[2])
if v <= tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or 0) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], v)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'o', ARGV[1], 'v', v)
return 1
