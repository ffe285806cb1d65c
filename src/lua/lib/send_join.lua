-- send_join's common part (docs/redis-schema.md, "Joins accepted at the
-- edge"); needs lib/json.lua first. KEYS of the scripts that use it, all
-- of one room (one slot):
--  1 meta  2 state  3 member  4 pdu  5 extrem  6 edge  7 edge_pdu
--  8 edge_m  9 edge_old  10 edge_orig  11 mchunk  12 state_m  13 servers
--  14 server_user  15 outbox  16 partial
-- The snapshot's chunks never change; the joins accepted here live beside
-- them. The state at a join's prev_events is the snapshot, minus the
-- member events of users with an edge join among the ancestors (cut by
-- their mchunk position when the answer is written), plus, per such user,
-- the latest of those joins. history() finds the ancestors: every edge
-- join when prev_events are the forward extremities (the fast path, true),
-- else a walk through the edge records ({id = record or false}: edge
-- joins, and the homeserver's non-state events sync put beside them);
-- nil and the first unknown ID when a prev_event is neither. The member
-- events of the homeserver that sync applied in place (src/lua/
-- live_member.lua) are records too ({"s","u","p","h":1,"m"}): in the walk,
-- in edge_m and edge_orig as the joins are; their bytes are in pdu, not in
-- edge_pdu (they are the homeserver's, not joins to confirm).
local K = KEYS
local function uniq(list)
  local seen, out = {}, {}
  for _, v in ipairs(list) do
    if type(v) == 'string' and not seen[v] then
      seen[v] = true
      out[#out + 1] = v
    end
  end
  return out
end
local function chunk_event(u)
  local pos = redis.call('HGET', K[11], u)
  if not pos then return false end
  local c, o, l = pos:match('^(%d+):(%d+):(%d+):')
  if not c then return false end
  local ch = redis.call('LINDEX', K[12], tonumber(c))
  if not ch then return false end
  return ch:sub(tonumber(o) + 1, tonumber(o) + tonumber(l))
end
-- An overlay event's canonical bytes: an edge join's, or a homeserver
-- member event's.
local function stored(id)
  return redis.call('HGET', K[7], id) or redis.call('HGET', K[4], id)
end
local function history(prevs)
  local same = redis.call('HLEN', K[5]) == #prevs
  for _, p in ipairs(prevs) do
    if redis.call('HEXISTS', K[5], p) == 0 then
      same = false
      if redis.call('HEXISTS', K[6], p) == 0 then return nil, p end
    end
  end
  if same then return true end
  local anc, stack = {}, {}
  for i, p in ipairs(prevs) do stack[i] = p end
  while #stack > 0 do
    local id = table.remove(stack)
    if anc[id] == nil then
      anc[id] = false
      local r = redis.call('HGET', K[6], id)
      if r then
        local rec = cjson.decode(r)
        if rec.u then anc[id] = rec end
        -- an edge join, a homeserver member event, or a non-state event
        -- sync applied (rec.h without rec.u: not a state change, but the
        -- joins before it are its ancestors too)
        if rec.p then
          for _, p in ipairs(rec.p) do stack[#stack + 1] = p end
        end
      end
    end
  end
  return anc
end
local function member_at(u, hist)
  local latest = redis.call('HGET', K[8], u)
  if latest then
    local best = false
    if hist == true then
      best = latest
    else
      local bs = -1
      for id, rec in pairs(hist) do
        if rec and rec.u == u and rec.s > bs then best, bs = id, rec.s end
      end
    end
    if best then return best, stored(best) end
    local orig = redis.call('HGET', K[10], u)
    if not orig then return false, false end
    return orig, chunk_event(u) or redis.call('HGET', K[4], orig)
  end
  local id = redis.call('HGET', K[2],
    '["m.room.member",' .. json_string(u) .. ']')
  if not id then return false, false end
  return id, chunk_event(u) or redis.call('HGET', K[4], id)
end
local function membership_of(pdu)
  local ok, ev = pcall(cjson.decode, pdu or '')
  if ok and type(ev) == 'table' and type(ev.content) == 'table' then
    return ev.content.membership
  end
  return nil
end
-- u's member event becomes id (an edge join, or a homeserver member event
-- sync applied in place), of membership ms: the event it replaces is kept
-- for the answers' auth chain (edge_old, or edge_orig for the snapshot's),
-- the state and membership indexes point at id, and the counts and the
-- directory's servers follow the membership. The edge record, the bytes
-- and the extremities are the caller's.
local function overlay_member(id, u, server, ms)
  local skey = '["m.room.member",' .. json_string(u) .. ']'
  local latest = redis.call('HGET', K[8], u)
  if latest then
    redis.call('SADD', K[9], latest)
  else
    local orig = redis.call('HGET', K[2], skey)
    if orig then redis.call('HSET', K[10], u, orig) end
  end
  redis.call('HSET', K[8], u, id)
  redis.call('HSET', K[2], skey, id)
  local was = redis.call('HGET', K[3], u)
  redis.call('HSET', K[3], u, ms)
  local moved = false
  if was == 'join' and ms ~= 'join' then
    redis.call('HINCRBY', K[1], 'members', -1)
    if tonumber(redis.call('ZINCRBY', K[13], 1, server)) >= 0 then
      redis.call('ZREM', K[13], server)
    end
    if redis.call('HGET', K[14], server) == u then
      redis.call('HDEL', K[14], server)
    end
    moved = true
  elseif was ~= 'join' and ms == 'join' then
    redis.call('HINCRBY', K[1], 'members', 1)
    redis.call('ZINCRBY', K[13], -1, server)
    redis.call('HSETNX', K[14], server, u)
    moved = true
  end
  if moved then
    local top = redis.call('ZRANGE', K[13], 0, 99)
    for i, sv in ipairs(top) do top[i] = json_string(sv) end
    redis.call('HSET', K[1], 'servers', '[' .. table.concat(top, ',') .. ']')
  end
  if not was then
    redis.call('HINCRBY', K[1], 'member_events', 1)
    redis.call('HINCRBY', K[1], 'state_events', 1)
  end
end
