-- A room's outbox as matrix_status and `matrix-join-ctl outbox` report it:
-- pending, in flight (read by the forwarder's group, not acknowledged),
-- dead letters, and the age of the oldest entry in ms (delivered entries
-- are deleted, so the stream's first entry is the oldest).
local function outbox_counts(outbox, dead, group)
  local function n(v) if type(v) == 'number' then return v end return 0 end
  local pending = n(redis.pcall('XLEN', outbox))
  local dead_n = n(redis.pcall('XLEN', dead))
  local inflight, age = 0, 0
  if pending > 0 then
    local p = redis.pcall('XPENDING', outbox, group)
    if type(p) == 'table' then inflight = n(p[1]) end
    local f = redis.call('XRANGE', outbox, '-', '+', 'COUNT', 1)
    if f[1] then
      local t = redis.call('TIME')
      local ms = tonumber(string.match(f[1][1], '^(%d+)')) or 0
      age = math.max(0, tonumber(t[1]) * 1000
        + math.floor(tonumber(t[2]) / 1000) - ms)
    end
  end
  return pending, inflight, dead_n, age
end
