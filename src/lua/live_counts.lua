-- sync, after each pass of a room: its counts in this process (a load
-- replaces meta, so they are written again each time). Only an existing
-- meta ("room known").
-- KEYS: meta. ARGV: passes, drift. Returns 1 when written, else 0.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'passes', ARGV[1], 'drift', ARGV[2])
return 1
