if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[7] ~= '' and redis.call('EXISTS', ARGV[7]) == 0 then return -2 end
local quota = tonumber(ARGV[3])
if ARGV[4] ~= '' and quota > 0 and redis.call('SCARD', KEYS[5]) >= quota then
    if prune_tenant_set(KEYS[5], ARGV[5], ARGV[4]) >= quota then return -1 end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('SADD', KEYS[2], ARGV[2])
if ARGV[4] ~= '' then redis.call('SADD', KEYS[5], ARGV[2]) end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[2])
redis.call('PUBLISH', KEYS[4], ARGV[2])
return 1
