-- counters: exact counters and a rate limiter shared by every nginx
-- worker, over two armdb collections changed with compare-and-set
-- (collection:update), for OpenResty / nginx with the Lua module (see
-- nginx.conf and README.md beside this file).
--
--   POST /count/{name}[?by=N]  adds N (a whole number, default 1) to the
--                              counter; 200 and {"name":NAME,"value":V}
--   GET  /count/{name}         200 and {"name":NAME,"value":V} (0 if never counted)
--   GET  /limit/{client}       one request of client against a limit of
--                              LIMIT requests per WINDOW seconds (a fixed
--                              window): 200 and {"allowed":true,
--                              "remaining":R,"reset":T}, or 429 and
--                              {"allowed":false,"remaining":0,"reset":T}
--                              with Retry-After
--
-- update() reads the value, computes the new one and writes it only if the
-- value is still what it read (armdb's cas, atomic across the processes of
-- a shared store), else reads again: increments from all workers at once
-- add up exactly, with no lock held across requests. A rate window's count
-- is written with an expiry of two windows (a ttl policy), so that old
-- windows vanish from reads at once and are purged by the sweep.
local answer = require("answer")

local ngx = ngx -- luacheck: ignore 113 (the global of OpenResty)

local M = {}

M.NAME_MAX = 64
M.COUNTERS = "counters"
M.COUNTER_SPEC = { key = "string(" .. M.NAME_MAX .. ")", value = "number" }
M.LIMITS = "limits"
-- client (up to NAME_MAX bytes) "@" window start
M.LIMIT_SPEC = { key = "string(" .. (M.NAME_MAX + 24) .. ")", value = "number", ttl = 3600 }

local conf = { limit = 10, window = 60 }

-- From init_worker: LIMIT requests per WINDOW seconds for /limit.
function M.configure(limit, window)
    conf.limit, conf.window = limit, window
end

local respond, text, fail = answer.json, answer.text, answer.fail

local function collection(name)
    local coll, err = require("kv").collection(name)
    if not coll then
        text(ngx.HTTP_SERVICE_UNAVAILABLE, "armdb: " .. tostring(err))
    end
    return coll
end

-- The name after prefix in the raw request line, percent-decoded.
local function name_after(prefix)
    local raw = ngx.var.request_uri:match("^[^?#]*")
    local name = ngx.unescape_uri((raw:sub(#prefix + 1):gsub("%+", "%%2B")))
    if #name == 0 or #name > M.NAME_MAX then
        return nil, string.format("the name must be 1 to %d bytes, got %d", M.NAME_MAX, #name)
    end
    return name
end

-- location /count/ { content_by_lua_block { require("counters").count() } }
function M.count()
    local method = ngx.req.get_method()
    if method ~= "GET" and method ~= "POST" then
        return text(ngx.HTTP_NOT_ALLOWED, "method not allowed: use GET or POST", { Allow = "GET, POST" })
    end
    local name, err = name_after("/count/")
    if not name then
        return text(ngx.HTTP_BAD_REQUEST, err)
    end
    local coll = collection(M.COUNTERS)
    if not coll then
        return
    end
    if method == "GET" then
        local v, msg, code = coll:get(name)
        if v == nil and msg ~= nil then
            return fail("get", name, msg, code)
        end
        return respond(ngx.HTTP_OK, { name = name, value = v or 0 })
    end
    local by = tonumber(ngx.var.arg_by or "1")
    if not by or by ~= math.floor(by) or math.abs(by) > 2 ^ 52 then
        return text(ngx.HTTP_BAD_REQUEST, "by must be a whole number")
    end
    local ok, v, code = coll:update(name, function(cur)
        return (cur or 0) + by
    end)
    if not ok then
        return fail("update", name, v, code)
    end
    return respond(ngx.HTTP_OK, { name = name, value = v })
end

-- location /limit/ { content_by_lua_block { require("counters").limit() } }
function M.limit()
    if ngx.req.get_method() ~= "GET" then
        return text(ngx.HTTP_NOT_ALLOWED, "method not allowed: use GET", { Allow = "GET" })
    end
    local client, err = name_after("/limit/")
    if not client then
        return text(ngx.HTTP_BAD_REQUEST, err)
    end
    local coll = collection(M.LIMITS)
    if not coll then
        return
    end
    local now = ngx.time()
    local start = now - now % conf.window
    local reset = start + conf.window
    local key = client .. "@" .. start
    local allowed
    local ok, v, code = coll:update(key, function(cur)
        cur = cur or 0
        allowed = cur < conf.limit
        if not allowed then
            return nil -- over the limit: nothing to write
        end
        return cur + 1
    end, { ttl = 2 * conf.window })
    if ok == nil then
        return fail("update", key, v, code)
    end
    if not allowed then
        return respond(429, { allowed = false, remaining = 0, reset = reset }, { ["Retry-After"] = reset - now })
    end
    return respond(ngx.HTTP_OK, { allowed = true, remaining = conf.limit - v, reset = reset })
end

return M
