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
  overlay_member(id, u, server, ms)
  redis.call('HSET', K[6], id,
    cjson.encode({s = seq, u = u, p = prevs, h = 1, m = ms}))
  redis.call('HSET', K[4], id, ARGV[8])
  live_extremity(K[1], K[5], K[6], id, ARGV[5], ARGV[6], prevs)
end
if ARGV[9] == '1' then live_taken(K[1]) end
return {what, redis.call('HLEN', K[5])}
