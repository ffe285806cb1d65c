-- sync's push worker, one pushed event E of a cached room. An event the
-- snapshot already has as a forward extremity or an edge record (a join
-- the edge accepted, now pushed back by the homeserver; an event applied
-- before) changes nothing. Otherwise the snapshot is stale until E is
-- handled: a non-state event is counted in live_pending for the advance
-- (reason "pushed", unless already stale for another reason); a state
-- event marks it stale with its reason (a pass follows).
-- KEYS: meta, extrem, edge. ARGV: 1 E's ID, 2 "" for a non-state event,
-- else the reason.
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
redis.call('HINCRBY', KEYS[1], 'live_pending', 1)
if redis.call('HGET', KEYS[1], 'stale') ~= '1' then
  redis.call('HSET', KEYS[1], 'stale', '1', 'stale_reason', 'pushed')
end
return 1
