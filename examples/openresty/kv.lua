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
-- give back). Each nginx worker opens the database in
-- init_worker(); a store has one writer process, so the server must run one
-- worker (serve refuses more). A failure of armdb answers 500 with its
-- message, which is also logged at the error level; the other errors
-- answer 4xx with a line of text saying what was wrong.
--
-- The same database holds the "sessions" collection (sessions.lua); once
-- it is open, a scheduler (armdb.jobs.scheduler) runs the collections'
-- policy tasks, among them the sweep that purges expired sessions, in
-- slices of at most SLICE seconds from ngx.timer.every.
local ffi = require("ffi")
local cjson = require("cjson.safe")
local sessions = require("sessions")

-- A library that cannot be loaded (not built, another ABI) is reported by
-- init_worker and in every answer (503), not as nginx's bare 500 page.
local armdb_loaded, armdb = pcall(require, "armdb")

pcall(ffi.cdef, "unsigned int umask(unsigned int mask);") -- pcall: it may be declared already

local ngx = ngx -- luacheck: ignore 113 (the global of OpenResty)
local ngx_log, ERR, WARN = ngx.log, ngx.ERR, ngx.WARN

local M = {}

M.KEY_MAX = 64
M.COLLECTION = "kv"
M.SPEC = { key = "string(" .. M.KEY_MAX .. ")", value = "raw" }

-- While another process holds the writer lock (an old worker still
-- finishing its requests after `nginx -s reload`), opening is retried
-- this often; the requests meanwhile get 503.
local RETRY_SECONDS = 0.05

-- The scheduler's budget: a tick runs steps for at most SLICE seconds (and
-- one step more), every TICK seconds, so a request waits at most that long.
local SLICE, TICK = 0.005, 0.05

local state = { db = nil, coll = nil, sched = nil, err = "not opened yet", dir = nil, sweep_every = nil }

local function open_db(dir)
    local db, msg, code = armdb.open(dir)
    if not db then
        return nil, msg, code
    end
    local coll, scoll
    coll, msg, code = db:collection(M.COLLECTION, M.SPEC)
    if coll then
        scoll, msg, code = db:collection(sessions.COLLECTION, sessions.spec(state.sweep_every))
    end
    if not scoll then
        db:close()
        return nil, msg, code
    end
    return db, coll, scoll
end

-- The policy tasks of the open collections (the sessions' ttl sweep) and
-- a compaction step, ticked from a timer of this worker.
local function start_scheduler(db)
    local sched = require("armdb.jobs.scheduler").new({ slice = SLICE, on_error = function(task, err)
        ngx_log(ERR, "armdb: task ", task.name, ": ", tostring(err))
    end })
    sched:add_db(db)
    local ok, err = sched:start_ngx({ interval = TICK })
    if not ok then
        ngx_log(ERR, "armdb: cannot start the scheduler: ", err)
        return nil
    end
    return sched
end

local function try_open(premature, dir, attempt)
    if premature then
        return -- the worker is exiting
    end
    local db, coll, code = open_db(dir) -- on success: db, kv, sessions
    if db then
        state.db, state.coll, state.err = db, coll, nil
        state.sched = start_scheduler(db)
        sessions.attach(code, state.sched)
        if attempt > 0 then
            ngx_log(WARN, "armdb: opened ", dir, " after ", attempt, " retries")
        end
        return
    end
    state.err = coll
    sessions.detach(coll)
    if code == armdb.codes.LOCKED then
        -- Say it once, then every 200 tries (10 s), not 20 times a second.
        if attempt % 200 == 0 then
            ngx_log(ERR, "armdb: cannot open ", dir, ": ", coll, "; retrying every ", RETRY_SECONDS, " s")
        end
        local ok, err = ngx.timer.at(RETRY_SECONDS, try_open, dir, attempt + 1)
        if not ok then
            ngx_log(ERR, "armdb: cannot schedule a retry: ", err)
        end
        return
    end
    ngx_log(ERR, "armdb: cannot open ", dir, ": ", coll)
end

-- init_worker_by_lua: open the database dir (created if absent), its
-- collections and their scheduler. Called in every worker. umask (an
-- octal string, optional) is set first: nginx's daemon mode resets it to
-- 0, which would leave the files armdb creates writable by everyone.
-- opts.sweep_every: seconds between two sweeps of expired sessions
-- (default: armdb's, 60).
function M.init_worker(dir, umask, opts)
    state.sweep_every = opts and opts.sweep_every
    if umask then
        ffi.C.umask((assert(tonumber(umask, 8), "umask must be an octal string")))
    end
    state.dir = dir
    if not armdb_loaded then
        state.err = tostring(armdb)
        sessions.detach(state.err)
        ngx_log(ERR, state.err)
        return
    end
    try_open(false, dir, 0)
end

-- exit_worker_by_lua: close it, so the next worker (after a reload) gets
-- the lock as soon as this one is done.
function M.exit_worker()
    local db = state.db
    if state.sched then
        state.sched:stop()
    end
    sessions.detach("closed")
    state.db, state.coll, state.sched, state.err = nil, nil, nil, "closed"
    if db then
        local ok, msg = db:close()
        if not ok then
            ngx_log(ERR, "armdb: closing ", state.dir, ": ", msg)
        end
    end
end

-- ---- responses ----

local function reply(status, text, headers)
    ngx.status = status
    ngx.header["Content-Type"] = "text/plain; charset=utf-8"
    if headers then
        for name, value in pairs(headers) do
            ngx.header[name] = value
        end
    end
    ngx.say(text)
    return ngx.exit(ngx.HTTP_OK)
end

-- An armdb failure: 500, the message in the body and in the error log.
local function fail(what, key, msg, code)
    local text = string.format("armdb: %s%s: %s (code %s)", what, key and " " .. ngx.escape_uri(key) or "",
        tostring(msg), tostring(code))
    ngx_log(ERR, text)
    return reply(ngx.HTTP_INTERNAL_SERVER_ERROR, text)
end

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
    local coll = state.coll
    if not coll then
        reply(ngx.HTTP_SERVICE_UNAVAILABLE, "armdb: database not open: " .. tostring(state.err))
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
    local json, err = cjson.encode(stats)
    if not json then
        return fail("stats", nil, "cannot encode the stats as JSON: " .. tostring(err), "cjson")
    end
    ngx.status = ngx.HTTP_OK
    ngx.header["Content-Type"] = "application/json"
    ngx.say(json)
    return ngx.exit(ngx.HTTP_OK)
end

-- error_page 413: nginx refused a body over client_max_body_size (limit,
-- as written in nginx.conf) before any handler ran.
function M.too_large(limit)
    return reply(413, "value too large: a request body may be at most " .. limit
        .. " (client_max_body_size in nginx.conf)")
end

return M
