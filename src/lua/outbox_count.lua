-- matrix-join-ctl outbox, one room read atomically.
-- KEYS: P{R}:outbox, P{R}:dead. ARGV: the forwarder's group.
-- Returns {keys that exist, pending, in_flight, dead, oldest_age_ms}.
--! use outbox
local pending, inflight, dead, age = outbox_counts(KEYS[1], KEYS[2], ARGV[1])
return {redis.call('EXISTS', KEYS[1], KEYS[2]), pending, inflight, dead, age}
