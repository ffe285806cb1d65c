/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The Lua of send_join (docs/redis-schema.md, "Joins accepted at the
 * edge"). Included once, by ngx_matrix_redis.c, into its script table.
 *
 * KEYS of the state and accept scripts, all of one room (one slot):
 *  1 meta  2 state  3 member  4 pdu  5 extrem  6 edge  7 edge_pdu
 *  8 edge_m  9 edge_old  10 edge_orig  11 mchunk  12 state_m  13 servers
 *  14 server_user  15 outbox  16 partial
 *
 * The snapshot's chunks never change; the joins accepted here live beside
 * them. The state at a join's prev_events is the snapshot, minus the
 * member events of users with an edge join among the ancestors (cut by
 * their mchunk position when the answer is written), plus, per such user,
 * the latest of those joins. history() finds the ancestors: every edge
 * join when prev_events are the forward extremities (the fast path), else
 * a walk through the edge records.
 */

#ifndef NGX_MATRIX_SEND_JOIN_LUA_H
#define NGX_MATRIX_SEND_JOIN_LUA_H

/* js(), uniq(), chunk_event(), history(), member_at() */
#define NGX_MATRIX_LUA_SEND_JOIN_COMMON \
    "local K = KEYS\n" \
    "local function js(s)\n" \
    "  return '\"' .. s:gsub('[%z\\1-\\31\"\\\\]', function(c)\n" \
    "    local b = c:byte()\n" \
    "    if c == '\"' then return '\\\\\"' end\n" \
    "    if c == '\\\\' then return '\\\\\\\\' end\n" \
    "    if b == 8 then return '\\\\b' end\n" \
    "    if b == 9 then return '\\\\t' end\n" \
    "    if b == 10 then return '\\\\n' end\n" \
    "    if b == 12 then return '\\\\f' end\n" \
    "    if b == 13 then return '\\\\r' end\n" \
    "    return string.format('\\\\u%04x', b)\n" \
    "  end) .. '\"'\n" \
    "end\n" \
    "local function uniq(list)\n" \
    "  local seen, out = {}, {}\n" \
    "  for _, v in ipairs(list) do\n" \
    "    if type(v) == 'string' and not seen[v] then\n" \
    "      seen[v] = true\n" \
    "      out[#out + 1] = v\n" \
    "    end\n" \
    "  end\n" \
    "  return out\n" \
    "end\n" \
    "local function chunk_event(u)\n" \
    "  local pos = redis.call('HGET', K[11], u)\n" \
    "  if not pos then return false end\n" \
    "  local c, o, l = pos:match('^(%d+):(%d+):(%d+):')\n" \
    "  if not c then return false end\n" \
    "  local ch = redis.call('LINDEX', K[12], tonumber(c))\n" \
    "  if not ch then return false end\n" \
    "  return ch:sub(tonumber(o) + 1, tonumber(o) + tonumber(l))\n" \
    "end\n" \
    "local function history(prevs)\n" \
    "  local same = redis.call('HLEN', K[5]) == #prevs\n" \
    "  for _, p in ipairs(prevs) do\n" \
    "    if redis.call('HEXISTS', K[5], p) == 0 then\n" \
    "      same = false\n" \
    "      if redis.call('HEXISTS', K[6], p) == 0 then return nil, p end\n" \
    "    end\n" \
    "  end\n" \
    "  if same then return true end\n" \
    "  local anc, stack = {}, {}\n" \
    "  for i, p in ipairs(prevs) do stack[i] = p end\n" \
    "  while #stack > 0 do\n" \
    "    local id = table.remove(stack)\n" \
    "    if anc[id] == nil then\n" \
    "      anc[id] = false\n" \
    "      local r = redis.call('HGET', K[6], id)\n" \
    "      if r then\n" \
    "        local rec = cjson.decode(r)\n" \
    "        if rec.u then\n" \
    "          anc[id] = rec\n" \
    "          for _, p in ipairs(rec.p) do stack[#stack + 1] = p end\n" \
    "        end\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  return anc\n" \
    "end\n" \
    "local function member_at(u, hist)\n" \
    "  local latest = redis.call('HGET', K[8], u)\n" \
    "  if latest then\n" \
    "    local best = false\n" \
    "    if hist == true then\n" \
    "      best = latest\n" \
    "    else\n" \
    "      local bs = -1\n" \
    "      for id, rec in pairs(hist) do\n" \
    "        if rec and rec.u == u and rec.s > bs then best, bs = id, rec.s end\n" \
    "      end\n" \
    "    end\n" \
    "    if best then return best, redis.call('HGET', K[7], best) end\n" \
    "    local orig = redis.call('HGET', K[10], u)\n" \
    "    if not orig then return false, false end\n" \
    "    return orig, chunk_event(u) or redis.call('HGET', K[4], orig)\n" \
    "  end\n" \
    "  local id = redis.call('HGET', K[2], '[\"m.room.member\",' .. js(u) .. ']')\n" \
    "  if not id then return false, false end\n" \
    "  return id, chunk_event(u) or redis.call('HGET', K[4], id)\n" \
    "end\n"

/*
 * Before authentication. KEYS: meta, state, pdu. Returns nil (not
 * cached) or {{room_version, loaded_at, stale, generation}, acl PDU}.
 */
#define NGX_MATRIX_LUA_SEND_JOIN_META \
    "local m = redis.call('HMGET', KEYS[1], 'room_version', 'loaded_at', 'stale',\n" \
    "  'generation')\n" \
    "if not m[1] then return false end\n" \
    "local acl = redis.call('HGET', KEYS[2], '[\"m.room.server_acl\",\"\"]')\n" \
    "return {m, acl and redis.call('HGET', KEYS[3], acl) or false}\n"

/*
 * The state the join's auth checks need, at its prev_events. ARGV:
 * generation, sender, authoriser or "", prev_events (JSON array of IDs).
 * Returns {"gone"}, {"generation"}, {"unknown", id} or {"ok", create ID,
 * power levels ID, join rules ID, their three PDUs, the sender's member
 * event ID and PDU, the authoriser's member event ID and PDU}.
 */
#define NGX_MATRIX_LUA_SEND_JOIN_STATE \
    NGX_MATRIX_LUA_SEND_JOIN_COMMON \
    "local m = redis.call('HMGET', K[1], 'generation', 'create_event_id')\n" \
    "if not m[1] then return {'gone'} end\n" \
    "if m[1] ~= ARGV[1] then return {'generation'} end\n" \
    "local hist, unknown = history(uniq(cjson.decode(ARGV[4])))\n" \
    "if hist == nil then return {'unknown', unknown} end\n" \
    "local ids = redis.call('HMGET', K[2], '[\"m.room.power_levels\",\"\"]',\n" \
    "  '[\"m.room.join_rules\",\"\"]')\n" \
    "local out = {'ok', m[2] or false, ids[1] or false, ids[2] or false,\n" \
    "  m[2] and redis.call('HGET', K[4], m[2]) or false,\n" \
    "  ids[1] and redis.call('HGET', K[4], ids[1]) or false,\n" \
    "  ids[2] and redis.call('HGET', K[4], ids[2]) or false}\n" \
    "out[8], out[9] = member_at(ARGV[2], hist)\n" \
    "out[10], out[11] = false, false\n" \
    "if ARGV[3] ~= '' then out[10], out[11] = member_at(ARGV[3], hist) end\n" \
    "return out\n"

/*
 * Accepts the join once (idempotent on its ID) and returns what the
 * answer adds to the snapshot's chunks. ARGV: 1 generation, 2 event ID,
 * 3 sender, 4 its server, 5 depth, 6 reference hash (std b64), 7 "1" when
 * member PDUs go into pdu (v1, v2), 8 the PDU as accepted, 9 prev_events
 * (JSON), 10 "1" for omit_members, 11 auth_events IDs (JSON), 12-18 the
 * outbox entry: method, uri, authorization, body, origin, destination,
 * received_ts; 19 the authoriser or "". Returns {"gone"}, {"generation"}, {"conflict"} (the ID is
 * a snapshot event's), {"unknown", id}, or {"ok" | "dup", seq, state
 * extra PDUs, cuts ("c:o:l:a"), auth extra PDUs, servers_in_room JSON or
 * nil, partial state PDUs, partial auth PDUs}.
 */
#define NGX_MATRIX_LUA_SEND_JOIN_ACCEPT \
    NGX_MATRIX_LUA_SEND_JOIN_COMMON \
    "local m = redis.call('HMGET', K[1], 'generation', 'room_id', 'heroes',\n" \
    "  'max_depth', 'nm_unreferenced')\n" \
    "if not m[1] then return {'gone'} end\n" \
    "if m[1] ~= ARGV[1] then return {'generation'} end\n" \
    "local id, u, server = ARGV[2], ARGV[3], ARGV[4]\n" \
    "local prevs = uniq(cjson.decode(ARGV[9]))\n" \
    "local rec = redis.call('HGET', K[6], id)\n" \
    "if rec then\n" \
    "  rec = cjson.decode(rec)\n" \
    "  if not rec.u then return {'conflict'} end\n" \
    "elseif redis.call('HEXISTS', K[4], id) == 1\n" \
    "    or redis.call('HEXISTS', K[5], id) == 1 then\n" \
    "  return {'conflict'}\n" \
    "end\n" \
    "local hist, unknown = history(prevs)\n" \
    "if hist == nil then return {'unknown', unknown} end\n" \
    "local sx, cuts, ax, ps, pa, servers = {}, {}, {}, {}, {}, false\n" \
    "local function cut(user)\n" \
    "  local pos = redis.call('HGET', K[11], user)\n" \
    "  if pos then cuts[#cuts + 1] = pos end\n" \
    "end\n" \
    "if ARGV[10] ~= '1' then\n" \
    "  if hist == true then\n" \
    "    local em = redis.call('HGETALL', K[8])\n" \
    "    for i = 1, #em, 2 do\n" \
    "      sx[#sx + 1] = redis.call('HGET', K[7], em[i + 1])\n" \
    "      cut(em[i])\n" \
    "    end\n" \
    "    for _, old in ipairs(redis.call('SMEMBERS', K[9])) do\n" \
    "      ax[#ax + 1] = redis.call('HGET', K[7], old)\n" \
    "    end\n" \
    "  else\n" \
    "    local best = {}\n" \
    "    for eid, r in pairs(hist) do\n" \
    "      if r then\n" \
    "        local b = best[r.u]\n" \
    "        if not b or r.s > hist[b].s then best[r.u] = eid end\n" \
    "      end\n" \
    "    end\n" \
    "    for eid, r in pairs(hist) do\n" \
    "      if r then\n" \
    "        if best[r.u] == eid then\n" \
    "          sx[#sx + 1] = redis.call('HGET', K[7], eid)\n" \
    "          cut(r.u)\n" \
    "        else\n" \
    "          ax[#ax + 1] = redis.call('HGET', K[7], eid)\n" \
    "        end\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  -- the join's own auth events that neither the auth list nor the\n" \
    "  -- above hold: the member events of its sender and authoriser at\n" \
    "  -- prev_events (an edge join, or a snapshot event outside the auth\n" \
    "  -- chain) and state events nothing else references\n" \
    "  local function own(user)\n" \
    "    local eid, pdu = member_at(user, hist)\n" \
    "    if not eid or not pdu then return end\n" \
    "    local pos = redis.call('HGET', K[11], user)\n" \
    "    if redis.call('HEXISTS', K[6], eid) == 1\n" \
    "        or (pos and pos:sub(-1) == '0') then\n" \
    "      ax[#ax + 1] = pdu\n" \
    "    end\n" \
    "  end\n" \
    "  own(u)\n" \
    "  if ARGV[19] ~= '' then own(ARGV[19]) end\n" \
    "  if m[5] then\n" \
    "    local un = {}\n" \
    "    for _, e in ipairs(cjson.decode(m[5])) do un[e] = true end\n" \
    "    for _, a in ipairs(cjson.decode(ARGV[11])) do\n" \
    "      if un[a] then ax[#ax + 1] = redis.call('HGET', K[4], a) end\n" \
    "    end\n" \
    "  end\n" \
    "else\n" \
    "  local stop, seen, todo, hint = {}, {}, {}, {}\n" \
    "  local function refs(pdu, user)\n" \
    "    local ok, ev = pcall(cjson.decode, pdu)\n" \
    "    if ok and type(ev) == 'table' and type(ev.auth_events) == 'table' then\n" \
    "      for _, a in ipairs(ev.auth_events) do\n" \
    "        if type(a) == 'table' then a = a[1] end\n" \
    "        if type(a) == 'string' then\n" \
    "          todo[#todo + 1] = a\n" \
    "          hint[#todo] = user\n" \
    "        end\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  local function member(user)\n" \
    "    local eid, pdu = member_at(user, hist)\n" \
    "    if eid and pdu and not stop[eid] then\n" \
    "      stop[eid] = true\n" \
    "      ps[#ps + 1] = pdu\n" \
    "      refs(pdu, user)\n" \
    "    end\n" \
    "    return pdu\n" \
    "  end\n" \
    "  local before = member(u)\n" \
    "  if m[3] then\n" \
    "    -- the heroes at prev_events: the loaded ones still joined or invited,\n" \
    "    -- then the edge joins among the ancestors (they came later), then\n" \
    "    -- the loaded ones who left or were banned\n" \
    "    local joined, gone, seen_h = {}, {}, {[u] = true}\n" \
    "    for _, h in ipairs(cjson.decode(m[3])) do\n" \
    "      if not seen_h[h] then\n" \
    "        seen_h[h] = true\n" \
    "        local _, pdu = member_at(h, hist)\n" \
    "        local ok, ev = pcall(cjson.decode, pdu or '')\n" \
    "        local ms = ok and type(ev) == 'table' and type(ev.content) == 'table'\n" \
    "          and ev.content.membership\n" \
    "        if ms == 'join' or ms == 'invite' then\n" \
    "          joined[#joined + 1] = h\n" \
    "        elseif pdu then\n" \
    "          gone[#gone + 1] = h\n" \
    "        end\n" \
    "      end\n" \
    "    end\n" \
    "    if #joined < 5 then\n" \
    "      local recs = {}\n" \
    "      if hist == true then\n" \
    "        local em = redis.call('HGETALL', K[8])\n" \
    "        for i = 1, #em, 2 do\n" \
    "          local r = redis.call('HGET', K[6], em[i + 1])\n" \
    "          if r then recs[#recs + 1] = cjson.decode(r) end\n" \
    "        end\n" \
    "      else\n" \
    "        for _, r in pairs(hist) do\n" \
    "          if r then recs[#recs + 1] = r end\n" \
    "        end\n" \
    "      end\n" \
    "      table.sort(recs, function(x, y) return x.s < y.s end)\n" \
    "      for _, r in ipairs(recs) do\n" \
    "        if not seen_h[r.u] then\n" \
    "          seen_h[r.u] = true\n" \
    "          joined[#joined + 1] = r.u\n" \
    "        end\n" \
    "      end\n" \
    "    end\n" \
    "    for _, h in ipairs(gone) do joined[#joined + 1] = h end\n" \
    "    for i = 1, math.min(5, #joined) do member(joined[i]) end\n" \
    "  end\n" \
    "  for _, a in ipairs(cjson.decode(ARGV[11])) do\n" \
    "    todo[#todo + 1] = a\n" \
    "    hint[#todo] = u\n" \
    "  end\n" \
    "  while #todo > 0 do\n" \
    "    local n = #todo\n" \
    "    local a, user = todo[n], hint[n]\n" \
    "    todo[n], hint[n] = nil, nil\n" \
    "    if not stop[a] and not seen[a] then\n" \
    "      seen[a] = true\n" \
    "      local pv = redis.call('HGET', K[16], a)\n" \
    "      if pv ~= 's' and pv ~= 'a' then\n" \
    "        local pdu = redis.call('HGET', K[4], a) or redis.call('HGET', K[7], a)\n" \
    "        if not pdu and redis.call('HGET', K[10], user) == a then\n" \
    "          pdu = chunk_event(user)\n" \
    "        end\n" \
    "        if pdu then\n" \
    "          pa[#pa + 1] = pdu\n" \
    "          local r = redis.call('HGET', K[6], a)\n" \
    "          refs(pdu, r and cjson.decode(r).u or user)\n" \
    "        end\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  local sv = redis.call('ZRANGE', K[13], 0, -1)\n" \
    "  local list = {}\n" \
    "  for _, s in ipairs(sv) do\n" \
    "    if not (rec and s == server\n" \
    "            and tonumber(redis.call('ZSCORE', K[13], s)) == -1\n" \
    "            and not (before and before:find('\"membership\":\"join\"', 1, true)))\n" \
    "    then\n" \
    "      list[#list + 1] = js(s)\n" \
    "    end\n" \
    "  end\n" \
    "  servers = '[' .. table.concat(list, ',') .. ']'\n" \
    "end\n" \
    "local seq\n" \
    "if rec then\n" \
    "  seq = rec.s\n" \
    "else\n" \
    "  seq = redis.call('HINCRBY', K[1], 'edge_seq', 1)\n" \
    "  local skey = '[\"m.room.member\",' .. js(u) .. ']'\n" \
    "  local latest = redis.call('HGET', K[8], u)\n" \
    "  if latest then\n" \
    "    redis.call('SADD', K[9], latest)\n" \
    "  else\n" \
    "    local orig = redis.call('HGET', K[2], skey)\n" \
    "    if orig then redis.call('HSET', K[10], u, orig) end\n" \
    "  end\n" \
    "  redis.call('HSET', K[6], id, cjson.encode({s = seq, u = u, p = prevs}))\n" \
    "  redis.call('HSET', K[7], id, ARGV[8])\n" \
    "  redis.call('HSET', K[8], u, id)\n" \
    "  for _, p in ipairs(prevs) do\n" \
    "    if redis.call('HDEL', K[5], p) == 1\n" \
    "        and redis.call('HEXISTS', K[6], p) == 0 then\n" \
    "      redis.call('HSET', K[6], p, '{\"b\":1}')\n" \
    "    end\n" \
    "  end\n" \
    "  redis.call('HSET', K[5], id,\n" \
    "    '{\"depth\":' .. ARGV[5] .. ',\"sha256\":\"' .. ARGV[6] .. '\"}')\n" \
    "  redis.call('HSET', K[2], skey, id)\n" \
    "  if ARGV[7] == '1' then redis.call('HSET', K[4], id, ARGV[8]) end\n" \
    "  local was = redis.call('HGET', K[3], u)\n" \
    "  redis.call('HSET', K[3], u, 'join')\n" \
    "  if was ~= 'join' then\n" \
    "    redis.call('ZINCRBY', K[13], -1, server)\n" \
    "    redis.call('HINCRBY', K[1], 'members', 1)\n" \
    "    redis.call('HSETNX', K[14], server, u)\n" \
    "    local top = redis.call('ZRANGE', K[13], 0, 99)\n" \
    "    for i, s in ipairs(top) do top[i] = js(s) end\n" \
    "    redis.call('HSET', K[1], 'servers', '[' .. table.concat(top, ',') .. ']')\n" \
    "  end\n" \
    "  if not was then\n" \
    "    redis.call('HINCRBY', K[1], 'member_events', 1)\n" \
    "    redis.call('HINCRBY', K[1], 'state_events', 1)\n" \
    "  end\n" \
    "  redis.call('HSET', K[1], 'extremities', redis.call('HLEN', K[5]))\n" \
    "  if tonumber(ARGV[5]) > (tonumber(m[4]) or 0) then\n" \
    "    redis.call('HSET', K[1], 'max_depth', ARGV[5])\n" \
    "  end\n" \
    "  redis.call('XADD', K[15], '*', 'method', ARGV[12], 'uri', ARGV[13],\n" \
    "    'authorization', ARGV[14], 'body', ARGV[15], 'origin', ARGV[16],\n" \
    "    'destination', ARGV[17], 'room_id', m[2], 'event_id', id,\n" \
    "    'received_ts', ARGV[18])\n" \
    "end\n" \
    "return {rec and 'dup' or 'ok', seq, sx, cuts, ax, servers, ps, pa}\n"

#endif /* NGX_MATRIX_SEND_JOIN_LUA_H */
