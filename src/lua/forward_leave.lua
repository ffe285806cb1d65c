-- The forwarder at exit: each run with another name (<hostname>-<pid>)
-- would leave one consumer per room in the group forever; ours goes unless
-- entries are still pending at it.
-- KEYS: the outbox. ARGV: the group, our consumer.
-- Returns the pending entries XGROUP DELCONSUMER dropped (0), or 0 when
-- some are still ours.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
