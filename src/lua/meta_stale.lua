-- Marks a room's snapshot stale (sync, when a pass finds it out of date,
-- or a push needs a pass). Only an existing meta: its existence means
-- "room known".
-- KEYS: meta. ARGV: optional, why (stale_reason; "marked" when absent).
-- Returns 1 when marked, 0 when the room is unknown.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'stale', '1', 'stale_reason',
    ARGV[1] or 'marked')
  return 1
end
return 0
