-- sync's per-event advance for a member event M of the homeserver (a
-- join, leave, kick, ban, invite, knock: checked like every event sync
-- receives) whose prev_events the snapshot knows: the room's state
-- changes by M in place, beside the loaded chunks as an edge join does
-- (lib/send_join.lua): M becomes the user's member event (state, member,
-- edge_m; the event it replaces stays in the answers' auth chain, as a
-- superseded edge join does), a forward extremity, and an edge record
-- {"s":seq,"u":user,"p":[prev IDs],"h":1,"m":membership} that send_join's
-- walk over a join's ancestors reads. Its bytes go to pdu (the
-- homeserver's event: not a join to confirm, so not edge_pdu). The
-- counts and the directory's servers follow the membership. Nothing is
-- forwarded.
-- KEYS: the 16 of lib/send_join.lua.
-- ARGV: 1 M's ID, 2 its state_key (the user), 3 its membership, 4 the
-- user's server, 5 depth, 6 reference hash (std b64), 7 prev_events IDs
-- (JSON array), 8 the PDU (canonical JSON), 9 "1" when M was counted in
-- live_pending.
-- Returns {"gone"} (not cached), {"unknown", prev ID} (nothing written),
-- or {"ok" | "dup", extremities}; "ok" and "dup" take M off live_pending
-- (when ARGV 9).
--! use json
--! use send_join
--! use live
if redis.call('EXISTS', K[1]) == 0 then return {'gone'} end
local id, u, ms, server = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local skey = '["m.room.member",' .. json_string(u) .. ']'
local what = 'ok'
if redis.call('HEXISTS', K[5], id) == 1
    or redis.call('HEXISTS', K[6], id) == 1
    or redis.call('HGET', K[2], skey) == id then
  what = 'dup'                  -- applied, an edge join, or loaded already
else
  local prevs = uniq(cjson.decode(ARGV[7]))
  local p = live_unknown(K[5], K[6], prevs)
  if p then return {'unknown', p} end
  local seq = redis.call('HINCRBY', K[1], 'edge_seq', 1)
  local latest = redis.call('HGET', K[8], u)
  if latest then
    redis.call('SADD', K[9], latest)
  else
    local orig = redis.call('HGET', K[2], skey)
    if orig then redis.call('HSET', K[10], u, orig) end
  end
  redis.call('HSET', K[6], id,
    cjson.encode({s = seq, u = u, p = prevs, h = 1, m = ms}))
  redis.call('HSET', K[4], id, ARGV[8])
  redis.call('HSET', K[8], u, id)
  redis.call('HSET', K[2], skey, id)
  live_extremity(K[1], K[5], K[6], id, ARGV[5], ARGV[6], prevs)
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
    for i, s in ipairs(top) do top[i] = json_string(s) end
    redis.call('HSET', K[1], 'servers', '[' .. table.concat(top, ',') .. ']')
  end
  if not was then
    redis.call('HINCRBY', K[1], 'member_events', 1)
    redis.call('HINCRBY', K[1], 'state_events', 1)
  end
end
if ARGV[9] == '1' then live_taken(K[1]) end
return {what, redis.call('HLEN', K[5])}
