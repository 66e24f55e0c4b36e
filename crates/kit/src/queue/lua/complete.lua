-- Finishes a job with its result, if the caller still holds the lease.
-- KEYS: 1 job hash, 2 active zset, 3 terminal zset
-- ARGV: 1 lease token, 2 attempt, 3 result (JSON), 4 id, 5 finished channel
-- Returns 1, or 0 when the lease was lost.
return complete_job(KEYS[1], KEYS[2], KEYS[3], ARGV[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
