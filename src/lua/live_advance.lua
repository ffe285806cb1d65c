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
--! use live
local K = KEYS
if redis.call('EXISTS', K[1]) == 0 then return {'gone'} end
local id = ARGV[1]
local prevs = cjson.decode(ARGV[4])
local what = 'ok'
if redis.call('HEXISTS', K[2], id) == 1
    or redis.call('HEXISTS', K[3], id) == 1 then
  what = 'dup'
else
  local p = live_unknown(K[2], K[3], prevs)
  if p then return {'unknown', p} end
  local list = {}
  for i, q in ipairs(prevs) do list[i] = json_string(q) end
  live_extremity(K[1], K[2], K[3], id, ARGV[2], ARGV[3], prevs)
  redis.call('HSET', K[3], id,
    '{"h":1,"p":[' .. table.concat(list, ',') .. ']}')
end
if ARGV[5] == '1' then live_taken(K[1]) end
return {what, redis.call('HLEN', K[2])}
