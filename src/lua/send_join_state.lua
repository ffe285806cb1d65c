-- send_join: the state the join's auth checks need, at its prev_events.
-- KEYS: the 16 of lib/send_join.lua. ARGV: generation, sender, authoriser
-- or "", prev_events (JSON array of IDs).
-- Returns {"gone"}, {"generation"}, {"unknown", id} or {"ok", create ID,
-- power levels ID, join rules ID, their three PDUs, the sender's member
-- event ID and PDU, the authoriser's member event ID and PDU}.
--! use json
--! use send_join
local m = redis.call('HMGET', K[1], 'generation', 'create_event_id')
if not m[1] then return {'gone'} end
if m[1] ~= ARGV[1] then return {'generation'} end
local hist, unknown = history(uniq(cjson.decode(ARGV[4])))
if hist == nil then return {'unknown', unknown} end
local ids = redis.call('HMGET', K[2], '["m.room.power_levels",""]',
  '["m.room.join_rules",""]')
local out = {'ok', m[2] or false, ids[1] or false, ids[2] or false,
  m[2] and redis.call('HGET', K[4], m[2]) or false,
  ids[1] and redis.call('HGET', K[4], ids[1]) or false,
  ids[2] and redis.call('HGET', K[4], ids[2]) or false}
out[8], out[9] = member_at(ARGV[2], hist)
out[10], out[11] = false, false
if ARGV[3] ~= '' then out[10], out[11] = member_at(ARGV[3], hist) end
return out
