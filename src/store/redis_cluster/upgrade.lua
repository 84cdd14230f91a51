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
local function kind(v) return string.sub(v, 10, 10) end
-- The same rule as click.lua's `legacy` and window.rs `is_legacy`.
local function legacy(v)
  local k = kind(v)
  if (k ~= 'c' and k ~= 'i') or #v < 20 then return false end
  local l, z1, z2, z3, t = string.byte(v, 1), string.byte(v, 6), string.byte(v, 7),
    string.byte(v, 8), string.byte(v, 9)
  return string.byte(v, 19) == l and z1 == 0 and z2 == 0 and z3 == 0 and t < 128
    and string.byte(v, 20) == t
end
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
