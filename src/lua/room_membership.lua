-- A user's membership in a room (the allowed rooms of a restricted room).
-- KEYS: P{R}:meta, P{R}:member. ARGV: the user ID.
-- Returns {1 when the room is cached else 0, membership or nil,
-- loaded_at or nil, stale or nil} (the caller judges the snapshot's age).
local m = redis.call('HMGET', KEYS[1], 'loaded_at', 'stale')
return {redis.call('EXISTS', KEYS[1]),
  redis.call('HGET', KEYS[2], ARGV[1]) or false, m[1] or false, m[2] or false}
