-- /state and /state_ids at an event E the edge records since the load
-- (a join accepted here, or an event of the homeserver that sync applied:
-- a non-state event, a member event applied in place): the state before
-- E (at its prev_events; for a join, what its send_join answer gave) and
-- the auth chain of that state.
-- KEYS: the 16 of lib/send_join.lua. ARGV: generation, E, "ids" or
-- "pdus", the requesting server.
-- The state at E is the snapshot's, with, for each user who has an edge
-- record (a join, or a homeserver member event applied in place) among
-- E's ancestors, the latest of them instead of the snapshot's member
-- event. Its auth chain is the snapshot's auth list (the auth chain of
-- the snapshot's state, every event of it in pdu) plus what those
-- records reach through auth_events that the list lacks (the member
-- events they replaced, earlier records, an authoriser's join), each
-- found in edge_pdu, pdu or the chunks, else {"unknown"}.
-- At the snapshot's own extremity E when meta.state_before names it (sync
-- wrote it: E is not a state event and no kept join sits on the
-- snapshot), the state before E is the snapshot itself: no record is on
-- top of it, whatever the edge accepted or applied since.
-- Returns {"gone"}, {"generation"}, {"not_in_room"} (the server has no
-- joined member now), {"unknown", why}, or
-- ids:  {"ok", state IDs, auth chain IDs}
-- pdus: {"ok", overlay state PDUs, cuts ("c:o:l:a"), extra auth PDUs}
--! use json
--! use send_join
local m = redis.call('HMGET', K[1], 'generation', 'room_version',
  'nm_unreferenced', 'state_before')
if not m[1] then return {'gone'} end
if m[1] ~= ARGV[1] then return {'generation'} end
if m[2] == '1' or m[2] == '2' then
  return {'unknown', 'room version ' .. m[2]}
end
local sc = redis.call('ZSCORE', K[13], ARGV[4])
if not sc or tonumber(sc) >= 0 then return {'not_in_room'} end
local e = ARGV[2]
local hist = {}
if e ~= m[4] then
  local rec = redis.call('HGET', K[6], e)
  if not rec then return {'unknown', 'not an event the edge records'} end
  rec = cjson.decode(rec)
  if type(rec.p) ~= 'table' then
    return {'unknown', 'a snapshot extremity the snapshot is not the state '
      .. 'before'}
  end
  hist = history(uniq(rec.p))
  if hist == nil or hist == true then
    return {'unknown', 'its prev_events are not known here'}
  end
end
-- the latest record per user among E's ancestors
local best = {}
for id, r in pairs(hist) do
  if r then
    local b = best[r.u]
    if not b or r.s > hist[b].s then best[r.u] = id end
  end
end
local function decode(p)
  local ok, ev = pcall(cjson.decode, p or '')
  if ok and type(ev) == 'table' then return ev end
  return nil
end
-- the snapshot's auth list (v3+: every pdu entry that is neither a
-- non-member state event outside the auth chain nor an edge record)
local unref = {}
for _, x in ipairs(cjson.decode(m[3] or '[]')) do unref[x] = true end
local function in_auth(a)
  return not unref[a] and redis.call('HEXISTS', K[4], a) == 1
    and redis.call('HEXISTS', K[6], a) == 0
end
-- the auth events the records reach that the list lacks
local seen, todo, xid, xpdu = {}, {}, {}, {}
local function push(ev)
  if type(ev.auth_events) ~= 'table' then return end
  for _, a in ipairs(ev.auth_events) do
    if type(a) == 'table' then a = a[1] end
    if type(a) == 'string' then todo[#todo + 1] = {a, ev} end
  end
end
for _, id in pairs(best) do
  local ev = decode(stored(id))
  if not ev then return {'unknown', 'a record without its PDU'} end
  push(ev)
end
while #todo > 0 do
  local t = table.remove(todo)
  local a, from = t[1], t[2]
  if not seen[a] then
    seen[a] = true
    if not in_auth(a) then
      local p = stored(a)
      if not p then
        -- a snapshot member event outside the auth list: the one the
        -- referring event's user (or authoriser) had before its records
        local c = type(from.content) == 'table' and from.content or {}
        for _, u in ipairs({from.state_key, from.sender,
                            c.join_authorised_via_users_server}) do
          if type(u) == 'string' and not p then
            local o = redis.call('HGET', K[10], u)
            if not o and not redis.call('HGET', K[8], u) then
              o = redis.call('HGET', K[2],
                '["m.room.member",' .. json_string(u) .. ']')
            end
            if o == a then p = chunk_event(u) end
          end
        end
      end
      if not p then return {'unknown', 'auth event ' .. a .. ' not here'} end
      local ev = decode(p)
      if not ev then return {'unknown', 'auth event ' .. a .. ' not JSON'} end
      xid[#xid + 1] = a
      xpdu[#xpdu + 1] = p
      push(ev)
    end
  end
end
if ARGV[3] == 'ids' then
  -- the state index, with each user's member event as it was at E
  local over = {}
  local em = redis.call('HGETALL', K[8])
  for i = 1, #em, 2 do
    local u, latest = em[i], em[i + 1]
    if best[u] then
      over[latest] = best[u]
    else
      over[latest] = redis.call('HGET', K[10], u) or false
    end
  end
  local ids = {}
  for _, v in ipairs(redis.call('HVALS', K[2])) do
    local o = over[v]
    if o == nil then
      ids[#ids + 1] = v
    elseif o then
      ids[#ids + 1] = o
    end
  end
  local auth = {}
  for _, k in ipairs(redis.call('HKEYS', K[4])) do
    if in_auth(k) then auth[#auth + 1] = k end
  end
  for _, a in ipairs(xid) do auth[#auth + 1] = a end
  return {'ok', ids, auth}
end
local sx, cuts = {}, {}
for u, id in pairs(best) do
  sx[#sx + 1] = stored(id)
  local pos = redis.call('HGET', K[11], u)
  if pos then cuts[#cuts + 1] = pos end
end
return {'ok', sx, cuts, xpdu}
