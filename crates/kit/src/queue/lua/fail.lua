-- Records a failed attempt, if the caller still holds the lease: the job is retried after
-- the given delay, or fails for good when it has used its attempts or may not be retried.
-- KEYS: 1 job hash, 2 active zset, 3 delayed zset, 4 terminal zset, 5 wake list
-- ARGV: 1 lease token, 2 attempt, 3 error, 4 id, 5 finished channel, 6 retry delay ms,
--       7 '1' if it may be retried (attempts left), '0' if not
-- Returns {0} when the lease was lost, {1, retry_at_ms} when retrying, {2, finished_at_ms} when failed.
if not holds_lease(KEYS[1], ARGV[1], ARGV[2]) then
  return {0}
end
local now = now_ms()
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('HDEL', KEYS[1], 'token', 'lease_until')
local f = redis.call('HMGET', KEYS[1], 'attempts', 'max_attempts')
if ARGV[7] ~= '1' or tonumber(f[1]) >= tonumber(f[2]) then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[3], 'finished_at', now)
  redis.call('ZADD', KEYS[4], now, ARGV[4])
  redis.call('PUBLISH', ARGV[5], ARGV[4])
  return {2, now}
end
local at = now + tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'state', 'retrying', 'error', ARGV[3], 'run_at', at)
redis.call('ZADD', KEYS[3], at, ARGV[4])
-- Wake an idle worker so it learns when this retry falls due.
if redis.call('LLEN', KEYS[5]) == 0 then
  redis.call('RPUSH', KEYS[5], '1')
end
return {1, at}
