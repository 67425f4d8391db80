if redis.call('HGET', KEYS[1], 'settings') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'settings', ARGV[2], 'updated_at', ARGV[3], 'updated_by', ARGV[4])
return 1
