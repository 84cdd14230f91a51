-- What changed in the shared model's parts since the feed position a
-- reader holds, in one round trip: nothing, the feed entries after it, or,
-- when the feed no longer reaches back to it (trimmed, or a first read),
-- the whole directory.
-- KEYS[1] directory hash, KEYS[2] feed stream
-- ARGV[1] the feed id the reader holds ('' = none)
-- Reply: {top, 0} fresh | {top, 1, entries} | {top, 2, directory as field, value...}
local held = ARGV[1]
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local top = '0-0'
if #last > 0 then top = last[1][1] end
if held == top then return {top, 0} end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local hm, hs = parse(held)
if hm then
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #first > 0 then
    local fm, fs = parse(first[1][1])
    if fm < hm or (fm == hm and fs <= hs) then
      return {top, 1, redis.call('XRANGE', KEYS[2], '(' .. held, '+')}
    end
  end
end
return {top, 2, redis.call('HGETALL', KEYS[1])}
