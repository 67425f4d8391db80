if ARGV[6] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then return {-1, 0} end
local max = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
if redis.call('ZCARD', KEYS[2]) >= max then
    for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
        if redis.call('EXISTS', ARGV[7] .. sid) == 0 then redis.call('ZREM', KEYS[2], sid) end
    end
    if redis.call('ZCARD', KEYS[2]) >= max then
        local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
        return {0, tonumber(first[2])}
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[8])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {1, 0}
