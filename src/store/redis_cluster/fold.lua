-- Folds one user's ledger entries past their undo windows (the
-- background sweep's step; click.lua folds a few the same way in
-- passing): a click keeps its header (label, weight, time) as kind 'f'
-- and loses its tokens; delivered mail's entry is dropped. The counts
-- stay: the model keeps counting both, so no journal record is written.
-- KEYS[1] ledger hash, KEYS[2] clicks' times (zset), KEYS[3] delivered
-- mail's times (zset), one hash tag
-- ARGV[1] click cutoff, ARGV[2] delivered cutoff (unix s: entries timed
-- before are due), ARGV[3] at most this many of each
-- Reply: {entries folded or dropped, the most index entries taken from
-- one set (ARGV[3]: call again)}
local ledger, times, dtimes = KEYS[1], KEYS[2], KEYS[3]
local n, most = 0, 0
local due = redis.call('ZRANGEBYSCORE', times, '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[3])
most = #due
for _, m in ipairs(due) do
  local v = redis.call('HGET', ledger, m)
  if v and string.sub(v, 10, 10) == 'c' then
    redis.call('HSET', ledger, m, string.sub(v, 1, 9) .. 'f' .. string.sub(v, 11, 22))
    n = n + 1
  end
  redis.call('ZREM', times, m)
end
due = redis.call('ZRANGEBYSCORE', dtimes, '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
most = math.max(most, #due)
for _, m in ipairs(due) do
  local v = redis.call('HGET', ledger, m)
  if v and string.sub(v, 10, 10) == 'i' then
    redis.call('HDEL', ledger, m)
    n = n + 1
  end
  redis.call('ZREM', dtimes, m)
end
return {n, most}
