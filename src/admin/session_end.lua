-- end_sessions(set, session_prefix, digest): deletes the sessions of `set`
-- made by the issued token whose digest is `digest` (every one of them when
-- `digest` is `false`), drops from `set` those already gone, and returns how
-- many it ended. Scripts that revoke a token or delete a tenant start with
-- this file, so the sessions end in the same script.
local function end_sessions(set, session_prefix, digest)
    local ended = 0
    for _, sid in ipairs(redis.call('ZRANGE', set, 0, -1)) do
        local key = session_prefix .. sid
        local raw = redis.call('GET', key)
        local ends = not raw or not digest
        if raw and digest then
            local ok, s = pcall(cjson.decode, raw)
            ends = ok and type(s) == 'table' and s.tok == digest
        end
        if ends then
            ended = ended + redis.call('DEL', key)
            redis.call('ZREM', set, sid)
        end
    end
    return ended
end
