local doc = redis.call('GET', KEYS[1])
local deleted = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
if doc then
    local ok, w = pcall(cjson.decode, doc)
    if ok and type(w) == 'table' and type(w.tenant) == 'string' then
        redis.call('SREM', ARGV[2] .. w.tenant .. ARGV[3], ARGV[1])
    end
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[1])
redis.call('PUBLISH', KEYS[4], ARGV[1])
return deleted
