local created = redis.call('HSETNX', KEYS[1], 'created_at', ARGV[2])
if created == 1 then redis.call('HSET', KEYS[1], 'created_by', ARGV[3]) end
redis.call('HSET', KEYS[1], 'settings', ARGV[1], 'updated_at', ARGV[2], 'updated_by', ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
return created
