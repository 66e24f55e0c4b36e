-- Cancels a job that has not ended: it fails at once with the given reason and leaves every
-- line of its queue. Its lease token is kept, so that its holder (if any) learns of it.
-- KEYS: 1 job hash, 2 terminal zset
-- ARGV: 1 id, 2 per-queue key prefix (`P:q:`), 3 reason, 4 finished channel
-- Returns 1 if cancelled, 0 if the job had ended or is unknown.
local f = redis.call('HMGET', KEYS[1], 'state', 'queue')
local state, queue = f[1], f[2]
if state ~= 'queued' and state ~= 'retrying' and state ~= 'started' then
  return 0
end
for _, line in ipairs({'ready', 'delayed', 'active'}) do
  redis.call('ZREM', ARGV[2] .. queue .. ':' .. line, ARGV[1])
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'state', 'failed', 'cancelled', '1', 'error', ARGV[3], 'finished_at', now)
redis.call('HDEL', KEYS[1], 'lease_until')
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
