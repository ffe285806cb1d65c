-- sync's push worker: N non-state events of a cached room were pushed and
-- queued for the per-event advance. Until each is applied the snapshot is
-- stale (the module's requests go to the fallback), reason "pushed",
-- unless it is already stale for another reason.
-- KEYS: meta. ARGV: N. Returns 1, or 0 when the room is not cached.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'live_pending', tonumber(ARGV[1]))
if redis.call('HGET', KEYS[1], 'stale') ~= '1' then
  redis.call('HSET', KEYS[1], 'stale', '1', 'stale_reason', 'pushed')
end
return 1
