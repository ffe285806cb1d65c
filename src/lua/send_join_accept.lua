-- send_join: accepts the join once (idempotent on its ID) and returns what
-- the answer adds to the snapshot's chunks.
-- KEYS: the 16 of lib/send_join.lua.
-- ARGV: 1 generation, 2 event ID, 3 sender, 4 its server, 5 depth,
-- 6 reference hash (std b64), 7 "1" when member PDUs go into pdu (v1, v2),
-- 8 the PDU as accepted, 9 prev_events (JSON), 10 "1" for omit_members,
-- 11 auth_events IDs (JSON), 12-18 the outbox entry: method, uri,
-- authorization, body, origin, destination, received_ts; 19 the
-- authoriser or "".
-- Returns {"gone"}, {"generation"}, {"conflict"} (the ID is a snapshot
-- event's), {"unknown", id}, {"banned"} (the sender is banned now: a ban
-- sync applied after the join's prev_events; the homeserver would
-- soft-fail the join), or {"ok" | "dup", seq, state extra PDUs,
-- cuts ("c:o:l:a"), auth extra PDUs, servers_in_room JSON or nil, partial
-- state PDUs, partial auth PDUs}.
--! use json
--! use send_join
local m = redis.call('HMGET', K[1], 'generation', 'room_id', 'heroes',
  'max_depth', 'nm_unreferenced')
if not m[1] then return {'gone'} end
if m[1] ~= ARGV[1] then return {'generation'} end
local id, u, server = ARGV[2], ARGV[3], ARGV[4]
local prevs = uniq(cjson.decode(ARGV[9]))
local rec = redis.call('HGET', K[6], id)
if rec then
  rec = cjson.decode(rec)
  if not rec.u then return {'conflict'} end
elseif redis.call('HEXISTS', K[4], id) == 1
    or redis.call('HEXISTS', K[5], id) == 1 then
  return {'conflict'}
end
local hist, unknown = history(prevs)
if hist == nil then return {'unknown', unknown} end
if not rec and redis.call('HGET', K[3], u) == 'ban' then
  return {'banned'}
end
local sx, cuts, ax, ps, pa, servers = {}, {}, {}, {}, {}, false
local function cut(user)
  local pos = redis.call('HGET', K[11], user)
  if pos then cuts[#cuts + 1] = pos end
end
if ARGV[10] ~= '1' then
  if hist == true then
    local em = redis.call('HGETALL', K[8])
    for i = 1, #em, 2 do
      sx[#sx + 1] = stored(em[i + 1])
      cut(em[i])
    end
    for _, old in ipairs(redis.call('SMEMBERS', K[9])) do
      ax[#ax + 1] = stored(old)
    end
  else
    local best = {}
    for eid, r in pairs(hist) do
      if r then
        local b = best[r.u]
        if not b or r.s > hist[b].s then best[r.u] = eid end
      end
    end
    for eid, r in pairs(hist) do
      if r then
        if best[r.u] == eid then
          sx[#sx + 1] = stored(eid)
          cut(r.u)
        else
          ax[#ax + 1] = stored(eid)
        end
      end
    end
  end
  -- the join's own auth events that neither the auth list nor the
  -- above hold: the member events of its sender and authoriser at
  -- prev_events (an edge join, or a snapshot event outside the auth
  -- chain) and state events nothing else references
  local function own(user)
    local eid, pdu = member_at(user, hist)
    if not eid or not pdu then return end
    local pos = redis.call('HGET', K[11], user)
    if redis.call('HEXISTS', K[6], eid) == 1
        or (pos and pos:sub(-1) == '0') then
      ax[#ax + 1] = pdu
    end
  end
  own(u)
  if ARGV[19] ~= '' then own(ARGV[19]) end
  if m[5] then
    local un = {}
    for _, e in ipairs(cjson.decode(m[5])) do un[e] = true end
    for _, a in ipairs(cjson.decode(ARGV[11])) do
      if un[a] then ax[#ax + 1] = redis.call('HGET', K[4], a) end
    end
  end
else
  local stop, seen, todo, hint = {}, {}, {}, {}
  local function refs(pdu, user)
    local ok, ev = pcall(cjson.decode, pdu)
    if ok and type(ev) == 'table' and type(ev.auth_events) == 'table' then
      for _, a in ipairs(ev.auth_events) do
        if type(a) == 'table' then a = a[1] end
        if type(a) == 'string' then
          todo[#todo + 1] = a
          hint[#todo] = user
        end
      end
    end
  end
  local function member(user)
    local eid, pdu = member_at(user, hist)
    if eid and pdu and not stop[eid] then
      stop[eid] = true
      ps[#ps + 1] = pdu
      refs(pdu, user)
    end
    return pdu
  end
  local before = member(u)
  if m[3] then
    -- the heroes at prev_events: the loaded ones still joined or invited,
    -- then the edge joins among the ancestors (they came later), then
    -- the loaded ones who left or were banned
    local joined, gone, seen_h = {}, {}, {[u] = true}
    for _, h in ipairs(cjson.decode(m[3])) do
      if not seen_h[h] then
        seen_h[h] = true
        local _, pdu = member_at(h, hist)
        local ms = membership_of(pdu)
        if ms == 'join' or ms == 'invite' then
          joined[#joined + 1] = h
        elseif pdu then
          gone[#gone + 1] = h
        end
      end
    end
    if #joined < 5 then
      local recs = {}
      if hist == true then
        local em = redis.call('HGETALL', K[8])
        for i = 1, #em, 2 do
          local r = redis.call('HGET', K[6], em[i + 1])
          if r then recs[#recs + 1] = cjson.decode(r) end
        end
      else
        for _, r in pairs(hist) do
          if r then recs[#recs + 1] = r end
        end
      end
      table.sort(recs, function(x, y) return x.s < y.s end)
      -- (a record is a join, or a homeserver member event of any
      -- membership: the user's latest at prev_events decides)
      for _, r in ipairs(recs) do
        if not seen_h[r.u] then
          seen_h[r.u] = true
          local _, pdu = member_at(r.u, hist)
          local ms = membership_of(pdu)
          if ms == 'join' or ms == 'invite' then
            joined[#joined + 1] = r.u
          end
        end
      end
    end
    for _, h in ipairs(gone) do joined[#joined + 1] = h end
    for i = 1, math.min(5, #joined) do member(joined[i]) end
  end
  for _, a in ipairs(cjson.decode(ARGV[11])) do
    todo[#todo + 1] = a
    hint[#todo] = u
  end
  while #todo > 0 do
    local n = #todo
    local a, user = todo[n], hint[n]
    todo[n], hint[n] = nil, nil
    if not stop[a] and not seen[a] then
      seen[a] = true
      local pv = redis.call('HGET', K[16], a)
      if pv ~= 's' and pv ~= 'a' then
        local pdu = stored(a)
        if not pdu and redis.call('HGET', K[10], user) == a then
          pdu = chunk_event(user)
        end
        if pdu then
          pa[#pa + 1] = pdu
          local r = redis.call('HGET', K[6], a)
          refs(pdu, r and cjson.decode(r).u or user)
        end
      end
    end
  end
  local sv = redis.call('ZRANGE', K[13], 0, -1)
  local list = {}
  for _, s in ipairs(sv) do
    if not (rec and s == server
            and tonumber(redis.call('ZSCORE', K[13], s)) == -1
            and membership_of(before) ~= 'join')
    then
      list[#list + 1] = json_string(s)
    end
  end
  servers = '[' .. table.concat(list, ',') .. ']'
end
local seq
if rec then
  seq = rec.s
else
  seq = redis.call('HINCRBY', K[1], 'edge_seq', 1)
  redis.call('HINCRBY', K[1], 'edge_joins', 1)
  overlay_member(id, u, server, 'join')
  redis.call('HSET', K[6], id, cjson.encode({s = seq, u = u, p = prevs}))
  redis.call('HSET', K[7], id, ARGV[8])
  for _, p in ipairs(prevs) do
    if redis.call('HDEL', K[5], p) == 1
        and redis.call('HEXISTS', K[6], p) == 0 then
      redis.call('HSET', K[6], p, '{"b":1}')
    end
  end
  redis.call('HSET', K[5], id,
    '{"depth":' .. ARGV[5] .. ',"sha256":"' .. ARGV[6] .. '"}')
  if ARGV[7] == '1' then redis.call('HSET', K[4], id, ARGV[8]) end
  redis.call('HSET', K[1], 'extremities', redis.call('HLEN', K[5]))
  if tonumber(ARGV[5]) > (tonumber(m[4]) or 0) then
    redis.call('HSET', K[1], 'max_depth', ARGV[5])
  end
  redis.call('XADD', K[15], '*', 'method', ARGV[12], 'uri', ARGV[13],
    'authorization', ARGV[14], 'body', ARGV[15], 'origin', ARGV[16],
    'destination', ARGV[17], 'room_id', m[2], 'event_id', id,
    'received_ts', ARGV[18])
end
return {rec and 'dup' or 'ok', seq, sx, cuts, ax, servers, ps, pa}
