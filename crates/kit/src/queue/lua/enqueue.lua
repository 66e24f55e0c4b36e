-- Enqueues one job, atomically.
-- KEYS: 1 job hash, 2 ready zset, 3 delayed zset, 4 wake list, 5 queue-name set, 6 sequence counter
-- ARGV: 1 id, 2 queue, 3 payload (JSON), 4 max_attempts, 5 backoff_base_ms, 6 backoff_max_ms
-- Returns the queue's depth (jobs waiting) after the enqueue.
local now = now_ms()
-- The sequence number is the job's place in line: FIFO by enqueue order, kept across retries.
local seq = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1],
  'queue', ARGV[2], 'state', 'queued', 'payload', ARGV[3], 'attempts', 0, 'max_attempts', ARGV[4],
  'backoff_base_ms', ARGV[5], 'backoff_max_ms', ARGV[6], 'seq', seq, 'enqueued_at', now)
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('SADD', KEYS[5], ARGV[2])
-- At most one wake-up token: it means "there may be work", and a worker that takes a job
-- passes the token on while jobs remain, so idle workers never spin on stale tokens.
if redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('RPUSH', KEYS[4], '1')
end
return redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
