-- Records the holder's progress on its job (0-100), if it still holds the lease.
-- KEYS: 1 job hash
-- ARGV: 1 lease token, 2 attempt, 3 percent
-- Returns 1, 0 when the lease was lost, or 2 when the job was cancelled.
if not holds_lease(KEYS[1], ARGV[1], ARGV[2]) then
  return lost_or_cancelled(KEYS[1], ARGV[1], ARGV[2])
end
redis.call('HSET', KEYS[1], 'progress', ARGV[3])
return 1
