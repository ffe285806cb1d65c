-- What a sync pass reads of a room, as one generation. First copies every
-- join accepted at the edge into unconfirmed (a load resets edge_pdu, not
-- unconfirmed), each wrapped as {"passes":0,"pdu":PDU}.
-- KEYS: meta, server_user, edge_pdu, unconfirmed, delivered, outbox.
-- ARGV: NAME (the server whose joined user is asked for).
-- Returns {meta, NAME's joined user or "", unconfirmed, delivered, the
-- event IDs still in the outbox}, each hash as HGETALL gives it.
local edge = redis.call('HGETALL', KEYS[3])
for i = 1, #edge, 2 do
  redis.call('HSETNX', KEYS[4], edge[i],
    '{"passes":0,"pdu":' .. edge[i + 1] .. '}')
end
local ids = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[6], '-', '+')) do
  local f = e[2]
  for j = 1, #f - 1, 2 do
    if f[j] == 'event_id' then ids[#ids + 1] = f[j + 1] end
  end
end
return {redis.call('HGETALL', KEYS[1]),
  redis.call('HGET', KEYS[2], ARGV[1]) or '',
  redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]), ids}
