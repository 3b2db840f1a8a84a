-- ngxbench: the nginx side of bench/ngx/run. armdb against ngx.shared.DICT
-- inside one nginx worker, in two modes (see README.md beside this file):
--
--   point  init_worker starts a timer (ngx.timer.at 0) that times N puts
--          then N random gets through armdb.store, an armdb bytes(16)/raw
--          collection and ngx.shared.DICT, REPS times in alternating order,
--          and writes the raw figures as JSON to cfg.out.
--   http   init_worker opens an armdb store, and a timer loads the same
--          HTTP_KEYS keys into it and into the dict, then writes cfg.out;
--          the locations /a/{key} (armdb) and /d/{key} (the dict) answer
--          GET and PUT for wrk.
--
-- The driver polls for cfg.out; progress lines go to cfg.log. Nothing here
-- is timed by nginx's cached clock: the point loops read CLOCK_MONOTONIC
-- through the FFI.
local cjson = require("cjson")

local ngx = ngx -- luacheck: ignore 113 (the global of OpenResty)

local M = {}

local benchdata = require("benchdata")
local now_ns = benchdata.now_ns


local KEY_LEN, VAL_LEN = 16, 100
local DICT = "bench" -- lua_shared_dict in nginx.conf

-- A failure of the run (not a bug): reported without a traceback.
local function die(msg)
    error({ msg = msg }, 0)
end

local cfg -- set by init_worker
local logf -- progress file

local function progress(fmt, ...)
    if logf then
        logf:write(string.format(fmt, ...), "\n")
        logf:flush()
    end
end

-- Written to a temp name and renamed: the driver never reads half a file.
local function write_result(doc)
    doc.env = { ngx_lua = ngx.config.ngx_lua_version, jit = jit.version }
    local tmp = cfg.out .. ".tmp"
    local f = assert(io.open(tmp, "wb"))
    f:write(cjson.encode(doc))
    f:close()
    assert(os.rename(tmp, cfg.out))
end

local function quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The driver asks the timer to give up (a busy worker handles no QUIT).
local function check_stop()
    local f = io.open(cfg.stop, "rb")
    if f then
        f:close()
        die("stopped by the driver")
    end
end

local function remove_tree(dir)
    os.execute("rm -rf " .. quote(dir))
end

-- ---- the data: as make_data() of bench/c_ops.c and bench/lua_ops.lua ----

-- keys[i] (1..n), vals made for the puts only, ok(i, v) the check.
local function make_data(n)
    return benchdata.bytes(n)
end

-- A random permutation of 1..n; one per repetition, the same for every engine.
local function make_order(n, rep)
    return benchdata.order(n, rep)
end

-- ---- the engines: open(dir) -> handle, close(); handle:put/get ----

local function armdb_opts()
    return { sync = cfg.sync, cache_size = cfg.cache_size }
end

local function open_store(dir)
    local armdb = require("armdb")
    local opts = armdb_opts()
    opts.key_len = KEY_LEN
    local s, err = armdb.store(dir, opts)
    if not s then
        die("armdb.store(" .. dir .. "): " .. tostring(err))
    end
    return s, function()
        assert(s:close())
    end
end

local function open_collection(dir)
    local armdb = require("armdb")
    local db, err = armdb.open(dir, armdb_opts())
    if not db then
        die("armdb.open(" .. dir .. "): " .. tostring(err))
    end
    local c
    c, err = db:collection("bench", { key = "bytes(" .. KEY_LEN .. ")", value = "raw" })
    if not c then
        die("db:collection: " .. tostring(err))
    end
    return c, function()
        assert(db:close())
    end
end

-- The dict, emptied (flush_all marks every item expired; flush_expired
-- frees them) so that each run starts empty, like a fresh store.
local function open_dict()
    local d = ngx.shared[DICT]
    d:flush_all()
    d:flush_expired(0)
    return d, function()
        d:flush_all()
        d:flush_expired(0)
    end
end

-- Each engine's put loop and get loop, compiled from one source text per
-- engine (loadstring), so that every engine gets its own bytecode and so
-- its own JIT traces: a loop shared by the engines would be traced for the
-- first one and run the others through side exits. The loops differ only
-- in the call; a failed or evicting put and a missing value end the run.
local LOOPS = [=[
local now_ns, die, VAL_LEN = ...
local function puts(h, keys, vals)
    local n = #keys
    local t0 = now_ns()
    for i = 1, n do
        local ok, err, forcible = h:@PUT@(keys[i], vals[i])
        if not ok or forcible then
            die("@NAME@ put: " .. tostring(err or "evicted other items: the dict is too small"))
        end
    end
    return now_ns() - t0
end
local function gets(h, keys, order)
    local n, sum = #keys, 0
    local t0 = now_ns()
    for j = 1, n do
        local v = h:get(keys[order[j]])
        if v == nil then
            die("@NAME@ get: key " .. (order[j] - 1) .. " is missing")
        end
        sum = sum + #v
    end
    local ns = now_ns() - t0
    if sum ~= n * VAL_LEN then
        die(string.format("@NAME@ gets returned %d bytes, expected %d", sum, n * VAL_LEN))
    end
    return ns
end
return puts, gets
]=]

-- armdb's put returns true or nil, message, code: `forcible` is a code,
-- never reached since ok is nil then. The dict's set returns ok, err,
-- forcible.
local function loops(name, put)
    local src = LOOPS:gsub("@(%u+)@", { PUT = put, NAME = name })
    local chunk = assert(loadstring(src, "=loops(" .. name .. ")"))
    return chunk(now_ns, die, VAL_LEN)
end

local function check_all(h, data)
    for i = 1, data.n do
        if not data.ok(i, h:get(data.keys[i])) then
            die(string.format("key %d: wrong value read back", i - 1))
        end
    end
end

local ENGINES = {
    { name = "armdb.store", open = open_store, put = "put" },
    { name = "armdb bytes(16)/raw", open = open_collection, put = "put" },
    { name = "ngx.shared.DICT", open = open_dict, put = "set" },
}
for _, e in ipairs(ENGINES) do
    e.puts, e.gets = loops(e.name, e.put)
end

-- One run of one engine: a fresh store (or the emptied dict), N timed
-- puts, an untimed check of every value, N timed gets in `order`.
local function run_engine(e, dir, data, order)
    check_stop()
    local h, close = e.open(dir)
    local vals = data.make_vals()
    collectgarbage()
    local put_ns = e.puts(h, data.keys, vals)
    vals = nil -- luacheck: ignore 311 (dropped before the gets, as in lua_ops.lua)
    collectgarbage()
    check_stop()
    check_all(h, data)
    collectgarbage()
    check_stop()
    local get_ns = e.gets(h, data.keys, order)
    local extra
    if e.name == "ngx.shared.DICT" then
        extra = { capacity = h:capacity(), free_space = h:free_space() }
    elseif h.stats then
        local st = h:stats()
        extra = { io_backend = st and st.io_backend }
    end
    close()
    remove_tree(dir)
    return put_ns, get_ns, extra
end

local function point(premature)
    if premature then
        return
    end
    local ok, err = xpcall(function()
        local n, reps = cfg.n, cfg.reps
        progress("point: making the data for %d keys", n)
        local data = make_data(n)
        check_stop()
        local res = { n = n, reps = reps, engines = {}, order = {}, extra = {} }
        for _, e in ipairs(ENGINES) do
            res.engines[e.name] = { put_ns = {}, get_ns = {} }
        end
        -- An untimed round first: JIT traces, the process's heap and the
        -- dict's pages exist before any timed run.
        local warm = make_order(n, 0)
        for _, e in ipairs(ENGINES) do
            run_engine(e, cfg.dir .. "/warm", data, warm)
        end
        warm = nil -- luacheck: ignore 311
        progress("point: warm-up round done")
        for rep = 1, reps do
            local order = make_order(n, rep)
            local seq = {}
            for i = 1, #ENGINES do
                seq[i] = rep % 2 == 1 and ENGINES[i] or ENGINES[#ENGINES + 1 - i]
            end
            local names = {}
            for _, e in ipairs(seq) do
                local put_ns, get_ns, extra = run_engine(e, cfg.dir .. "/rep", data, order)
                local r = res.engines[e.name]
                r.put_ns[rep], r.get_ns[rep] = put_ns, get_ns
                res.extra[e.name] = extra
                names[#names + 1] = e.name
                progress("point: rep %d/%d %-20s put %6.0f ns  get %6.0f ns", rep, reps, e.name,
                    put_ns / n, get_ns / n)
            end
            res.order[rep] = names
        end
        write_result({ ok = true, point = res })
    end, function(e)
        if type(e) == "table" then
            return e.msg
        end
        return debug.traceback(tostring(e), 2)
    end)
    if not ok then
        progress("point: failed (the driver prints why)")
        write_result({ ok = false, error = tostring(err) })
    end
end

-- ---- http mode ----

-- The HTTP key of index i (0-based): 16 ASCII bytes. bench/nginx_wrk.lua
-- computes the same (its http_key); keep the two in step. Exact in
-- doubles for i < 2^32.
local function http_key(i)
    return string.format("%08x%08x", (i * 40503 + 12345) % 4294967296, i)
end
M.http_key = http_key

local state = { store = nil, close = nil }

local function load_http(premature)
    if premature then
        return
    end
    local ok, err = xpcall(function()
        local n = cfg.http_keys
        local value = string.rep("v", VAL_LEN)
        local d = ngx.shared[DICT]
        local s = state.store
        for i = 0, n - 1 do
            if i % 65536 == 0 then
                check_stop()
            end
            local k = http_key(i)
            local done, msg = s:put(k, value)
            if not done then
                die("armdb put: " .. tostring(msg))
            end
            local set, serr, forcible = d:set(k, value)
            if not set or forcible then
                die("shdict set: " .. tostring(serr or "evicted other items: the dict is too small"))
            end
        end
        progress("http: %d keys loaded into armdb and the dict", n)
        write_result({ ok = true, http_keys = n, io_backend = (s:stats() or {}).io_backend,
            dict = { capacity = d:capacity(), free_space = d:free_space() } })
    end, function(e)
        if type(e) == "table" then
            return e.msg
        end
        return debug.traceback(tostring(e), 2)
    end)
    if not ok then
        progress("http: loading failed (the driver prints why)")
        write_result({ ok = false, error = tostring(err) })
    end
end

-- init_worker_by_lua: c is the config the driver wrote into nginx.conf.
function M.init_worker(c)
    cfg = c
    logf = io.open(cfg.log, "ab")
    if cfg.jit_log then
        require("jit.v").start(cfg.jit_log) -- BENCH_NGX_JITLOG: why a loop is slow
    end
    local ok, err
    if cfg.mode == "point" then
        ok, err = ngx.timer.at(0, point)
    else
        local opened, why = pcall(open_store, cfg.dir .. "/http")
        if not opened then
            write_result({ ok = false, error = type(why) == "table" and why.msg or tostring(why) })
            return
        end
        state.store = why
        ok, err = ngx.timer.at(0, load_http)
    end
    if not ok then
        write_result({ ok = false, error = "ngx.timer.at: " .. tostring(err) })
    end
end

function M.exit_worker()
    if state.store then
        state.store:close()
        state.store = nil
    end
end

-- The handlers: the key is the URI after the 3-byte prefix (/a/ or /d/);
-- GET answers the value (404 if absent), PUT stores the body (204). The
-- two differ only in the engine's call.
local function key_of()
    local k = ngx.var.uri:sub(4)
    if #k ~= KEY_LEN then
        ngx.status = 400
        ngx.say("key must be ", KEY_LEN, " bytes")
        return ngx.exit(ngx.HTTP_OK)
    end
    return k
end

local function body()
    ngx.req.read_body()
    local v = ngx.req.get_body_data()
    if not v then
        ngx.status = 400
        ngx.say("no body, or a body too large for client_body_buffer_size")
        return ngx.exit(ngx.HTTP_OK)
    end
    return v
end

local function answer(v)
    if v == nil then
        return ngx.exit(ngx.HTTP_NOT_FOUND)
    end
    ngx.header["Content-Length"] = #v
    ngx.print(v)
    return ngx.exit(ngx.HTTP_OK)
end

local GET, PUT = "GET", "PUT"

-- location /a/
function M.armdb()
    local s = state.store
    local k = key_of()
    local m = ngx.req.get_method()
    if m == GET then
        return answer(s:get(k))
    elseif m == PUT then
        local ok, err = s:put(k, body())
        if not ok then
            ngx.log(ngx.ERR, "armdb put: ", err)
            return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
        end
        return ngx.exit(ngx.HTTP_NO_CONTENT)
    end
    return ngx.exit(ngx.HTTP_NOT_ALLOWED)
end

-- location /d/
function M.dict()
    local d = ngx.shared[DICT]
    local k = key_of()
    local m = ngx.req.get_method()
    if m == GET then
        return answer(d:get(k))
    elseif m == PUT then
        local ok, err, forcible = d:set(k, body())
        if not ok or forcible then
            ngx.log(ngx.ERR, "shdict set: ", err or "evicted other items")
            return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
        end
        return ngx.exit(ngx.HTTP_NO_CONTENT)
    end
    return ngx.exit(ngx.HTTP_NOT_ALLOWED)
end

return M
