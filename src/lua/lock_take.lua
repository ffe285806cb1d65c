-- A lease held by one process at a time: the forwarder's per-room lock.
-- KEYS: the lock. ARGV: our token, the lease in ms.
-- Takes it, or renews it when it is ours: 1; another holder's: 0.
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
