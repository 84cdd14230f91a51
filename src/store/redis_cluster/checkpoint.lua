-- Folds a user's journal up to a version into a snapshot a client encoded
-- from the model at exactly that version; drops the folded records.
-- With ARGV[3] '1', a prune (`--max-user-tokens`): the snapshot is the
-- model at the current version with tokens removed, so it replaces the
-- model at a new version (the current one + 1, which the client encoded
-- it at); every reader holding an older version then reloads it.
-- KEYS[1] meta hash, KEYS[2] snapshot string, KEYS[3] journal stream
-- ARGV[1] snapshot bytes, ARGV[2] the version they fold, ARGV[3] '1' prune
-- Reply: 1 written, 0 refused (an equal or newer snapshot is there, or the
-- version is not one the journal reached; a prune: the version is not the
-- current one)
local upto = tonumber(ARGV[2])
local c = redis.call('HMGET', KEYS[1], 'v', 'sv')
local v, sv = tonumber(c[1] or 0), tonumber(c[2] or 0)
if ARGV[3] == '1' then
  if upto ~= v or v == 0 then return 0 end
  upto = v + 1
  redis.call('HSET', KEYS[1], 'v', upto)
elseif upto <= sv or upto > v then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'sv', upto)
redis.call('XTRIM', KEYS[3], 'MINID', (upto + 1) .. '-0')
return 1
