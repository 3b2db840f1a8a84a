-- armdb.ngx: one armdb database for every worker of an OpenResty / nginx
-- (with the Lua module), each worker reading and writing it at once.
--
--   -- init_worker_by_lua_block:
--   local anx = require("armdb.ngx")
--   anx.init(DIR, { collections = { kv = { key = "string(64)", value = "raw" } },
--                   umask = "022", tasks = true, stats_dict = "armdb_tasks" })
--   -- a handler:
--   local kv, err = anx.collection("kv")   -- nil, why while the database is not open
--   -- exit_worker_by_lua_block:
--   anx.exit()
--
-- The database is opened in shared mode (opts.shared; see SHARED MODE in
-- armdb.h): every worker has its own handle on the same stores, and a
-- write acknowledged in one worker is read by the next request in any
-- other. Open in init_worker, never in init (the master): a handle does
-- not survive fork(). A worker that nginx respawns after a crash opens
-- its own; what the dead one left half done is repaired by the next
-- worker that touches it.
--
-- What a request may wait for (no call blocks the event loop longer):
--
--   * get, put, delete, cas, update, batch: memory, and one pwrite into the
--     page cache under the shard's lock, which the other workers hold for
--     the same (microseconds). Before that a worker applies the entries
--     the other workers wrote since it last looked: its background thread
--     does so every sync_interval_ms (50 ms by default), so a request finds
--     at most that much to apply (about 1 ms at 100k writes a second).
--   * Once every max_file_size bytes (256 MiB by default) a shard's file
--     rotates: the writer that crosses it waits for one fdatasync.
--   * sync = "always" makes every write wait for its own fdatasync: not
--     for an event loop (the default, "interval", syncs in the
--     background; see the durability contract in armdb.h).
--   * Compaction, hints and interval barriers run on armdb's own threads.
--     Scans and policy sweeps run in slices (tasks = true: the
--     collections' policy tasks, such as ttl sweeps, tick every `tick`
--     seconds for at most `slice` seconds, in worker 0 only, since one
--     sweeper is enough for all); count() is one call per shard.
--   * The open itself (init_worker) loads the index of each collection:
--     from a fraction of a second to seconds for big stores, before the
--     worker serves. Slow jobs of your own (an export, a backup) belong in
--     ngx.timer.at or a separate process (`armdb` command, read-only).
--
-- While a process that is not in shared mode holds a store (the `armdb`
-- command writing to it, say), the open is retried every `retry` seconds
-- from a timer, and collection() answers nil and the reason meanwhile.
local armdb = require("armdb")

local ngx = rawget(_G, "ngx")

local M = {}

local state = {
    db = nil, colls = {}, sched = nil, err = "not opened yet", dir = nil, opts = nil, dict = nil,
}

local DEFAULTS = { retry = 0.05, slice = 0.005, tick = 0.05 }
local OWN = { collections = true, umask = true, retry = true, tasks = true, slice = true, tick = true,
    stats_dict = true, on_open = true }

local function log(level, ...)
    ngx.log(level, "armdb: ", ...)
end

-- The task counters worker 0 publishes for the others (stats_dict).
local function publish(sched)
    if not state.dict then
        return
    end
    local ok, cjson = pcall(require, "cjson.safe")
    if not ok then
        return
    end
    state.dict:set("tasks", cjson.encode(M.task_stats(sched)))
end

local function start_tasks(db, opts)
    local sched = require("armdb.jobs.scheduler").new({ slice = opts.slice, on_error = function(task, err)
        log(ngx.ERR, "task ", task.name, ": ", tostring(err))
    end })
    sched:add_db(db)
    local inner = sched.tick
    sched.tick = function(self)
        local n = inner(self)
        publish(self)
        return n
    end
    local ok, err = sched:start_ngx({ interval = opts.tick })
    if not ok then
        log(ngx.ERR, "cannot start the tasks: ", err)
        return nil
    end
    return sched
end

local function open(dir, opts)
    local dbopts = {}
    for k, v in pairs(opts) do
        if not OWN[k] then
            dbopts[k] = v
        end
    end
    dbopts.shared = true
    local db, msg, code = armdb.open(dir, dbopts)
    if not db then
        return nil, msg, code
    end
    local colls = {}
    for name, spec in pairs(opts.collections or {}) do
        colls[name], msg, code = db:collection(name, spec)
        if not colls[name] then
            db:close()
            return nil, "collection " .. name .. ": " .. tostring(msg), code
        end
    end
    return db, colls
end

local function try_open(premature, attempt)
    if premature then
        return -- the worker is exiting
    end
    local opts = state.opts
    local db, colls, code = open(state.dir, opts)
    if db then
        state.db, state.colls, state.err = db, colls, nil
        if opts.tasks and ngx.worker.id() == 0 then
            state.sched = start_tasks(db, opts)
        end
        if attempt > 0 then
            log(ngx.WARN, "opened ", state.dir, " after ", attempt, " retries")
        end
        if opts.on_open then
            opts.on_open(db, colls)
        end
        return
    end
    state.err = colls
    if code == armdb.codes.LOCKED then
        -- Say it once, then every 200 tries, not 20 times a second.
        if attempt % 200 == 0 then
            log(ngx.ERR, "cannot open ", state.dir, ": ", colls, "; retrying every ", opts.retry, " s")
        end
        local ok, err = ngx.timer.at(opts.retry, try_open, attempt + 1)
        if not ok then
            log(ngx.ERR, "cannot schedule a retry: ", err)
        end
        return
    end
    log(ngx.ERR, "cannot open ", state.dir, ": ", colls)
end

-- init_worker_by_lua: open the database at dir (created if absent) in this
-- worker. opts: armdb.open's options (shared is forced), and
--   collections  name -> spec: collections to open with it
--   umask        an octal string, set first (nginx's daemon mode leaves 0,
--                which would make the files armdb creates writable by all)
--   tasks        true: run the collections' policy tasks in worker 0
--   slice, tick  their budget: at most slice seconds every tick seconds
--   stats_dict   a lua_shared_dict where worker 0 publishes the tasks'
--                counters, so that every worker can report them
--   retry        seconds between two opens while the store is locked
--   on_open      function(db, collections), once it is open
function M.init(dir, opts)
    if ngx == nil or ngx.worker == nil then
        error("armdb.ngx: init needs OpenResty (call it from init_worker_by_lua*)", 2)
    end
    if type(dir) ~= "string" or dir == "" then
        error("armdb.ngx.init: dir must be a non-empty string", 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb.ngx.init: opts must be a table, got " .. type(opts), 2)
    end
    local o = {}
    for k, v in pairs(DEFAULTS) do
        o[k] = v
    end
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    if o.umask ~= nil then
        local mask = type(o.umask) == "string" and tonumber(o.umask, 8)
        if not mask then
            error("armdb.ngx.init: umask must be an octal string, got " .. tostring(o.umask), 2)
        end
        local ffi = require("ffi")
        pcall(ffi.cdef, "unsigned int umask(unsigned int mask);")
        ffi.C.umask(mask)
    end
    if o.stats_dict then
        state.dict = ngx.shared[o.stats_dict]
        if not state.dict then
            error("armdb.ngx.init: no lua_shared_dict " .. tostring(o.stats_dict) .. " in nginx.conf", 2)
        end
    end
    state.dir, state.opts = dir, o
    try_open(false, 0)
end

-- The open database, or nil and why not.
function M.db()
    return state.db, state.err
end

-- A collection opened by init (or opened now with spec), or nil and why.
function M.collection(name, spec)
    local db = state.db
    if not db then
        return nil, "database not open: " .. tostring(state.err)
    end
    local c = state.colls[name]
    if c then
        return c
    end
    if not spec then
        return nil, "collection " .. tostring(name) .. " was not opened by armdb.ngx.init"
    end
    local msg, code
    c, msg, code = db:collection(name, spec)
    if c then
        state.colls[name] = c
    end
    return c, msg, code
end

-- The counters of the policy tasks (name -> every, rounds, steps, busy_ms,
-- last_error): worker 0's own, or what it published in stats_dict.
function M.task_stats(sched)
    sched = sched or state.sched
    if sched then
        local t = {}
        for _, task in ipairs(sched.tasks) do
            t[task.name] = { every = task.every, rounds = task.rounds, steps = task.steps,
                busy_ms = task.busy * 1000, last_error = task.last_error and tostring(task.last_error) or nil }
        end
        return t
    end
    local json = state.dict and state.dict:get("tasks")
    if json then
        return require("cjson.safe").decode(json) or {}
    end
    return {}
end

-- exit_worker_by_lua: close this worker's handle (the last worker out
-- seals the store's active files, as a single writer's close does).
function M.exit()
    local db = state.db
    if state.sched then
        state.sched:stop()
    end
    state.db, state.colls, state.sched, state.err = nil, {}, nil, "closed"
    if db then
        local ok, msg = db:close()
        if not ok then
            log(ngx.ERR, "closing ", state.dir, ": ", msg)
        end
    end
end

return M
