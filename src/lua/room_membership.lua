-- A user's membership in a room (the allowed rooms of a restricted room).
-- KEYS: P{R}:meta, P{R}:member. ARGV: the user ID.
-- Returns {1 when the room is cached else 0, membership or nil}.
return {redis.call('EXISTS', KEYS[1]),
  redis.call('HGET', KEYS[2], ARGV[1]) or false}
