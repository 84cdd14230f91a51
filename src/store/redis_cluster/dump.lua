-- One user's records at one instant, for a backup (`backup.rs`): what the
-- backup reads when optimistic reads keep meeting clicks. Read-only; the
-- shard serves nothing else while the reply is built.
-- KEYS[1] meta hash, KEYS[2] snapshot, KEYS[3] journal, KEYS[4] ledger,
-- KEYS[5] policy hash, KEYS[6] part meta, KEYS[7] part snapshot,
-- KEYS[8] part journal, KEYS[9] decisions
-- Reply: {version, snapshot, journal records after it, ledger (HGETALL),
-- policy (HGETALL), part snapshot, part records after it, decisions}
local function after(meta, journal)
  local sv = tonumber(redis.call('HGET', meta, 'sv') or 0)
  return redis.call('XRANGE', journal, '(' .. sv .. '-0', '+')
end
return {
  tonumber(redis.call('HGET', KEYS[1], 'v') or 0),
  redis.call('GET', KEYS[2]) or '',
  after(KEYS[1], KEYS[3]),
  redis.call('HGETALL', KEYS[4]),
  redis.call('HGETALL', KEYS[5]),
  redis.call('GET', KEYS[7]) or '',
  after(KEYS[6], KEYS[8]),
  redis.call('XRANGE', KEYS[9], '-', '+'),
}
