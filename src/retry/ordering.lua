-- The queue of one ordered key (retry::ordering): KEYS[1] a sorted set of
-- the source offsets waiting, scored by offset; KEYS[2] a hash of their due
-- times (ms); KEYS[3] the set of queues of the source partition; KEYS[4]
-- the source partition's marks (each key scored by its last offset
-- delivered).
-- ARGV[1] the operation, ARGV[2] the offset, ARGV[3] a due time (ms),
-- ARGV[4] the queue's name in KEYS[3] and KEYS[4], ARGV[5] the TTL (s).
-- Replies {outcome, head's due (ms)}; outcomes below.
local queue, dues, index, marks = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, offset, due, name, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])

local function keep()
  redis.call('EXPIRE', queue, ttl)
  redis.call('EXPIRE', dues, ttl)
  redis.call('EXPIRE', index, ttl)
end

local function head()
  local first = redis.call('ZRANGE', queue, 0, 0)[1]
  if not first then return nil, 0 end
  return first, tonumber(redis.call('HGET', dues, first) or '0')
end

if op == 'park' then
  -- A later event of the key, found blocked: 0 free (no queue: deliver
  -- it), 1 it is the head, 2 queued behind the head, 3 done already (an
  -- earlier offset than the head, not in the queue: a replay).
  local first, first_due = head()
  if not first then
    redis.call('SREM', index, name)
    -- Delivered from its wait topic meanwhile (a record read again before
    -- its offset was committed): done.
    local marked = redis.call('ZSCORE', marks, name)
    if marked and tonumber(marked) >= tonumber(offset) then return {3, 0} end
    return {0, 0}
  end
  if redis.call('ZSCORE', queue, offset) then
    if first == offset then return {1, first_due} end
    return {2, first_due}
  end
  if tonumber(offset) < tonumber(first) then return {3, first_due} end
  redis.call('ZADD', queue, offset, offset)
  redis.call('HSET', dues, offset, due)
  keep()
  return {2, first_due}
elseif op == 'block' then
  -- A delivery of the key failed and waits in a tier until `due`: it
  -- joins the queue (first, unless a queue was there) and holds it.
  redis.call('ZADD', queue, offset, offset)
  redis.call('HSET', dues, offset, due)
  redis.call('SADD', index, name)
  keep()
  local first, first_due = head()
  if first == offset then return {1, first_due} end
  return {2, first_due}
elseif op == 'claim' then
  -- A record of the queue came due: 0 gone (finished already), 1 its
  -- turn, 2 wait for the head.
  if not redis.call('ZSCORE', queue, offset) then return {0, 0} end
  local first, first_due = head()
  if first == offset then return {1, first_due} end
  return {2, first_due}
elseif op == 'pop' then
  -- Finished (delivered, or dead-lettered): marked, and the next one goes.
  -- Replies {1 if the queue is now empty, how many are left}.
  redis.call('ZADD', marks, 'GT', offset, name)
  redis.call('EXPIRE', marks, ttl)
  redis.call('ZREM', queue, offset)
  redis.call('HDEL', dues, offset)
  local left = redis.call('ZCARD', queue)
  if left == 0 then
    redis.call('DEL', queue, dues)
    redis.call('SREM', index, name)
    return {1, 0}
  end
  keep()
  return {0, left}
end
return redis.error_reply('unknown operation ' .. tostring(op))
