local digest = redis.call('HGET', KEYS[1], ARGV[1])
if not digest then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
end_sessions(KEYS[3], ARGV[3], digest)
return redis.call('DEL', ARGV[2] .. digest)
