-- A dead letter: the entry and why it failed go to P{R}:dead, the entry is
-- acknowledged and deleted and the room's snapshot marked stale, at once.
-- A stale mark on an absent meta would create a room with no snapshot
-- ("its existence means room known"): only an existing one.
-- KEYS: outbox, dead, meta. ARGV: the group, the entry's ID, then the
-- fields of the dead letter. Returns 1.
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'stale', '1')
end
return 1
