-- Adds or removes one list entry of a user's (or the operator's) policy
-- hash, and raises the hash's version (field 'v') when the list changed,
-- so every replica's next read of the policy sees it (read.lua).
-- KEYS[1] the policy hash
-- ARGV[1] the entry's field ('<list>:<entry>'), ARGV[2] '1' add, '0' remove
-- Reply: 1 changed, 0 not (already there, or not there to remove)
local changed
if ARGV[2] == '1' then
  changed = redis.call('HSETNX', KEYS[1], ARGV[1], '')
else
  changed = redis.call('HDEL', KEYS[1], ARGV[1])
end
if changed == 1 then redis.call('HINCRBY', KEYS[1], 'v', 1) end
return changed
