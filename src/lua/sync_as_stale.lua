-- matrix-join-ctl sync, a push of the Application Service API: the room's
-- snapshot marked stale (the module then sends its requests to the
-- fallback) until the pass the push starts loads a new one.
-- KEYS: P{R}:meta; ARGV: the stale field's name (MX_META_STALE). Only an
-- existing meta is marked: its existence means "room known".
-- Returns 1 when marked, 0 when the room has no snapshot.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], '1')
  return 1
end
return 0
