-- sync's push worker, one pushed event E of a cached room. An event the
-- snapshot already has as a forward extremity or an edge record (a join
-- the edge accepted, now pushed back by the homeserver; an event applied
-- before) changes nothing. Otherwise: an event the advance applies (a
-- non-state event, a member event) is counted in live_pending (stale
-- "pushed" when the room was quiet, see below, or when ARGV 3 says so: a
-- member event that may refuse or admit a user); another state event
-- marks it stale with its reason (a pass follows).
-- KEYS: meta, extrem, edge. ARGV: 1 E's ID, 2 "" for an event the advance
-- applies, else the reason; 3 "1": stale "pushed" until applied.
-- Returns 0 when the room is not cached, 2 when E is known, else 1.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
    or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return 2
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'stale', '1', 'stale_reason', ARGV[2])
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[1], 'live_push_at')) or 0
redis.call('HSET', KEYS[1], 'live_push_at', now)
local n = redis.call('HINCRBY', KEYS[1], 'live_pending', 1)
-- a quiet room's push: stale until applied (a few ms); in a flow of
-- pushes (one within the last second, or some not applied yet) the
-- templates may trail by one batch instead of the room never answering
if ((n == 1 and now - last > 1000) or ARGV[3] == '1')
    and redis.call('HGET', KEYS[1], 'stale') ~= '1' then
  redis.call('HSET', KEYS[1], 'stale', '1', 'stale_reason', 'pushed')
end
return 1
