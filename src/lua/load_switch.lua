-- The switch of a load (docs/redis-schema.md, "Loading"): the current
-- keys become the old ones, the staging keys the current ones, at once.
-- KEYS: the n current keys (meta first), the n staging keys, the n old
-- keys, then the load lock, then (sync) the hash the accepted edge joins
-- go to. ARGV[1]: our lock token; when that hash is given: the position
-- in KEYS of the current edge_pdu, and the prefix and suffix wrapped
-- around each PDU. The copy is made here, in the switch, so that a join
-- accepted after the caller last read edge_pdu is not reset with it. An
-- absent staging key (an empty list) leaves the current one absent too.
-- Returns 1, or an error when the lock or the staging meta is gone.
local copy = #ARGV > 1
local n = (#KEYS - 1 - (copy and 1 or 0)) / 3
if redis.call('GET', KEYS[3 * n + 1]) ~= ARGV[1] then
  return redis.error_reply('the load lock is no longer ours')
end
if redis.call('EXISTS', KEYS[n + 1]) == 0 then
  return redis.error_reply('the staging meta key is missing')
end
if copy then
  local edge = redis.call('HGETALL', KEYS[tonumber(ARGV[2])])
  for i = 1, #edge, 2 do
    redis.call('HSETNX', KEYS[#KEYS], edge[i],
      ARGV[3] .. edge[i + 1] .. ARGV[4])
  end
end
for i = 1, n do
  redis.call('UNLINK', KEYS[2 * n + i])
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[2 * n + i])
  end
  if redis.call('EXISTS', KEYS[n + i]) == 1 then
    redis.call('RENAME', KEYS[n + i], KEYS[i])
  end
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'loaded_at', t[1] .. string.format('%03d',
  math.floor(tonumber(t[2]) / 1000)))
return 1
