-- make_join, one read of one snapshot.
-- KEYS: P{R}:meta, state, member, pdu, extrem, servers, server_user.
-- ARGV: the user, our server name, the user's state index field
-- (canonical JSON ["m.room.member", user]).
-- Returns nil when the room is not cached, else
-- {{room_version, loaded_at, stale, create_event_id},
--  {ids of create, power_levels, join_rules, server_acl, the user's
--   member event}, {their PDUs (members: v1/v2 only)},
--  the user's membership, our score (minus our joined members),
--  {extremity, json, ...}, {{user, membership, id, pdu}...}}
-- the last, only for restricted join rules, being the local users that
-- could authorise: our users in the power levels, the room's creators,
-- and the server's listed joined user.
--! use json
local m = redis.call('HMGET', KEYS[1], 'room_version', 'loaded_at', 'stale',
  'create_event_id')
if not m[1] then return false end
local user, ours = ARGV[1], ARGV[2]
local ids = redis.call('HMGET', KEYS[2], '["m.room.create",""]',
  '["m.room.power_levels",""]', '["m.room.join_rules",""]',
  '["m.room.server_acl",""]', ARGV[3])
local pdus = {}
for i = 1, 5 do
  pdus[i] = ids[i] and redis.call('HGET', KEYS[4], ids[i]) or false
end
local function content(pdu)
  if not pdu then return nil end
  local ok, e = pcall(cjson.decode, pdu)
  if ok and type(e) == 'table' and type(e.content) == 'table' then
    return e
  end
  return nil
end
local rules = content(pdus[3])
local cands = {}
if rules and (rules.content.join_rule == 'restricted'
              or rules.content.join_rule == 'knock_restricted') then
  local seen = {}
  local function cand(u)
    if type(u) ~= 'string' or seen[u] then return end
    local c = u:find(':', 1, true)
    if not c or u:sub(c + 1) ~= ours then return end
    seen[u] = true
    local id = redis.call('HGET', KEYS[2],
      '["m.room.member",' .. json_string(u) .. ']')
    if not id then return end
    cands[#cands + 1] = {u, redis.call('HGET', KEYS[3], u) or false, id,
      redis.call('HGET', KEYS[4], id) or false}
  end
  local create, pl = content(pdus[1]), content(pdus[2])
  if create then
    cand(create.sender)
    if type(create.content.additional_creators) == 'table' then
      for _, u in ipairs(create.content.additional_creators) do cand(u) end
    end
  end
  if pl and type(pl.content.users) == 'table' then
    for u, _ in pairs(pl.content.users) do cand(u) end
  end
  cand(redis.call('HGET', KEYS[7], ours))
end
return {m, ids, pdus, redis.call('HGET', KEYS[3], user) or false,
  redis.call('ZSCORE', KEYS[6], ours) or false, redis.call('HGETALL', KEYS[5]),
  cands}
