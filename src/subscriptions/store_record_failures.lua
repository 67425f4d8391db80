local now = tonumber(ARGV[1])
local last_ok = tonumber(redis.call('HGET', KEYS[1], 'last_success_at') or '0')
if now < last_ok then
    return {0, now}
end
local first = tonumber(redis.call('HGET', KEYS[1], 'first_failure_at') or '0')
if first == 0 or last_ok >= first then
    redis.call('HSET', KEYS[1], 'first_failure_at', ARGV[1], 'failures', 0)
    first = now
end
local n = redis.call('HINCRBY', KEYS[1], 'failures', ARGV[2])
return {n, first}
