-- send_join, before authentication.
-- KEYS: P{R}:meta, P{R}:state, P{R}:pdu.
-- Returns nil (not cached) or
-- {{room_version, loaded_at, stale, generation}, server ACL PDU or nil}.
local m = redis.call('HMGET', KEYS[1], 'room_version', 'loaded_at', 'stale',
  'generation')
if not m[1] then return false end
local acl = redis.call('HGET', KEYS[2], '["m.room.server_acl",""]')
return {m, acl and redis.call('HGET', KEYS[3], acl) or false}
