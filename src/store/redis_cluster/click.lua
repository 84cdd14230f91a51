-- One click (Train, relearn or Forget), or the learning of delivered mail,
-- of one user, atomically on the user's shard: check the ledger, move the
-- counts, append the journal, and, while the user shares (consent), change
-- their part of the shared model in the same step.
-- KEYS[1] meta hash, KEYS[2] ledger hash, KEYS[3] journal stream,
-- KEYS[4] the user's policy hash (field 'c': consent id, 8 bytes BE),
-- KEYS[5] shared part meta hash, KEYS[6] shared part journal,
-- KEYS[7] clicks' times, KEYS[8] delivered mail's times (zsets: message id
-- by time, only for entries that still carry tokens) (one hash tag)
-- ARGV[1] message id
-- ARGV[2] the new ledger value ('' = Forget): label byte, weight (u32 BE),
--         tokenizer version (u32 BE), kind ('c' click, 'i' delivered mail;
--         'f' a click folded past the undo window: no tokens follow),
--         shared id (8 bytes, written here), time (unix s, u32 BE), then
--         the ledger encoding
-- ARGV[3] the current tokenizer version (u32 BE): only an entry learned by
--         it is undone (a model of another version never counted it)
-- ARGV[4] a click only: the id chaff derives for the message, when the
--         caller names it otherwise ('' = none): an implicit entry there is
--         replaced by this click, as if it had never been learned
-- ARGV[5], ARGV[6] delivered mail only: the lightest weight, and the most
--         this message may weigh (one message, less for a very short one:
--         engine::clicks::delivered_ceiling)
-- ARGV[7] '1': keep no model journal (the operator's seed: only the shared
--         part and the ledger are read; the counts are still kept)
-- ARGV[8], ARGV[9] the undo windows' cutoffs (unix s) for clicks and for
--         delivered mail: an entry timed before its cutoff is beyond its
--         window (the seed has none: ARGV[7] '1')
-- ARGV[10] at most this many due entries of the user are folded in passing
--         (fold.lua does the same)
-- ARGV[11] now (unix s): the time of a ledger value of the 18-byte layout
--         written before the undo window (no time; `legacy` below), so it
--         stays undoable until `chaff upgrade` stamps it (upgrade.lua)
-- Reply: {code, version, spam learned, ham learned, previous header,
--   shared part version (0: none), 1 if the user shares now else 0}
--   code 0 not learned (Forget of nothing; delivered mail already in the
--   ledger or a user who never clicked), 1 already learned, 2 learned,
--   3 relearned, 4 forgotten, 5 learned over delivered mail's entry,
--   6 delivered mail learned, 7 beyond the undo window (a Forget, or a
--   click of the other label, of a click older than the window: nothing
--   changed); previous header = label byte + weight, or ''
local meta, ledger, journal, policy, pmeta, pjournal, times, dtimes =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local msg, new, current, derived = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local windowed = ARGV[7] ~= '1'
local cutoff, dcutoff = tonumber(ARGV[8]), tonumber(ARGV[9])
local ZERO = string.rep('\0', 8)

-- kind(v), legacy(v): ledger_value.lua, loaded before this script.
local now = tonumber(ARGV[11])
local function time_of(v)
  if legacy(v) then return now end
  local a, b, c, d = string.byte(v, 19, 22)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
-- A click past the undo window, folded or not yet: it can no longer be
-- undone exactly.
local function beyond(v)
  return windowed and (kind(v) == 'f' or (kind(v) == 'c' and time_of(v) < cutoff))
end
-- Delivered mail past its window: dropped, its counts kept (fold.lua).
local function expired(v)
  return windowed and kind(v) == 'i' and time_of(v) < dcutoff
end
local function drop_expired(m)
  redis.call('HDEL', ledger, m)
  redis.call('ZREM', dtimes, m)
end

-- Fold a few due entries of this user in passing (as fold.lua does).
if windowed then
  local limit = tonumber(ARGV[10])
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', times, '-inf', '(' .. ARGV[8], 'LIMIT', 0, limit)) do
    local v = redis.call('HGET', ledger, m)
    if v and kind(v) == 'c' then
      redis.call('HSET', ledger, m, string.sub(v, 1, 9) .. 'f' .. string.sub(v, 11, 22))
    end
    redis.call('ZREM', times, m)
  end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', dtimes, '-inf', '(' .. ARGV[9], 'LIMIT', 0, limit)) do
    local v = redis.call('HGET', ledger, m)
    if v and kind(v) == 'i' then redis.call('HDEL', ledger, m) end
    redis.call('ZREM', dtimes, m)
  end
end

local prev = redis.call('HGET', ledger, msg)
if prev and expired(prev) then
  drop_expired(msg)
  prev = nil
end

-- A click or Forget that changes nothing (codes 0, 1, 7) may rest on a
-- write not yet replicated: a click through another connection, or this
-- click's own first try, which redis-rs resends on a new connection when
-- one drops. WAIT is documented to cover the writes sent on its own
-- connection; Redis 7.0 marks a connection after every command, but
-- later releases only after one that propagated something. So such a
-- reply writes a field and takes it away (the hash as it was; a hash that
-- did not exist is gone again): the mark then covers every write before
-- it. Delivered mail is never waited for, so it does not.
local waited = kind(new) ~= 'i'
local function reply(code)
  if waited and (code == 0 or code == 1 or code == 7) then
    redis.call('HSET', meta, '~', '1')
    redis.call('HDEL', meta, '~')
  end
  local c = redis.call('HMGET', meta, 'v', 'sl', 'hl')
  local head = ''
  if prev then head = string.sub(prev, 1, 5) end
  local pv = redis.call('HGET', pmeta, 'v')
  local consent = redis.call('HGET', policy, 'c')
  local sharing = 0
  if consent and consent ~= ZERO then sharing = 1 end
  return {code, tonumber(c[1] or 0), tonumber(c[2] or 0), tonumber(c[3] or 0), head,
    tonumber(pv or 0), sharing}
end
local function weight(v)
  local a, b, c, d = string.byte(v, 2, 5)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
local function implicit(v) return kind(v) == 'i' end
local function shared_id(v) return string.sub(v, 11, 18) end
local function fields(v)
  if string.byte(v, 1) == 83 then return 'sl', 'sw' end -- 'S'
  return 'hl', 'hw'
end
local function learn(v)
  local n, w = fields(v)
  redis.call('HINCRBY', meta, n, 1)
  redis.call('HINCRBY', meta, w, weight(v))
end
local function unlearn(v)
  -- Counts saturate at zero, as the in-memory model's do.
  local n, w = fields(v)
  local c = redis.call('HMGET', meta, n, w)
  redis.call('HSET', meta,
    n, math.max(0, tonumber(c[1] or 0) - 1),
    w, math.max(0, tonumber(c[2] or 0) - weight(v)))
end

local entry = {}
local code

if new ~= '' and implicit(new) then
  -- Delivered mail: never over anything in the ledger (a click, or the
  -- same mail learned before), and never a user's first learning.
  if prev then return reply(0) end
  local c = redis.call('HMGET', meta, 'sl', 'hl', 'sw', 'hw')
  if tonumber(c[1] or 0) == 0 and tonumber(c[2] or 0) == 0 then return reply(0) end
  -- What the ham side lacks of the spam side's weight, between the
  -- lightest weight and the message's ceiling (engine::clicks::delivered_weight).
  local gap = math.max(0, tonumber(c[3] or 0) - tonumber(c[4] or 0))
  local w = math.min(math.max(gap, tonumber(ARGV[5])), tonumber(ARGV[6]))
  local bytes = string.char(math.floor(w / 16777216) % 256, math.floor(w / 65536) % 256,
    math.floor(w / 256) % 256, w % 256)
  new = string.sub(new, 1, 1) .. bytes .. string.sub(new, 6, 10) .. ZERO .. string.sub(new, 19)
  learn(new)
  redis.call('HSET', ledger, msg, new)
  if windowed then redis.call('ZADD', dtimes, time_of(new), msg) end
  local v = redis.call('HINCRBY', meta, 'v', 1)
  redis.call('XADD', journal, v .. '-0', 'k', 'd', 'l', new)
  return reply(6)
end

-- The entry this click replaces as if it had never been learned.
local replaced = nil
if prev and beyond(prev) then
  -- Too old to undo: the same label again stays harmless; anything else
  -- is refused, the counts unchanged.
  if new ~= '' and string.byte(prev, 1) == string.byte(new, 1) then return reply(1) end
  return reply(7)
end
if new == '' then
  if not prev then return reply(0) end
  code = 4
elseif prev and implicit(prev) then
  replaced = prev
  code = 5
elseif prev and string.byte(prev, 1) == string.byte(new, 1) then
  return reply(1)
elseif prev then
  code = 3
else
  code = 2
  if derived ~= '' and derived ~= msg then
    local d = redis.call('HGET', ledger, derived)
    if d and expired(d) then
      drop_expired(derived)
    elseif d and implicit(d) then
      replaced = d
      redis.call('HDEL', ledger, derived)
      redis.call('ZREM', dtimes, derived)
      code = 5
    end
  end
end

local consent = redis.call('HGET', policy, 'c')
local sharing = consent and consent ~= ZERO
local part = {}
local undone = replaced or prev
if undone and string.sub(undone, 6, 9) == current then
  unlearn(undone)
  entry[#entry + 1] = 'u'
  entry[#entry + 1] = undone
  -- Out of the shared part only if shared under the consent still current
  -- (a revoke dropped the whole part; delivered mail is never shared).
  if sharing and shared_id(undone) == consent then
    part[#part + 1] = 'u'
    part[#part + 1] = undone
  end
end
if new ~= '' then
  local id = ZERO
  if sharing then id = consent end
  new = string.sub(new, 1, 10) .. id .. string.sub(new, 19)
  learn(new)
  redis.call('HSET', ledger, msg, new)
  if windowed then
    redis.call('ZADD', times, time_of(new), msg)
    redis.call('ZREM', dtimes, msg)
  end
  entry[#entry + 1] = 'l'
  entry[#entry + 1] = new
  if sharing then
    part[#part + 1] = 'l'
    part[#part + 1] = new
  end
else
  redis.call('HDEL', ledger, msg)
  if windowed then
    redis.call('ZREM', times, msg)
    redis.call('ZREM', dtimes, msg)
  end
end
local v = redis.call('HINCRBY', meta, 'v', 1)
local kind = 't'
if new == '' then kind = 'f' end
if ARGV[7] ~= '1' then
  redis.call('XADD', journal, v .. '-0', 'k', kind, unpack(entry))
end
if #part > 0 then
  local pv = redis.call('HINCRBY', pmeta, 'v', 1)
  redis.call('XADD', pjournal, pv .. '-0', 'k', kind, unpack(part))
end
return reply(code)
