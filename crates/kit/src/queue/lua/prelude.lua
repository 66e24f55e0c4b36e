-- Shared by the scripts that include it (prepended at compile time).

-- Redis's clock in Unix milliseconds: one clock for every worker on every machine.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether the caller still holds the job's lease: the job is started, under
-- this token, in this attempt. Anything else means the lease ran out and the
-- job moved on (or was settled, or purged).
local function holds_lease(job, token, attempt)
  local f = redis.call('HMGET', job, 'state', 'token', 'attempts')
  return f[1] == 'started' and f[2] == token and f[3] == attempt
end

-- What a holder's touch (renew, progress) that found no lease means: 2 if the job was
-- cancelled during the caller's attempt (its token is kept for this), 0 if the lease is lost.
local function lost_or_cancelled(job, token, attempt)
  local f = redis.call('HMGET', job, 'cancelled', 'token', 'attempts')
  if f[1] == '1' and f[2] == token and f[3] == attempt then
    return 2
  end
  return 0
end

-- Finishes a job with its result if the lease is still held; 1 if so, 0 if not.
local function complete_job(job, active, terminal, channel, token, attempt, result, id)
  if not holds_lease(job, token, attempt) then
    return 0
  end
  local now = now_ms()
  redis.call('HSET', job, 'state', 'finished', 'result', result, 'finished_at', now)
  redis.call('HDEL', job, 'token', 'lease_until', 'error')
  redis.call('ZREM', active, id)
  redis.call('ZADD', terminal, now, id)
  redis.call('PUBLISH', channel, id)
  return 1
end
