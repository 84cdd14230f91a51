-- One click (Train, relearn or Forget) of one user, atomically on the
-- user's shard: check the ledger, move the counts, append the journal.
-- KEYS[1] meta hash, KEYS[2] ledger hash, KEYS[3] journal stream (one hash tag)
-- ARGV[1] message id
-- ARGV[2] the new ledger value ('' = Forget): label byte, weight (u32 BE),
--         tokenizer version (u32 BE), then the store's ledger encoding
-- ARGV[3] the current tokenizer version (u32 BE): only a click learned by
--         it is undone (a model of another version never counted it)
-- Reply: {code, version, spam learned, ham learned, previous header}
--   code 0 not learned (Forget), 1 already learned, 2 learned,
--   3 relearned, 4 forgotten; previous header = label byte + weight, or ''
local meta, ledger, journal = KEYS[1], KEYS[2], KEYS[3]
local msg, new, current = ARGV[1], ARGV[2], ARGV[3]
local prev = redis.call('HGET', ledger, msg)

local function reply(code)
  local c = redis.call('HMGET', meta, 'v', 'sl', 'hl')
  local head = ''
  if prev then head = string.sub(prev, 1, 5) end
  return {code, tonumber(c[1] or 0), tonumber(c[2] or 0), tonumber(c[3] or 0), head}
end

if new == '' then
  if not prev then return reply(0) end
elseif prev and string.byte(prev, 1) == string.byte(new, 1) then
  return reply(1)
end

local function weight(v)
  local a, b, c, d = string.byte(v, 2, 5)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
local function fields(v)
  if string.byte(v, 1) == 83 then return 'sl', 'sw' end -- 'S'
  return 'hl', 'hw'
end

local entry = {'k', 't'}
if new == '' then entry[2] = 'f' end
if prev and string.sub(prev, 6, 9) == current then
  -- Counts saturate at zero, as the in-memory model's do.
  local n, w = fields(prev)
  local c = redis.call('HMGET', meta, n, w)
  redis.call('HSET', meta,
    n, math.max(0, tonumber(c[1] or 0) - 1),
    w, math.max(0, tonumber(c[2] or 0) - weight(prev)))
  entry[#entry + 1] = 'u'
  entry[#entry + 1] = prev
end
if new ~= '' then
  local n, w = fields(new)
  redis.call('HINCRBY', meta, n, 1)
  redis.call('HINCRBY', meta, w, weight(new))
  redis.call('HSET', ledger, msg, new)
  entry[#entry + 1] = 'l'
  entry[#entry + 1] = new
else
  redis.call('HDEL', ledger, msg)
end
local v = redis.call('HINCRBY', meta, 'v', 1)
redis.call('XADD', journal, v .. '-0', unpack(entry))
if new == '' then return reply(4) end
if prev then return reply(3) end
return reply(2)
