-- Leases tokens of one webhook's rate limit (src/delivery/rate.rs).
-- KEYS[1]: the bucket, a hash: tokens (fractional), at (ms, Redis's clock),
--          factor (of the rate after the last 429), slowed_at (ms), and
--          r:{replica} (ms) for each replica that leased within the window.
-- ARGV: per_second, burst, want (tokens asked for), slow ("1" when a
--       receiver answered 429), recovery_ms, min_factor, ttl_ms, replica
--       (the leasing replica's id), window_ms.
-- Returns {granted, wait_ms (until a token, when none was granted),
--          the rate now (per second, as a string), the replicas that leased
--          within the window, this one included}.
local per_second = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local slow = ARGV[4] == '1'
local recovery = tonumber(ARGV[5])
local min_factor = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local replica = 'r:' .. ARGV[8]
local window = tonumber(ARGV[9])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'factor', 'slowed_at')
local tokens = tonumber(h[1]) or burst
local at = tonumber(h[2]) or now
local factor0 = tonumber(h[3]) or 1
local slowed_at = tonumber(h[4]) or 0

-- After a 429 the rate comes back to its own linearly over `recovery`.
local factor = 1
if factor0 < 1 and now - slowed_at < recovery then
  factor = factor0 + (1 - factor0) * math.max(0, now - slowed_at) / recovery
end
local rate = per_second * factor

-- Refill at the rate in force since the last lease, up to the burst.
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
end

if slow then
  factor = math.max(factor / 2, min_factor)
  factor0 = factor
  slowed_at = now
  rate = per_second * factor
end

local granted = math.min(want, math.floor(tokens))
if granted < 0 then granted = 0 end
tokens = tokens - granted
local wait_ms = 0
if granted == 0 then
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end

if factor >= 1 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
  redis.call('HDEL', KEYS[1], 'factor', 'slowed_at')
else
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now, 'factor', tostring(factor0), 'slowed_at', slowed_at)
end

-- The replicas sharing the webhook: each one's share is what it keeps to
-- while Redis does not answer it.
redis.call('HSET', KEYS[1], replica, now)
local replicas = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local name = fields[i]
  if string.sub(name, 1, 2) == 'r:' then
    if now - tonumber(fields[i + 1]) < window then
      replicas = replicas + 1
    else
      redis.call('HDEL', KEYS[1], name)
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
return {granted, wait_ms, tostring(rate), replicas}
