-- httpbench: the worker's code of bench/http (see the "HTTP with 2 nginx
-- workers" section of bench/README.md). Every nginx instance of the
-- benchmark runs the same handlers; only the backend chosen in
-- init_worker differs:
--
--   armdb   armdb.store(dir, {key_len = 16, shared = true}): both workers
--           open the one store, default durability (a barrier every 50 ms)
--   shdict  ngx.shared.bench (lua_shared_dict): memory only
--   lmdb    LMDB through the FFI (httpbench_lmdb.lua), MDB_NOSYNC, one
--           environment per worker on the same directory
--   empty   no storage: GET answers a constant value, PUT drops the body;
--           the floor of HTTP, nginx and the handler itself
--
-- Locations (nginx.conf beside this file):
--   GET /get/KEY    200 and the value, 404 if absent
--   PUT /put/KEY    the body (100 bytes) stored: 204
--   /preload        loads keys 0 .. N-1 with 100-byte values (untimed)
--   /check          this worker reads every loaded key back
--
-- KEY is 16 ASCII bytes, http_key(i) (bench/nginx_wrk.lua computes the same).
local ngx = ngx -- luacheck: ignore 113

local KEY_LEN, VALUE_LEN = 16, 100

local M = {}

local sub, format = string.sub, string.format
local var, req, header = ngx.var, ngx.req, ngx.header

-- The backend's calls: get(k) -> value | nil | nil, err; put(k, v) -> true
-- | nil, err. Set once per worker by init_worker.
local bget, bput
local backend, nkeys
local close -- what exit_worker calls, if anything
local loader -- preload: bulk put when the backend has one
local describe -- /check: the backend's own counters, if it has any
local served = 0 -- requests this worker answered, logged at exit

local function http_key(i)
    return format("%08x%08x", (i * 40503 + 12345) % 4294967296, i)
end
M.http_key = http_key

-- A preloaded value: its key then filler, so that /check can tell it from
-- another key's value. wrk's PUTs write 100 bytes of "w".
local function preload_value(key)
    return key .. string.rep("v", VALUE_LEN - KEY_LEN)
end

local CONSTANT = string.rep("e", VALUE_LEN)

local function open_armdb(dir)
    local armdb = require("armdb")
    local store = assert(armdb.store(dir, { key_len = KEY_LEN, shared = true }))
    bget = function(k)
        return store:get(k)
    end
    bput = function(k, v)
        return store:put(k, v)
    end
    close = function()
        return store:close()
    end
    -- Where this worker's gets were served from, and how much of the other
    -- worker's writing it caught up with.
    describe = function()
        local st = store:stats()
        if not st then
            return ""
        end
        return format(" gets=%d cache_hits=%d cache_misses=%d shared_applied=%d files=%d",
            st.gets, st.cache_hits, st.cache_misses, st.shared_applied or 0, st.files)
    end
end

local function open_shdict()
    local dict = assert(ngx.shared.bench, "lua_shared_dict bench is not declared")
    bget = function(k)
        return dict:get(k)
    end
    bput = function(k, v)
        local ok, err, forcible = dict:set(k, v)
        if ok and forcible then
            return nil, "the dict evicted a key to make room"
        end
        return ok, err
    end
end

local function open_lmdb(dir)
    -- 1 GiB of address space: the data take about 20 MiB, the rest is
    -- room for copy-on-write pages between two commits.
    local db = assert(require("httpbench_lmdb").open(dir, 1024 * 1024 * 1024))
    bget = function(k)
        local ok, v = pcall(db.get, db, k)
        if not ok then
            return nil, v
        end
        return v
    end
    bput = function(k, v)
        return db:put(k, v)
    end
    close = function()
        return db:close()
    end
    -- One transaction per 10,000 keys: 100,000 commits would only make
    -- the untimed load slower.
    loader = function(keys, value_of)
        local ks, vs = {}, {}
        for i = 1, #keys do
            ks[#ks + 1], vs[#vs + 1] = keys[i], value_of(keys[i])
            if #ks == 10000 or i == #keys then
                local ok, err = db:put_many(ks, vs)
                if not ok then
                    return nil, err
                end
                ks, vs = {}, {}
            end
        end
        return true
    end
end

local function open_empty()
    bget = function()
        return CONSTANT
    end
    bput = function()
        return true
    end
end

function M.init_worker(name, dir, keys)
    backend, nkeys = name, keys
    if name == "armdb" then
        open_armdb(dir)
    elseif name == "shdict" then
        open_shdict()
    elseif name == "lmdb" then
        open_lmdb(dir)
    elseif name == "empty" then
        open_empty()
    else
        error("httpbench: unknown backend " .. tostring(name))
    end
end

function M.exit_worker()
    ngx.log(ngx.NOTICE, "httpbench: worker ", ngx.worker.id(), " (pid ", ngx.worker.pid(), ") of ",
        backend, " served ", served, " requests")
    if close then
        local ok, err = close()
        if not ok then
            ngx.log(ngx.ERR, "httpbench: closing ", backend, ": ", tostring(err))
        end
        close = nil
    end
end

-- The two handlers: the same code for every backend.

function M.get()
    served = served + 1
    local key = sub(var.uri, 6) -- after "/get/"
    if #key ~= KEY_LEN then
        return ngx.exit(400)
    end
    local v, err = bget(key)
    if v == nil then
        if err then
            ngx.log(ngx.ERR, "httpbench: ", backend, " get: ", tostring(err))
            return ngx.exit(500)
        end
        return ngx.exit(404)
    end
    header["Content-Length"] = #v
    ngx.print(v)
end

function M.put()
    served = served + 1
    local key = sub(var.uri, 6) -- after "/put/"
    if #key ~= KEY_LEN then
        return ngx.exit(400)
    end
    req.read_body()
    local body = req.get_body_data() -- nil if it went to a file: too large here
    if body == nil then
        return ngx.exit(400)
    end
    local ok, err = bput(key, body)
    if not ok then
        ngx.log(ngx.ERR, "httpbench: ", backend, " put: ", tostring(err))
        return ngx.exit(500)
    end
    return ngx.exit(204)
end

-- Untimed: keys 0 .. nkeys-1 through the backend's put (or its loader).
function M.preload()
    local ok, err = true, nil
    if loader then
        local keys = {}
        for i = 0, nkeys - 1 do
            keys[#keys + 1] = http_key(i)
        end
        ok, err = loader(keys, preload_value)
    else
        for i = 0, nkeys - 1 do
            local k = http_key(i)
            ok, err = bput(k, preload_value(k))
            if not ok then
                break
            end
        end
    end
    if not ok then
        ngx.log(ngx.ERR, "httpbench: ", backend, " preload: ", tostring(err))
        return ngx.exit(500)
    end
    ngx.say("loaded ", nkeys, " keys into ", backend, " in worker ", ngx.worker.pid())
end

-- Every loaded key read back by this worker: present, and either its
-- preloaded value or a PUT's body.
function M.check()
    local good, missing, wrong, failed = 0, 0, 0, 0
    local first
    if backend ~= "empty" then
        local put_body = string.rep("w", VALUE_LEN)
        for i = 0, nkeys - 1 do
            local k = http_key(i)
            local v, err = bget(k)
            if v == nil and err then
                failed = failed + 1
                first = first or (k .. ": " .. tostring(err))
            elseif v == nil then
                missing = missing + 1
                first = first or (k .. ": missing")
            elseif v == preload_value(k) or v == put_body then
                good = good + 1
            else
                wrong = wrong + 1
                first = first or (k .. ": " .. #v .. " bytes, not the value written")
            end
        end
    end
    ngx.say(format("pid=%d good=%d missing=%d wrong=%d failed=%d%s%s", ngx.worker.pid(), good, missing,
        wrong, failed, describe and describe() or "", first and (" first: " .. first) or ""))
end

return M
