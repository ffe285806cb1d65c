-- matrix_status, one room read atomically.
-- KEYS: P{R}:meta, P{R}:extrem, P{R}:outbox, P{R}:dead.
-- ARGV: the forwarder's group, the room ID.
-- Returns nil when the room has neither a snapshot nor an outbox, else
-- {meta (HGETALL, maybe empty), extremities (HGETALL, empty without
-- meta), {pending, in_flight, dead, oldest_age_ms}, room ID}.
--! use outbox
local meta = redis.call('HGETALL', KEYS[1])
local pending, inflight, dead, age = outbox_counts(KEYS[3], KEYS[4], ARGV[1])
if #meta == 0 and pending == 0 and dead == 0 then return false end
return {meta, #meta > 0 and redis.call('HGETALL', KEYS[2]) or {},
  {pending, inflight, dead, age}, ARGV[2]}
