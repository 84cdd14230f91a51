-- What changed in a user's model since the version a reader holds, in one
-- round trip: nothing (fresh), the journal records after it, or, when the
-- journal before it was folded away, the snapshot and the records after it.
-- KEYS[1] meta hash, KEYS[2] snapshot string, KEYS[3] journal stream
-- ARGV[1] the version the reader holds (0: none)
-- Reply: {version, 0} fresh | {version, 1, '', records} | {version, 2, snapshot, records}
local since = tonumber(ARGV[1])
local c = redis.call('HMGET', KEYS[1], 'v', 'sv')
local v, sv = tonumber(c[1] or 0), tonumber(c[2] or 0)
if since == v then return {v, 0} end
if since < sv or since > v then
  local snap = redis.call('GET', KEYS[2]) or ''
  return {v, 2, snap, redis.call('XRANGE', KEYS[3], '(' .. sv .. '-0', '+')}
end
return {v, 1, '', redis.call('XRANGE', KEYS[3], '(' .. since .. '-0', '+')}
