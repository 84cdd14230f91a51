-- Appends decisions to a user's decision log, a stream capped at about
-- ARGV[1] records (MAXLEN ~), each under an id whose milliseconds are the
-- decision's time, so support queries by time are ID ranges.
-- KEYS[1] the user's decision stream
-- ARGV[1] cap, then pairs: time in ms, the record (JSON)
-- A time older than the newest record (another replica's clock) is filed
-- at the newest record's time: the order of the log is the order of
-- arrival, and the record itself keeps its exact time.
for i = 2, #ARGV, 2 do
  local t, j = ARGV[i], ARGV[i + 1]
  local ok = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], t .. '-*', 'j', j)
  if type(ok) == 'table' and ok.err then
    local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    if #last == 0 then return redis.error_reply(ok.err) end
    local ms = string.match(last[1][1], '^(%d+)-')
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ms .. '-*', 'j', j)
  end
end
return (#ARGV - 1) / 2
