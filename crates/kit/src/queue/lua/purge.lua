-- Deletes up to a batch of finished or failed jobs that ended before the cutoff.
-- KEYS: 1 terminal zset
-- ARGV: 1 job key prefix, 2 age in ms (jobs older than this go), 3 batch size
-- Returns how many were deleted.
local cutoff = now_ms() - tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
