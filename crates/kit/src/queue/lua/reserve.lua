-- Optionally finishes the caller's previous job, does housekeeping, then (optionally)
-- reserves the oldest reservable job of one queue; all atomically.
-- KEYS: 1 ready zset, 2 delayed zset, 3 active zset (lease deadlines), 4 wake list, 5 terminal zset,
--       [6 hash of the job to finish first]
-- ARGV: 1 job key prefix, 2 worker id, 3 lease token, 4 lease ms, 5 finished channel, 6 '1' to reserve,
--       7 '1' to finish a job first, [8 its lease token, 9 its attempt, 10 its result (JSON), 11 its id]
-- Returns {found, next_ms, requeued, failed, depth, finished, [id, payload, attempt, max_attempts,
--          backoff_base_ms, backoff_max_ms, enqueued_at, started_at]}
-- where next_ms is how long until a retry falls due or a lease runs out (-1: nothing pending), and
-- finished is 1 (finished), 0 (its lease was lost) or -1 (not asked).
local ready, delayed, active, wake, terminal = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]

-- 0. The previous job (a worker settling one job and asking for the next in one round trip).
local finished = -1
if ARGV[7] == '1' then
  finished = complete_job(KEYS[6], active, terminal, ARGV[5], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
end

local now = now_ms()

-- 1. Retries whose backoff has elapsed go back in line at their original place.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', delayed, id)
  local seq = redis.call('HGET', prefix .. id, 'seq')
  if seq then
    redis.call('ZADD', ready, seq, id)
  end
end

-- 2. Leases that ran out (the worker died or stalled): retry, or fail on the last attempt.
local requeued, failed = 0, 0
local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', active, id)
  local job = prefix .. id
  local f = redis.call('HMGET', job, 'attempts', 'max_attempts', 'worker', 'seq', 'state')
  if f[5] == 'started' then
    local reason = 'lease expired: worker ' .. tostring(f[3]) .. ' stopped renewing during attempt ' ..
      tostring(f[1]) .. ' of ' .. tostring(f[2])
    redis.call('HDEL', job, 'token', 'lease_until')
    if tonumber(f[1]) >= tonumber(f[2]) then
      redis.call('HSET', job, 'state', 'failed', 'error', reason, 'finished_at', now)
      redis.call('ZADD', terminal, now, id)
      redis.call('PUBLISH', ARGV[5], id)
      failed = failed + 1
    else
      redis.call('HSET', job, 'state', 'retrying', 'error', reason)
      redis.call('ZADD', ready, f[4], id)
      requeued = requeued + 1
    end
  end
end

local function depth()
  return redis.call('ZCARD', ready) + redis.call('ZCARD', delayed)
end

local function pass_wake_token_on()
  if redis.call('ZCARD', ready) > 0 and redis.call('LLEN', wake) == 0 then
    redis.call('RPUSH', wake, '1')
  end
end

if ARGV[6] ~= '1' then
  pass_wake_token_on()
  return {0, -1, requeued, failed, depth(), finished}
end

-- 3. The oldest reservable job.
while true do
  local popped = redis.call('ZPOPMIN', ready)
  if #popped == 0 then
    local next_ms = -1
    local d = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
    if #d > 0 then
      next_ms = math.max(0, tonumber(d[2]) - now)
    end
    local a = redis.call('ZRANGE', active, 0, 0, 'WITHSCORES')
    if #a > 0 then
      local w = math.max(0, tonumber(a[2]) - now)
      if next_ms < 0 or w < next_ms then
        next_ms = w
      end
    end
    return {0, next_ms, requeued, failed, depth(), finished}
  end
  local id = popped[1]
  local job = prefix .. id
  -- A job whose record is gone (it cannot be, but never hand out an empty job) is skipped.
  if redis.call('EXISTS', job) == 1 then
    local attempt = redis.call('HINCRBY', job, 'attempts', 1)
    local deadline = now + tonumber(ARGV[4])
    redis.call('HSET', job, 'state', 'started', 'token', ARGV[3], 'worker', ARGV[2],
      'lease_until', deadline, 'started_at', now)
    redis.call('HDEL', job, 'progress')
    redis.call('ZADD', active, deadline, id)
    pass_wake_token_on()
    local f = redis.call('HMGET', job, 'payload', 'max_attempts', 'backoff_base_ms', 'backoff_max_ms', 'enqueued_at')
    return {1, 0, requeued, failed, depth(), finished, id, f[1], attempt, tonumber(f[2]), tonumber(f[3]),
      tonumber(f[4]), tonumber(f[5]), now}
  end
end
