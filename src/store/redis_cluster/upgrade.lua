-- Stamps ledger values of the 18-byte layout (written before the undo
-- window: no click time) with a time, in the 22-byte layout, and indexes
-- them for the undo window (`chaff upgrade`, upgrade.rs). Values already
-- in the 22-byte layout, or gone, are left alone: running it again (or
-- beside clicks that rewrote an entry) changes nothing.
-- KEYS[1] ledger hash, KEYS[2] clicks' times, KEYS[3] delivered mail's
-- times (zsets; one hash tag)
-- ARGV[1] the time (unix s) as 4 bytes BE, ARGV[2] the same as a number,
-- ARGV[3] '1': index the entries (a user's ledger), '0': not (the
-- operator's seed has no undo window), ARGV[4..] message ids
-- Reply: entries stamped
-- kind(v), legacy(v): ledger_value.lua, loaded before this script (the
-- same rule as window.rs `is_legacy`).
local n = 0
for i = 4, #ARGV do
  local m = ARGV[i]
  local v = redis.call('HGET', KEYS[1], m)
  if v and legacy(v) then
    redis.call('HSET', KEYS[1], m, string.sub(v, 1, 18) .. ARGV[1] .. string.sub(v, 19))
    if ARGV[3] == '1' then
      if kind(v) == 'c' then
        redis.call('ZADD', KEYS[2], ARGV[2], m)
      else
        redis.call('ZADD', KEYS[3], ARGV[2], m)
      end
    end
    n = n + 1
  end
end
return n
