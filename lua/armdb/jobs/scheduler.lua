-- armdb.jobs.scheduler: periodic work cut into short slices, so that it
-- can share a thread (an nginx worker, a script's loop) with other work.
--
--   local scheduler = require("armdb.jobs.scheduler")
--   local sched = scheduler.new({ slice = 0.005 })
--   sched:add({ name = "trim", every = 60, step = function(deadline)
--       ... a bounded piece of work ...
--       return finished   -- true: the round is done; false: call me again
--   end })
--   sched:add_db(db)       -- the database's policy tasks and a compaction
--   sched:tick()           -- run what is due, for about one slice
--   sched:run({ ["until"] = function() return done end })  -- a blocking loop
--   sched:start_ngx()      -- under OpenResty: ticks from ngx.timer.every
--
-- A task is due `every` seconds after its last round began (at once when
-- added, unless first = seconds from now). Its step gets the deadline of
-- the slice and the scheduler's clock (step(deadline, clock): the deadline
-- is a time on that clock) and should return before clock() passes it;
-- a step that returns false stays due and is called again, in this tick if
-- time is left (tasks take turns) or in the next. tick() starts no step
-- once the slice is used up, so a tick overruns its slice by at most one
-- step; a step that raises ends its round (the error is kept as
-- task.last_error and passed to opts.on_error(task, err)). A tick in which
-- no step made the clock move stops after one turn, so a step that never
-- finishes cannot hold a tick forever.
--
-- opts of new: slice (seconds, default 0.005), clock (a function returning
-- seconds; default a monotonic clock, or ngx.now under OpenResty: replace
-- it in tests), sleep (seconds -> nothing, for run; default nanosleep, or
-- ngx.sleep), on_error.
local ffi = require("ffi")

pcall(ffi.cdef, "typedef struct { long sec, nsec; } armdb_sched_timespec;"
    .. " int clock_gettime(int clock, armdb_sched_timespec *ts);"
    .. " int nanosleep(const armdb_sched_timespec *req, armdb_sched_timespec *rem);")

local M = {}

local ts = ffi.new("armdb_sched_timespec")
local ts_rem = ffi.new("armdb_sched_timespec")

local function monotonic()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

local function nanosleep(s)
    if s <= 0 then
        return
    end
    ts.sec = math.floor(s)
    ts.nsec = math.floor((s - math.floor(s)) * 1e9)
    ffi.C.nanosleep(ts, ts_rem)
end

local ngx = rawget(_G, "ngx")

local Sched = {}
Sched.__index = Sched

function M.new(opts)
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb.jobs.scheduler.new: opts must be a table, got " .. type(opts), 2)
    end
    opts = opts or {}
    local slice = opts.slice or 0.005
    if type(slice) ~= "number" or slice <= 0 then
        error("armdb.jobs.scheduler.new: slice must be a number of seconds > 0, got " .. tostring(slice), 2)
    end
    for _, name in ipairs({ "clock", "sleep", "on_error" }) do
        if opts[name] ~= nil and type(opts[name]) ~= "function" then
            error("armdb.jobs.scheduler.new: " .. name .. " must be a function, got " .. type(opts[name]), 2)
        end
    end
    local clock = opts.clock or (ngx and ngx.now and function()
        ngx.update_time()
        return ngx.now()
    end) or monotonic
    local sleep = opts.sleep or (ngx and ngx.sleep) or nanosleep
    return setmetatable({ slice = slice, clock = clock, sleep = sleep, on_error = opts.on_error, tasks = {},
        turn = 0, ticks = 0 }, Sched)
end

-- Add a task; returns it (its fields: name, every, step, due, running,
-- rounds, steps, last_error, busy = seconds spent in its steps).
function Sched:add(task)
    if type(task) ~= "table" then
        error("armdb.jobs.scheduler: a task must be a table, got " .. type(task), 2)
    end
    if type(task.step) ~= "function" then
        error("armdb.jobs.scheduler: task " .. tostring(task.name) .. " needs a step function", 2)
    end
    if type(task.every) ~= "number" or task.every < 0 then
        error("armdb.jobs.scheduler: task " .. tostring(task.name) .. ": every must be a number of seconds >= 0,"
            .. " got " .. tostring(task.every), 2)
    end
    for _, t in ipairs(self.tasks) do
        if t == task then
            error("armdb.jobs.scheduler: task " .. tostring(task.name) .. " is added already", 2)
        end
    end
    task.name = task.name or ("task " .. (#self.tasks + 1))
    task.due = self.clock() + (task.first or 0)
    task.running = false
    task.rounds, task.steps, task.busy = 0, 0, 0
    self.tasks[#self.tasks + 1] = task
    return task
end

-- Remove a task (by the table add returned, or by name). true if found.
function Sched:remove(task)
    for i, t in ipairs(self.tasks) do
        if t == task or t.name == task then
            table.remove(self.tasks, i)
            return true
        end
    end
    return false
end

-- The policy tasks of db (armdb.policy.tasks(db), if that module is
-- there: TTL sweeps, compaction windows) and, if opts.compact or
-- opts.compact_every is given, a compaction step over its collections
-- (not for a read-only database; opts.compact_every seconds apart, default
-- 60, with opts.compact (ratio, min_bytes) as jobs.compact_step takes
-- them). Each store's background thread compacts by itself, outside the
-- caller's thread; the step runs a whole compaction in the caller (an
-- event loop waits for it), so it is for databases opened with
-- no_auto_compact. Returns the tasks added.
function Sched:add_db(db, opts)
    opts = opts or {}
    local added = {}
    local ok, policy = pcall(require, "armdb.policy")
    if not ok and not tostring(policy):find("module 'armdb.policy' not found", 1, true) then
        error(policy, 0) -- there, but broken: say so
    end
    if ok and type(policy) == "table" and type(policy.tasks) == "function" then
        for _, task in ipairs(policy.tasks(db) or {}) do
            added[#added + 1] = self:add(task)
        end
    end
    if not db.read_only and (opts.compact or opts.compact_every) then
        local copts = {}
        for k, v in pairs(opts.compact or {}) do
            copts[k] = v
        end
        copts.clock = self.clock
        local step, stats = require("armdb.jobs.compact").compact_step(db, copts)
        added[#added + 1] = self:add({ name = "compact " .. db.dir, every = opts.compact_every or 60,
            first = opts.compact_every or 60, step = step, stats = stats })
    end
    return added
end

local function run_step(self, task, deadline)
    local t0 = self.clock()
    if not task.running then
        task.running = true
        task.started = t0
    end
    task.steps = task.steps + 1
    local ok, finished = pcall(task.step, deadline, self.clock)
    local t1 = self.clock()
    task.busy = task.busy + (t1 - t0)
    if not ok then
        task.last_error = finished
        if self.on_error then
            self.on_error(task, finished)
        end
        finished = true
    end
    if finished then
        task.running = false
        task.rounds = task.rounds + 1
        task.due = task.started + task.every
    end
    return t1
end

-- Run the steps of due tasks, taking turns, until the slice is used up or
-- nothing is due. Returns the number of steps run.
function Sched:tick()
    local tasks = self.tasks
    local n = #tasks
    local now = self.clock()
    local deadline = now + self.slice
    local steps = 0
    self.ticks = self.ticks + 1
    while n > 0 and now < deadline do
        local ran, moved = false, false
        for _ = 1, n do
            self.turn = self.turn % n + 1
            local task = tasks[self.turn]
            if task and (task.running or task.due <= now) then
                local t1 = run_step(self, task, deadline)
                moved = moved or t1 > now
                now = t1
                ran = true
                steps = steps + 1
                if now >= deadline then
                    break
                end
            end
        end
        if not ran or not moved then
            break
        end
    end
    return steps
end

-- Seconds until the next task is due (0 if one is running or due).
function Sched:next_due()
    local now, best = self.clock(), nil
    for _, t in ipairs(self.tasks) do
        local d = t.running and 0 or math.max(0, t.due - now)
        if best == nil or d < best then
            best = d
        end
    end
    return best
end

-- A blocking loop: tick, then sleep until something is due (at most
-- opts.max_sleep seconds, default 1), until opts["until"]() (or
-- opts.stop()) returns true, checked after each tick. Returns the ticks run.
function Sched:run(opts)
    opts = opts or {}
    local stop = opts["until"] or opts.stop
    if stop ~= nil and type(stop) ~= "function" then
        error("armdb.jobs.scheduler: run's until must be a function, got " .. type(stop), 2)
    end
    local max_sleep = opts.max_sleep or 1
    local ticks = 0
    while true do
        self:tick()
        ticks = ticks + 1
        if stop and stop() then
            return ticks
        end
        local wait = self:next_due()
        if wait == nil then
            if not stop then
                return ticks -- nothing to do, and nothing to wait for
            end
            wait = max_sleep
        end
        if wait > 0 then
            self.sleep(math.min(wait, max_sleep))
        end
    end
end

-- Under OpenResty: tick every opts.interval seconds (default 0.05) from
-- ngx.timer.every, in this worker. Each tick runs at most a slice (and
-- one step), so a request waits at most that long for the worker. true,
-- or nil and ngx's error.
function Sched:start_ngx(opts)
    local n = rawget(_G, "ngx")
    if not (n and n.timer and n.timer.every) then
        error("armdb.jobs.scheduler: start_ngx needs OpenResty (ngx.timer.every)", 2)
    end
    opts = opts or {}
    self.stopped = false
    local ok, err = n.timer.every(opts.interval or 0.05, function(premature)
        if premature or self.stopped then
            return
        end
        self:tick()
    end)
    if not ok then
        return nil, err
    end
    return true
end

-- Stop the ticks start_ngx started (at their next firing).
function Sched:stop()
    self.stopped = true
end

return M
