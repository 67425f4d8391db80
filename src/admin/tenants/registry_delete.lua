if redis.call('EXISTS', KEYS[1]) == 0 then return -3 end
local left = prune_tenant_set(KEYS[3], ARGV[2], ARGV[1])
if left > 0 then return left end
for _, digest in ipairs(redis.call('HVALS', KEYS[4])) do
    redis.call('DEL', ARGV[3] .. digest)
end
end_sessions(KEYS[6], ARGV[4], false)
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
