-- The operator's seed id, and on a clear the whole seed dropped, in one
-- step on the operator's slot: the new id (the consent the click script
-- shares seed messages under), the seed's shared part folded to nothing at
-- a new version (readers reload it empty once told, as after a revoke),
-- and its ledger and counts deleted (entries of a cleared seed are as if
-- never seeded).
-- KEYS[1] policy hash ('c': seed id), KEYS[2] part meta, KEYS[3] part
-- journal, KEYS[4] part snapshot, KEYS[5] meta, KEYS[6] ledger,
-- KEYS[7] journal, KEYS[8] snapshot (all under {o})
-- ARGV[1] the new seed id (8 bytes BE), ARGV[2] '1' clear, '0' set only
--         when there is none yet
-- Reply: {the seed id now (8 bytes), the part's version after a clear, else 0}
if ARGV[2] ~= '1' then
  redis.call('HSETNX', KEYS[1], 'c', ARGV[1])
  return {redis.call('HGET', KEYS[1], 'c'), 0}
end
redis.call('HSET', KEYS[1], 'c', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'v', 1)
local v = redis.call('HINCRBY', KEYS[2], 'v', 1)
redis.call('HSET', KEYS[2], 'sv', v)
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
return {ARGV[1], v}
