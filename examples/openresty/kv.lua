-- kv: HTTP handlers over one armdb collection, for OpenResty / nginx with
-- the Lua module (see nginx.conf and README.md beside this file).
--
--   GET    /kv/{key}  200 and the value as it was stored; 404 if absent
--   PUT    /kv/{key}  the request body becomes the value; 204
--   DELETE /kv/{key}  204; 404 if absent
--   GET    /stats     200 and the collection's stats as JSON
--
-- Keys are the rest of the path after /kv/, percent-decoded ("+" stays a
-- plus), 1..KEY_MAX bytes (nginx itself refuses %00 in a path, so a key
-- never holds a NUL byte, which the zero-padded string(N) codec could not
-- give back). Every nginx worker opens the database in init_worker()
-- through armdb.ngx, in shared mode: all of them read and write the same
-- collections, and a PUT answered by one worker is read by the next GET
-- in any other. A failure of armdb answers 500 with its message, which is
-- also logged at the error level; the other errors answer 4xx with a line
-- of text saying what was wrong.
--
-- The same database holds the "sessions" collection (sessions.lua) and the
-- counters and rate limits (counters.lua). Worker 0 runs the collections'
-- policy tasks, among them the sweep that purges expired sessions, in
-- slices of at most SLICE seconds every TICK seconds; it publishes their
-- counters in the lua_shared_dict armdb_tasks for the other workers.
local answer = require("answer")
local sessions = require("sessions")
local counters = require("counters")

-- A library that cannot be loaded (not built, another ABI) is reported by
-- init_worker and in every answer (503), not as nginx's bare 500 page.
local anx_loaded, anx = pcall(require, "armdb.ngx")
local armdb = anx_loaded and require("armdb") or nil

local ngx = ngx -- luacheck: ignore 113 (the global of OpenResty)
local ngx_log, ERR = ngx.log, ngx.ERR

local M = {}

M.KEY_MAX = 64
M.COLLECTION = "kv"
M.SPEC = { key = "string(" .. M.KEY_MAX .. ")", value = "raw" }

-- The tasks' budget: a tick runs steps for at most SLICE seconds (and one
-- step more), every TICK seconds, so a request waits at most that long.
local SLICE, TICK = 0.005, 0.05

local load_error = not anx_loaded and tostring(anx) or nil

-- init_worker_by_lua: open the database dir (created if absent) and its
-- collections in this worker. umask (an octal string, optional) is set
-- first: nginx's daemon mode resets it to 0, which would leave the files
-- armdb creates writable by everyone. opts.sweep_every: seconds between
-- two sweeps of expired sessions (default: armdb's, 60).
function M.init_worker(dir, umask, opts)
    if load_error then
        ngx_log(ERR, load_error)
        return
    end
    anx.init(dir, {
        umask = umask,
        collections = {
            [M.COLLECTION] = M.SPEC,
            [sessions.COLLECTION] = sessions.spec(opts and opts.sweep_every),
            [counters.COUNTERS] = counters.COUNTER_SPEC,
            [counters.LIMITS] = counters.LIMIT_SPEC,
        },
        tasks = true, slice = SLICE, tick = TICK, stats_dict = "armdb_tasks",
    })
end

-- exit_worker_by_lua: close this worker's handle.
function M.exit_worker()
    if not load_error then
        anx.exit()
    end
end

-- The collection name, or nil and why not (then the caller answers 503).
function M.collection(name)
    if load_error then
        return nil, "database not open: " .. load_error
    end
    return anx.collection(name)
end

-- The counters of the policy tasks, from whichever worker runs them.
function M.task_stats()
    return load_error and {} or anx.task_stats()
end

-- ---- responses ----

local reply, fail = answer.text, answer.fail

-- coll:method(...) with a raise (misuse: a bug here or in armdb) turned
-- into a failure, so that it too answers 500 with its message.
local function call(coll, method, ...)
    local ok, a, b, c = pcall(coll[method], coll, ...)
    if not ok then
        return nil, a, "raised"
    end
    return a, b, c
end

local function collection()
    local coll, err = M.collection(M.COLLECTION)
    if not coll then
        reply(ngx.HTTP_SERVICE_UNAVAILABLE, "armdb: " .. tostring(err))
    end
    return coll
end

-- The key from the raw request line: nginx's $uri is normalized (merged
-- slashes, "." and ".." resolved), which would change keys.
local function request_key()
    local raw = ngx.var.request_uri:match("^[^?#]*")
    if raw:sub(1, 4) ~= "/kv/" then
        return nil, "a key must follow /kv/ literally (no ./, ../ or // before it)"
    end
    -- ngx.unescape_uri turns "+" into a space; in a path it is a plus.
    local key = ngx.unescape_uri((raw:sub(5):gsub("%+", "%%2B")))
    if #key == 0 then
        return nil, "empty key: use /kv/{key}"
    end
    if #key > M.KEY_MAX then
        return nil, string.format("key is %d bytes, at most %d are allowed", #key, M.KEY_MAX)
    end
    return key
end

-- The request body, whether nginx kept it in memory or in a temp file.
local function request_body()
    ngx.req.read_body()
    local data = ngx.req.get_body_data()
    if data then
        return data
    end
    local path = ngx.req.get_body_file()
    if not path then
        return "" -- no body: an empty value
    end
    local f, err = io.open(path, "rb")
    if not f then
        return nil, "cannot read the request body from " .. path .. ": " .. tostring(err)
    end
    data = f:read("*a")
    f:close()
    return data
end

local function get(coll, key)
    local value, msg, code = call(coll, "get", key)
    if value == nil then
        if msg ~= nil then
            return fail("get", key, msg, code)
        end
        return reply(ngx.HTTP_NOT_FOUND, "not found")
    end
    ngx.status = ngx.HTTP_OK
    ngx.header["Content-Type"] = "application/octet-stream"
    ngx.header["Content-Length"] = #value
    ngx.print(value)
    return ngx.exit(ngx.HTTP_OK)
end

local function put(coll, key)
    local body, err = request_body()
    if not body then
        ngx_log(ERR, "kv: ", err)
        return reply(ngx.HTTP_INTERNAL_SERVER_ERROR, err)
    end
    local ok, msg, code = call(coll, "put", key, body)
    if not ok then
        if code == armdb.codes.TOOBIG then
            return reply(413, msg)
        end
        return fail("put", key, msg, code)
    end
    return ngx.exit(ngx.HTTP_NO_CONTENT)
end

local function delete(coll, key)
    local ok, msg, code = call(coll, "delete", key)
    if ok == nil then
        return fail("delete", key, msg, code)
    end
    if not ok then
        return reply(ngx.HTTP_NOT_FOUND, "not found")
    end
    return ngx.exit(ngx.HTTP_NO_CONTENT)
end

local METHODS = { GET = get, PUT = put, DELETE = delete }

-- location /kv/ { content_by_lua_block { require("kv").kv() } }
function M.kv()
    local handler = METHODS[ngx.req.get_method()]
    if not handler then
        return reply(ngx.HTTP_NOT_ALLOWED, "method not allowed: use GET, PUT or DELETE",
            { Allow = "GET, PUT, DELETE" })
    end
    -- Which worker answered (every worker serves the same store).
    ngx.header["X-Worker"] = ngx.worker.pid()
    local key, err = request_key()
    if not key then
        return reply(ngx.HTTP_BAD_REQUEST, err)
    end
    local coll = collection()
    if not coll then
        return
    end
    return handler(coll, key)
end

-- location = /stats { content_by_lua_block { require("kv").stats() } }
function M.stats()
    if ngx.req.get_method() ~= "GET" then
        return reply(ngx.HTTP_NOT_ALLOWED, "method not allowed: use GET", { Allow = "GET" })
    end
    local coll = collection()
    if not coll then
        return
    end
    local stats, msg, code = call(coll, "stats")
    if not stats then
        return fail("stats", nil, msg, code)
    end
    return answer.json(ngx.HTTP_OK, stats)
end

-- error_page 413: nginx refused a body over client_max_body_size (limit,
-- as written in nginx.conf) before any handler ran.
function M.too_large(limit)
    return reply(413, "value too large: a request body may be at most " .. limit
        .. " (client_max_body_size in nginx.conf)")
end

return M
