-- What changed in a user's model since the version a reader holds, in one
-- round trip: nothing (fresh), the journal records after it, or, when the
-- journal before it was folded away, the snapshot and the records after it.
-- With a user's policy hash too (KEYS[4]), the same round trip brings the
-- user's settings and lists when they changed since the policy version the
-- reader holds (ARGV[2]): a Score reads both fresh in one request.
-- KEYS[1] meta hash, KEYS[2] snapshot string, KEYS[3] journal stream,
-- KEYS[4] (optional) the user's policy hash
-- ARGV[1] the version the reader holds (0: none), ARGV[2] (with KEYS[4])
-- the policy version the reader holds
-- Reply: {version, 0} fresh | {version, 1, '', records} | {version, 2, snapshot, records};
-- with KEYS[4] always four parts ({version, 0, '', {}} when fresh), then the
-- policy version, then the policy hash (HGETALL) only if that version changed
local since = tonumber(ARGV[1])
local c = redis.call('HMGET', KEYS[1], 'v', 'sv')
local v, sv = tonumber(c[1] or 0), tonumber(c[2] or 0)
local out
if since == v then
  if not KEYS[4] then return {v, 0} end
  out = {v, 0, '', {}}
elseif since < sv or since > v then
  local snap = redis.call('GET', KEYS[2]) or ''
  out = {v, 2, snap, redis.call('XRANGE', KEYS[3], '(' .. sv .. '-0', '+')}
else
  out = {v, 1, '', redis.call('XRANGE', KEYS[3], '(' .. since .. '-0', '+')}
end
if KEYS[4] then
  local pv = tonumber(redis.call('HGET', KEYS[4], 'v') or 0)
  out[5] = pv
  if pv ~= tonumber(ARGV[2]) then out[6] = redis.call('HGETALL', KEYS[4]) end
end
return out
