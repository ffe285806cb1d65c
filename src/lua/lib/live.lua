-- sync's per-event advance, the part live_advance.lua (non-state events)
-- and live_member.lua (member events) share; needs lib/json.lua first.
-- Arguments are key names: meta, extrem, edge of one room.

-- The first of prevs that is neither a forward extremity nor an edge
-- record (nil when all are known).
local function live_unknown(extrem, edge, prevs)
  for _, p in ipairs(prevs) do
    if redis.call('HEXISTS', extrem, p) == 0
        and redis.call('HEXISTS', edge, p) == 0 then
      return p
    end
  end
  return nil
end

-- E becomes a forward extremity (depth, reference hash) and its
-- prev_events stop being ones (a snapshot extremity it replaces is
-- recorded {"b":1}, as an edge join's are); E's own edge record is the
-- caller's. Counts: max_depth, live_events, extremities, live_at.
local function live_extremity(meta, extrem, edge, id, depth, sha, prevs)
  for _, p in ipairs(prevs) do
    if redis.call('HDEL', extrem, p) == 1
        and redis.call('HEXISTS', edge, p) == 0 then
      redis.call('HSET', edge, p, '{"b":1}')
    end
  end
  redis.call('HSET', extrem, id,
    '{"depth":' .. depth .. ',"sha256":"' .. sha .. '"}')
  local md = tonumber(redis.call('HGET', meta, 'max_depth')) or 0
  if tonumber(depth) > md then
    redis.call('HSET', meta, 'max_depth', depth)
  end
  local t = redis.call('TIME')
  redis.call('HINCRBY', meta, 'live_events', 1)
  redis.call('HSET', meta, 'extremities', redis.call('HLEN', extrem),
    'live_at', t[1] .. string.format('%03d',
      math.floor(tonumber(t[2]) / 1000)))
end

-- One pushed event counted in live_pending (src/lua/live_push.lua) is
-- done with (applied, or known already): at 0, the field and a "pushed"
-- stale mark go.
local function live_taken(meta)
  local n = redis.call('HINCRBY', meta, 'live_pending', -1)
  if n <= 0 then
    redis.call('HDEL', meta, 'live_pending')
    if redis.call('HGET', meta, 'stale_reason') == 'pushed' then
      redis.call('HDEL', meta, 'stale', 'stale_reason')
    end
  end
end
