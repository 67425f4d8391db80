if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
    if redis.call('EXISTS', ARGV[5] .. entries[i + 1]) == 0 then
        redis.call('HDEL', KEYS[2], entries[i])
        redis.call('HDEL', KEYS[4], entries[i])
    end
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[6]) then return -1 end
if ARGV[7] == '0' then
    redis.call('SET', KEYS[3], ARGV[3])
else
    redis.call('SET', KEYS[3], ARGV[3], 'PXAT', ARGV[7])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
