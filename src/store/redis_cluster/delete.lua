-- Deletes everything of one user, atomically on the user's shard: model,
-- ledger, journal, snapshot, settings and lists, decisions. Their part of
-- the shared model is folded to nothing at a new version (as a revoke
-- does, policy.lua) rather than deleted, so that every replica holding an
-- older version of it reloads it empty once told (note.lua).
-- KEYS[1] meta, KEYS[2] ledger, KEYS[3] journal, KEYS[4] snapshot,
-- KEYS[5] policy, KEYS[6] decisions, KEYS[7] part meta, KEYS[8] part
-- journal, KEYS[9] part snapshot, KEYS[10], KEYS[11] the ledger's time
-- indexes (one hash tag)
-- Reply: {keys deleted, the part's new version (0: the user had no part)}
local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('DEL', KEYS[10], KEYS[11])
local pv = 0
if redis.call('EXISTS', KEYS[7]) == 1 then
  pv = redis.call('HINCRBY', KEYS[7], 'v', 1)
  redis.call('HSET', KEYS[7], 'sv', pv)
  redis.call('DEL', KEYS[8], KEYS[9])
end
return {n, pv}
