-- sync's per-event advance: one checked non-state event E of the
-- homeserver whose prev_events the snapshot knows becomes a forward
-- extremity; its prev_events stop being ones. The state is unchanged.
-- E is recorded in edge as {"h":1,"p":[prev IDs]} so that send_join's walk
-- over the ancestors of a join's prev_events goes through it (the edge
-- joins before it are in the state at E); a snapshot extremity it
-- replaces is recorded {"b":1}, as an edge join's are.
-- KEYS: meta, extrem, edge.
-- ARGV: 1 event ID, 2 depth, 3 reference hash (std b64), 4 prev_events
-- IDs (JSON array), 5 "1" when this event was counted in live_pending.
-- Returns {"gone"} (not cached), {"unknown", prev ID} (nothing written),
-- or {"ok" | "dup", extremities}. Each "ok" or "dup" takes one from
-- live_pending (when ARGV 5); at 0, a "pushed" stale mark goes.
--! use json
local K = KEYS
if redis.call('EXISTS', K[1]) == 0 then return {'gone'} end
local id = ARGV[1]
local prevs = cjson.decode(ARGV[4])
local what = 'ok'
if redis.call('HEXISTS', K[2], id) == 1
    or redis.call('HEXISTS', K[3], id) == 1 then
  what = 'dup'
else
  for _, p in ipairs(prevs) do
    if redis.call('HEXISTS', K[2], p) == 0
        and redis.call('HEXISTS', K[3], p) == 0 then
      return {'unknown', p}
    end
  end
  local list = {}
  for i, p in ipairs(prevs) do
    list[i] = json_string(p)
    if redis.call('HDEL', K[2], p) == 1
        and redis.call('HEXISTS', K[3], p) == 0 then
      redis.call('HSET', K[3], p, '{"b":1}')
    end
  end
  redis.call('HSET', K[3], id,
    '{"h":1,"p":[' .. table.concat(list, ',') .. ']}')
  redis.call('HSET', K[2], id,
    '{"depth":' .. ARGV[2] .. ',"sha256":"' .. ARGV[3] .. '"}')
  local md = tonumber(redis.call('HGET', K[1], 'max_depth')) or 0
  if tonumber(ARGV[2]) > md then
    redis.call('HSET', K[1], 'max_depth', ARGV[2])
  end
  local t = redis.call('TIME')
  redis.call('HINCRBY', K[1], 'live_events', 1)
  redis.call('HSET', K[1], 'extremities', redis.call('HLEN', K[2]),
    'live_at', t[1] .. string.format('%03d',
      math.floor(tonumber(t[2]) / 1000)))
end
if ARGV[5] == '1' then
  local n = redis.call('HINCRBY', K[1], 'live_pending', -1)
  if n <= 0 then
    redis.call('HDEL', K[1], 'live_pending')
    if redis.call('HGET', K[1], 'stale_reason') == 'pushed' then
      redis.call('HDEL', K[1], 'stale', 'stale_reason')
    end
  end
end
return {what, redis.call('HLEN', K[2])}
