-- Drops a lock only while it is ours (forward's room lease, load's lock).
-- KEYS: the lock. ARGV: our token. Returns 1 when dropped, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
