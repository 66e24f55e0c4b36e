-- Extends a lease, if the caller still holds it.
-- KEYS: 1 job hash, 2 active zset
-- ARGV: 1 lease token, 2 attempt, 3 lease ms, 4 id
-- Returns 1, 0 when the lease was lost, or 2 when the job was cancelled.
if not holds_lease(KEYS[1], ARGV[1], ARGV[2]) then
  return lost_or_cancelled(KEYS[1], ARGV[1], ARGV[2])
end
local deadline = now_ms() + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease_until', deadline)
redis.call('ZADD', KEYS[2], deadline, ARGV[4])
return 1
