-- sessions: a session store whose entries expire, over the armdb
-- collection "sessions" (uuid keys, json values, a default ttl), for
-- OpenResty / nginx with the Lua module (see nginx.conf and README.md).
--
--   POST   /session[?ttl=S]  the body (a JSON object, or empty for {}) is
--                            the session's data; it lives S seconds
--                            (1..MAX_TTL, default DEFAULT_TTL). 201 and
--                            {"id":ID,"ttl":S,"expires":T}, Location: /session/ID
--   GET    /session/{id}     200 and {"id":ID,"data":...,"created":T,"expires":T};
--                            404 once it has expired
--   DELETE /session/{id}     204; 404 if absent or expired
--   GET    /session          200 and {"stored":N,"sweep":{...}}: the keys the
--                            store holds (expired ones count until they
--                            are purged) and the sweep task's counters
--
-- An expired session is absent to every read from the moment its expiry
-- passes (armdb.policy.ttl); the "ttl:sessions" task purges it from the
-- store later, in bounded steps run by worker 0's scheduler (armdb.ngx
-- with tasks = true, set up by kv.init_worker). The
-- ids are version 4 uuids from /dev/urandom: unguessable, so an id is the
-- session's secret.
local cjson = require("cjson.safe")
local answer = require("answer")

local ngx = ngx -- luacheck: ignore 113 (the global of OpenResty)
local ngx_log, ERR = ngx.log, ngx.ERR

local M = {}

M.COLLECTION = "sessions"
M.DEFAULT_TTL = 1800 -- seconds
M.MAX_TTL = 86400 * 30
M.MAX_BODY = 4096 -- bytes of session data

-- The collection's spec; sweep_every (seconds) is how often the sweep
-- task starts a round over the collection.
function M.spec(sweep_every)
    return { key = "uuid", value = "json", ttl = M.DEFAULT_TTL, sweep_every = sweep_every }
end

local state = { coll = nil, urandom = nil }

-- ---- responses ----

local text, json, fail = answer.text, answer.json, answer.fail

-- coll:method(...), a raise turned into a failure (as in kv.lua).
local function call(method, ...)
    local ok, a, b, c = pcall(state.coll[method], state.coll, ...)
    if not ok then
        return nil, a, "raised"
    end
    return a, b, c
end

-- ---- ids ----

local function random_bytes(n)
    if not state.urandom then
        local f, err = io.open("/dev/urandom", "rb")
        if not f then
            return nil, "cannot open /dev/urandom: " .. tostring(err)
        end
        state.urandom = f
    end
    local s = state.urandom:read(n)
    if not s or #s ~= n then
        return nil, "short read from /dev/urandom"
    end
    return s
end

-- A version 4 uuid, as text.
local function new_id()
    local b, err = random_bytes(16)
    if not b then
        return nil, err
    end
    local t = { b:byte(1, 16) }
    t[7] = bit.bor(bit.band(t[7], 0x0f), 0x40) -- version 4
    t[9] = bit.bor(bit.band(t[9], 0x3f), 0x80) -- variant 10
    local h = string.format(string.rep("%02x", 16), unpack(t))
    return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-" .. h:sub(13, 16) .. "-" .. h:sub(17, 20) .. "-" .. h:sub(21)
end

local ID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

-- ---- handlers ----

local function create()
    local ttl = M.DEFAULT_TTL
    local arg = ngx.var.arg_ttl
    if arg ~= nil then
        ttl = tonumber(arg)
        if not ttl or ttl ~= math.floor(ttl) or ttl < 1 or ttl > M.MAX_TTL then
            return text(ngx.HTTP_BAD_REQUEST, "ttl must be a whole number of seconds from 1 to " .. M.MAX_TTL)
        end
    end
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body == nil and ngx.req.get_body_file() then
        return text(413, "session data is over " .. M.MAX_BODY .. " bytes")
    end
    body = body or ""
    if #body > M.MAX_BODY then
        return text(413, "session data is over " .. M.MAX_BODY .. " bytes")
    end
    local data = {}
    if body:find("%S") then
        local err
        data, err = cjson.decode(body)
        if type(data) ~= "table" then
            return text(ngx.HTTP_BAD_REQUEST, "the body must be a JSON object"
                .. (err and (": " .. err) or ""))
        end
    end
    local id, err = new_id()
    if not id then
        ngx_log(ERR, "sessions: ", err)
        return text(ngx.HTTP_INTERNAL_SERVER_ERROR, err)
    end
    local now = ngx.time()
    local session = { data = data, created = now, expires = now + ttl }
    local ok, msg, code = call("put", id, session, { ttl = ttl })
    if not ok then
        return fail("put", id, msg, code)
    end
    return json(ngx.HTTP_CREATED, { id = id, ttl = ttl, expires = session.expires },
        { Location = "/session/" .. id })
end

local function read(id)
    local s, msg, code = call("get", id)
    if s == nil then
        if msg ~= nil then
            return fail("get", id, msg, code)
        end
        return text(ngx.HTTP_NOT_FOUND, "no such session (expired, deleted or never made)")
    end
    s.id = id
    return json(ngx.HTTP_OK, s)
end

local function delete(id)
    local ok, msg, code = call("delete", id)
    if ok == nil then
        return fail("delete", id, msg, code)
    end
    if not ok then
        return text(ngx.HTTP_NOT_FOUND, "no such session (expired, deleted or never made)")
    end
    return ngx.exit(ngx.HTTP_NO_CONTENT)
end

local function summary()
    local n, msg, code = call("count")
    if n == nil then
        return fail("count", nil, msg, code)
    end
    -- (Worker 0 runs the sweep; the others read its counters.)
    local sweep = require("kv").task_stats()["ttl:" .. M.COLLECTION] or {}
    return json(ngx.HTTP_OK, { stored = n, sweep = sweep })
end

-- location /session { content_by_lua_block { require("sessions").handle() } }
function M.handle()
    local coll, err = require("kv").collection(M.COLLECTION)
    if not coll then
        return text(ngx.HTTP_SERVICE_UNAVAILABLE, "armdb: " .. tostring(err))
    end
    state.coll = coll
    local method = ngx.req.get_method()
    local path = ngx.var.uri
    if path == "/session" or path == "/session/" then
        if method == "POST" then
            return create()
        elseif method == "GET" then
            return summary()
        end
        return text(ngx.HTTP_NOT_ALLOWED, "method not allowed: use POST or GET", { Allow = "POST, GET" })
    end
    local id = path:match("^/session/([^/]+)$")
    if not id or not id:match(ID) then
        return text(ngx.HTTP_NOT_FOUND, "no such resource: use /session or /session/{id} (a uuid)")
    end
    id = id:lower()
    if method == "GET" then
        return read(id)
    elseif method == "DELETE" then
        return delete(id)
    end
    return text(ngx.HTTP_NOT_ALLOWED, "method not allowed: use GET or DELETE", { Allow = "GET, DELETE" })
end

return M
