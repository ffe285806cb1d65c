-- /event/{eventId}: the event's canonical PDU, if this room's snapshot
-- holds it (docs/redis-schema.md: pdu for non-member state, the auth
-- chain and, in v1/v2, member events; edge_pdu for joins accepted at the
-- edge; a member event of the snapshot's state only in the chunks through
-- mevent, its user, and mchunk, where it lies in state_m), and
-- what the history visibility rule needs (Synapse's
-- filter_events_for_server, with the visibility at the event).
-- KEYS: P{R}:meta, pdu, edge_pdu, state, mevent, mchunk, state_m. ARGV:
-- the event ID.
-- Returns false (not in this room's snapshot) or {PDU, loaded_at, stale,
-- visibility, state_key}: visibility "open" (any server with a member in
-- the room now may read it), "member" (only the server of state_key: the
-- event is its user's join, or invite under "invited"), or "unknown" (the
-- visibility at the event is not known here).
--! use json
local id = ARGV[1]
local m = redis.call('HMGET', KEYS[1], 'loaded_at', 'stale', 'generation')
if not m[1] then return false end
local pdu = redis.call('HGET', KEYS[2], id) or redis.call('HGET', KEYS[3], id)
if not pdu then
  -- "<chunk>:<offset>:<length>:<a>", bytes [offset, offset + length) of
  -- LINDEX state_m chunk (docs/redis-schema.md)
  local user = redis.call('HGET', KEYS[5], id)
  local at = user and redis.call('HGET', KEYS[6], user)
  local c, o, l = string.match(at or '', '^(%d+):(%d+):(%d+):')
  if c then
    local chunk = redis.call('LINDEX', KEYS[7], tonumber(c))
    if chunk then
      pdu = string.sub(chunk, tonumber(o) + 1, tonumber(o) + tonumber(l))
    end
  end
end
if not pdu or pdu == '' then return false end
local function decode(p)
  local ok, ev = pcall(cjson.decode, p or '')
  if ok and type(ev) == 'table' then return ev end
  return nil
end
local ev = decode(pdu)
if not ev then return {pdu, m[1], m[2] or false, 'unknown', false} end
-- the visibility at the event: the current history_visibility event's
-- when that is the event itself or not deeper than it; none ("shared")
-- when the room has never had one (a state key once set stays in the
-- state) or the event is older than the first one
local vis
local hid = redis.call('HGET', KEYS[4], '["m.room.history_visibility",""]')
if not hid then
  vis = 'shared'
else
  local h = decode(redis.call('HGET', KEYS[2], hid))
  if h and type(h.content) == 'table' and type(h.depth) == 'number'
      and type(ev.depth) == 'number' then
    if hid == id or ev.depth >= h.depth then
      vis = h.content.history_visibility
      if vis == nil then vis = 'shared' end
    elseif not (type(h.unsigned) == 'table' and h.unsigned.replaces_state)
    then
      -- older than the room's first history_visibility event (Synapse
      -- marks a state event that replaced another with
      -- unsigned.replaces_state): none at the event, "shared"
      vis = 'shared'
    end
  end
end
local out = 'unknown'
local sk = false
if type(vis) == 'string' then
  if vis ~= 'joined' and vis ~= 'invited' then
    out = 'open'
  elseif ev.type == 'm.room.member' and type(ev.state_key) == 'string'
      and type(ev.content) == 'table'
      and (ev.content.membership == 'join'
           or (vis == 'invited' and ev.content.membership == 'invite')) then
    out, sk = 'member', ev.state_key
  end
end
return {pdu, m[1], m[2] or false, out, sk}
