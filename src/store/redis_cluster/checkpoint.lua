-- Folds a user's journal up to a version into a snapshot a client encoded
-- from the model at exactly that version; drops the folded records.
-- KEYS[1] meta hash, KEYS[2] snapshot string, KEYS[3] journal stream
-- ARGV[1] snapshot bytes, ARGV[2] the version they fold
-- Reply: 1 written, 0 refused (an equal or newer snapshot is there, or the
-- version is not one the journal reached)
local upto = tonumber(ARGV[2])
local c = redis.call('HMGET', KEYS[1], 'v', 'sv')
local v, sv = tonumber(c[1] or 0), tonumber(c[2] or 0)
if upto <= sv or upto > v then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'sv', upto)
redis.call('XTRIM', KEYS[3], 'MINID', (upto + 1) .. '-0')
return 1
