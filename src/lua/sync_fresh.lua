-- A sync pass that found nothing new: the snapshot's loaded_at moves to
-- now, unless another load replaced the generation the pass read.
-- KEYS: meta. ARGV: the generation read. Returns 1 when touched, else 0.
if redis.call('HGET', KEYS[1], 'generation') ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'loaded_at', t[1] .. string.format('%03d',
  math.floor(tonumber(t[2]) / 1000)))
return 1
