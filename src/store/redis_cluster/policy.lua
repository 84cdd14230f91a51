-- A user's settings and consent id, and on a revoke their whole part of the
-- shared model dropped, in one step on the user's shard: no click can land
-- in the part between the two (the click script reads the consent here).
-- KEYS[1] the user's policy hash, KEYS[2] shared part meta hash,
-- KEYS[3] shared part journal, KEYS[4] shared part snapshot (one hash tag)
-- ARGV[1] the settings (store encoding), ARGV[2] consent id (8 bytes BE,
-- zeros: not sharing), ARGV[3] '1' to drop the shared part
-- Reply: the part's version after a drop (readers holding an older one
-- reload it: an empty snapshot at that version), else 0
redis.call('HSET', KEYS[1], 's', ARGV[1], 'c', ARGV[2])
-- Field 'v': the policy's version, which replicas' reads compare (read.lua).
redis.call('HINCRBY', KEYS[1], 'v', 1)
if ARGV[3] ~= '1' then return 0 end
local v = redis.call('HINCRBY', KEYS[2], 'v', 1)
redis.call('HSET', KEYS[2], 'sv', v)
redis.call('DEL', KEYS[3], KEYS[4])
return v
