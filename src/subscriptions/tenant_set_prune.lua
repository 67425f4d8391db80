-- prune_tenant_set(set, webhook_prefix, tenant): drops from a tenant's set of
-- webhook ids every id whose document (webhook_prefix .. id) is gone, does not
-- parse or names another tenant, and returns how many ids are left. Other
-- writers delete or move webhooks without touching the set; every script that
-- counts a tenant's webhooks starts with this file, so a stale id never counts.
local function prune_tenant_set(set, webhook_prefix, tenant)
    for _, id in ipairs(redis.call('SMEMBERS', set)) do
        local doc = redis.call('GET', webhook_prefix .. id)
        local ok, w = pcall(cjson.decode, doc or 'null')
        if not doc or not ok or type(w) ~= 'table' or w.tenant ~= tenant then
            redis.call('SREM', set, id)
        end
    end
    return redis.call('SCARD', set)
end
