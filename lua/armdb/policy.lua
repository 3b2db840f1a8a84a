-- armdb.policy: storage policies of a collection, declared in its spec
-- (db:collection(name, spec)) and changed at run time with
-- coll:set_policy(t). They compose: each is one field of the spec.
--
--   ttl = seconds          values expire (armdb.policy.ttl); 0 = values
--                          carry an expiry but none by default. Per write:
--                          coll:put(k, v, { ttl = 30 }) (also cas, update).
--   max_keys = n           a quota (armdb.policy.quota), with
--   max_bytes = n          on_full = "refuse" (default) or "evict".
--   compaction = { threshold = 0.3, window = { "01:00", "05:00" },
--                  bytes_per_sec = 50e6 }     (armdb.policy.engine)
--   sync = "none" | "interval" | "always", sync_interval_ms = n
--   sweep_every = seconds  how often the ttl sweep task runs (default 60)
--
-- Only what decoding needs is in the database's CATALOG: whether the
-- values of a collection carry an expiry ("expiry": true, fixed when the
-- collection is created with a ttl). Everything else belongs to the
-- handle: a reopen without the spec keeps reading expiring values right,
-- but its defaults (ttl, quota, compaction, sync) are those of the spec or
-- set_policy of that open.
--
-- Scheduled work: policy.tasks(db) returns the tasks of the collections
-- open in db, { name = "ttl:sessions", every = seconds, step = fn }, where
-- step(deadline, clock) does bounded work (until clock() passes deadline,
-- and at most a fixed number of keys) and returns true when its round is
-- complete, false if it has more to do. The scheduler passes its clock;
-- a caller that passes none has the deadline read on policy.now().
--
-- Clock: policy.now() is seconds since the epoch, ngx.now() under
-- OpenResty, else gettimeofday through the FFI: expiries are kept on it,
-- and deadlines are read on it. It is a field: assign another function to
-- it (a test's fake clock), and every policy uses it. A deadline given
-- without its clock and more than an hour away from policy.now() is taken
-- for one on another clock: the step then works for STEP_BUDGET seconds.
local ffi = require("ffi")

local type, error, tostring, pairs, floor = type, error, tostring, pairs, math.floor

local M = {}

-- ---- the clock ----

local ngx = rawget(_G, "ngx")
local wall
if ngx and type(ngx.now) == "function" then
    wall = function()
        return ngx.now()
    end
else
    local ok = pcall(ffi.cdef, [[
        struct armdb_policy_timeval { long tv_sec; long tv_usec; };
        int gettimeofday(struct armdb_policy_timeval *tv, void *tz);
    ]])
    local tv = ok and ffi.new("struct armdb_policy_timeval")
    if ok and pcall(function() return ffi.C.gettimeofday end) then
        wall = function()
            ffi.C.gettimeofday(tv, nil)
            return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
        end
    else
        wall = os.time
    end
end

function M.now()
    return wall()
end

-- The end of a step's work for a scheduler's deadline: the deadline
-- itself, or, when it is more than an hour from policy.now() (a scheduler
-- on another clock, a monotonic one), STEP_BUDGET seconds from now.
M.STEP_BUDGET = 0.005

function M.step_end(deadline)
    if deadline == nil then
        return nil
    end
    local t = M.now()
    if deadline - t > 3600 or t - deadline > 3600 then
        return t + M.STEP_BUDGET
    end
    return deadline
end

-- May the background thread compact coll now (its compaction window, if
-- it has one, is open)? For jobs that compact collections on their own.
function M.compaction_allowed(coll)
    local P = coll._policy
    local c = P and P.compaction
    if not (c and c.window) then
        return true
    end
    return require("armdb.policy.engine").inside(c.window, M.minute_of_day(M.now()))
end

-- Minutes since local midnight at time t (seconds since the epoch).
function M.minute_of_day(t)
    local d = os.date("*t", floor(t))
    return d.hour * 60 + d.min
end

-- ---- the fields ----

local ttl = require("armdb.policy.ttl")
local quota = require("armdb.policy.quota")
local engine = require("armdb.policy.engine")
local guard = require("armdb.policy.guard")

-- Spec fields that are policies (db.lua accepts these besides key, value
-- and ordered).
M.FIELDS = { ttl = true, max_keys = true, max_bytes = true, on_full = true, compaction = true, sync = true,
    sync_interval_ms = true, sweep_every = true }

local SYNC = { none = true, interval = true, always = true }

local function show(v)
    return require("armdb.codecs").show(v)
end

local function bad(name, field, why, level)
    error("armdb: collection " .. name .. ": policy " .. field .. " " .. why, level + 1)
end

local function count_field(name, field, v, level)
    if v ~= false and (type(v) ~= "number" or v < 1 or v ~= floor(v) or v >= 2 ^ 53) then
        bad(name, field, "must be a whole number >= 1 or false, got " .. show(v), level + 1)
    end
end

-- "HH:MM" -> minutes since midnight.
local function hhmm(name, s, level)
    local h, m
    if type(s) == "string" then
        h, m = s:match("^(%d%d?):(%d%d)$")
    end
    h, m = tonumber(h), tonumber(m)
    if not h or h > 23 or m > 59 then
        bad(name, "compaction.window", 'must be two times "HH:MM", got ' .. show(s), level + 1)
    end
    return h * 60 + m
end

local function check_compaction(name, c, level)
    if c == false then
        return false
    end
    if type(c) ~= "table" then
        bad(name, "compaction", "must be a table or false, got " .. type(c), level + 1)
    end
    local out = {}
    for k, v in pairs(c) do
        if k == "threshold" then
            if type(v) ~= "number" or not (v > 0 and v <= 1) then
                bad(name, "compaction.threshold", "must be a number in (0, 1], got " .. show(v), level + 1)
            end
            out.threshold = v
        elseif k == "bytes_per_sec" then
            if type(v) ~= "number" or v < 0 or v ~= v or v == math.huge then
                bad(name, "compaction.bytes_per_sec", "must be a number >= 0 (0: no limit), got " .. show(v),
                    level + 1)
            end
            out.bytes_per_sec = floor(v)
        elseif k == "window" then
            if type(v) ~= "table" or #v ~= 2 then
                bad(name, "compaction.window", 'must be two times { "HH:MM", "HH:MM" }, got ' .. show(v),
                    level + 1)
            end
            local lo, hi = hhmm(name, v[1], level + 1), hhmm(name, v[2], level + 1)
            if lo == hi then
                bad(name, "compaction.window", "starts and ends at the same time", level + 1)
            end
            out.window = { lo, hi, v[1], v[2] }
        else
            bad(name, "compaction", "has an unknown field " .. tostring(k)
                .. " (threshold, window and bytes_per_sec are known)", level + 1)
        end
    end
    return out
end

-- The policy fields of t (a spec, or the argument of set_policy),
-- checked: a table of the fields given. Raises on misuse at `level`.
function M.check(name, t, level)
    level = level + 1
    local out = {}
    for field, v in pairs(t) do
        if field == "ttl" then
            if v ~= false and (type(v) ~= "number" or v < 0 or v ~= v or v == math.huge) then
                bad(name, "ttl", "must be a number of seconds >= 0 (0: no default), got " .. show(v), level)
            end
            out.ttl = v
        elseif field == "max_keys" or field == "max_bytes" then
            count_field(name, field, v, level)
            out[field] = v
        elseif field == "on_full" then
            if v ~= "refuse" and v ~= "evict" then
                bad(name, "on_full", 'must be "refuse" or "evict", got ' .. show(v), level)
            end
            out.on_full = v
        elseif field == "compaction" then
            out.compaction = check_compaction(name, v, level)
        elseif field == "sync" then
            if not SYNC[v] then
                bad(name, "sync", 'must be "none", "interval" or "always", got ' .. show(v), level)
            end
            out.sync = v
        elseif field == "sync_interval_ms" then
            if type(v) ~= "number" or v < 1 or v > 60000 or v ~= floor(v) then
                bad(name, "sync_interval_ms", "must be a whole number from 1 to 60000, got " .. show(v), level)
            end
            out.sync_interval_ms = v
        elseif field == "sweep_every" then
            if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge then
                bad(name, "sweep_every", "must be a number of seconds > 0, got " .. show(v), level)
            end
            out.sweep_every = v
        end
    end
    return out
end

-- The store options the spec's policies set at open (the sync mode, so a
-- store that never syncs by interval starts no thread for it).
function M.store_opts(spec, sopts)
    if spec then
        sopts.sync = spec.sync or sopts.sync
        sopts.sync_interval_ms = spec.sync_interval_ms or sopts.sync_interval_ms
        if spec.sync then
            sopts.sync_mode = nil
        end
    end
    return sopts
end

-- The policy state of coll, made on first use.
local function state_of(coll, expiry)
    local P = coll._policy
    if P == nil then
        P = { expiry = expiry == true, name = coll.name, min_exp = 0, cursor = 0 }
        coll._policy = P
    end
    return P
end

-- Apply checked fields f (M.check) to coll. Returns true, or nil,
-- message, code if the engine refused a setting.
local function apply(coll, P, f, level)
    if f.ttl ~= nil then
        if not P.expiry then
            error("armdb: collection " .. coll.name .. ": policy ttl needs values that carry an expiry: give"
                .. " ttl in the spec when the collection is created", level + 1)
        end
        P.ttl = f.ttl ~= false and f.ttl > 0 and f.ttl or nil
    end
    for _, k in ipairs({ "max_keys", "max_bytes" }) do
        if f[k] ~= nil then
            P[k] = f[k] or nil
        end
    end
    if f.on_full ~= nil then
        P.on_full = f.on_full
    end
    if f.sweep_every ~= nil then
        P.sweep_every = f.sweep_every
    end
    if (P.max_keys or P.max_bytes or P.expiry) and getmetatable(coll._store) ~= guard.Guard then
        coll._store = guard.new(coll._store, coll, P)
    end
    if P.read_only then
        return true
    end
    return engine.apply(coll, P, f)
end

-- Called by db:collection for a collection it opened: its policies from
-- spec (nil on a reopen without one), expiry from the catalog.
function M.attach(coll, spec, expiry, db, level)
    local P = state_of(coll, expiry)
    P.read_only = db.read_only == true
    local f = spec and M.check(coll.name, spec, level + 1) or {}
    if f.ttl == false then
        f.ttl = nil
    end
    return apply(coll, P, f, level + 1)
end

-- coll:set_policy(t): change policies at run time; fields not given stay.
function M.set(coll, t, level)
    level = level + 1
    if type(t) ~= "table" then
        error("armdb: collection " .. coll.name .. ": set_policy needs a table, got " .. type(t), level)
    end
    for field in pairs(t) do
        if not M.FIELDS[field] then
            error("armdb: collection " .. coll.name .. ": unknown policy " .. tostring(field), level)
        end
    end
    local P = state_of(coll, false)
    return apply(coll, P, M.check(coll.name, t, level), level)
end

-- coll:policy(): the policies in force, as set_policy takes them.
function M.get(coll)
    local P = coll._policy or {}
    local c = P.compaction
    return {
        ttl = P.expiry and (P.ttl or 0) or nil,
        max_keys = P.max_keys, max_bytes = P.max_bytes,
        on_full = (P.max_keys or P.max_bytes) and (P.on_full or "refuse") or nil,
        compaction = c and { threshold = c.threshold, bytes_per_sec = c.bytes_per_sec,
            window = c.window and { c.window[3], c.window[4] } } or nil,
        sync = P.sync, sync_interval_ms = P.sync_interval_ms,
        sweep_every = P.expiry and (P.sweep_every or ttl.SWEEP_EVERY) or nil,
    }
end

-- The ttl of a write's options ({ ttl = seconds | false }): seconds, 0 for
-- "never expires", nil for the collection's default. Raises at `level` on
-- misuse.
function M.write_ttl(coll, opts, level)
    level = level + 1
    if type(opts) ~= "table" then
        error("armdb: collection " .. coll.name .. ": write options must be a table, got " .. type(opts), level)
    end
    for k in pairs(opts) do
        if k ~= "ttl" then
            error("armdb: collection " .. coll.name .. ": unknown write option " .. tostring(k)
                .. " (ttl is known)", level)
        end
    end
    local v = opts.ttl
    if v == nil then
        return nil
    end
    if not (coll._policy and coll._policy.expiry) then
        error("armdb: collection " .. coll.name .. ": a write's ttl needs values that carry an expiry: give"
            .. " ttl in the spec when the collection is created", level)
    end
    if v == false then
        return 0
    end
    if type(v) ~= "number" or v < 0 or v ~= v or v == math.huge then
        error("armdb: collection " .. coll.name .. ": write option ttl must be a number of seconds >= 0 or"
            .. " false, got " .. show(v), level)
    end
    return v
end

-- The tasks of the collections open in db (see the top of this file).
-- Call it again after opening more collections: task names are stable.
function M.tasks(db)
    local out = {}
    local names = {}
    for name in pairs(db._colls or {}) do
        names[#names + 1] = name
    end
    table.sort(names)
    for _, name in ipairs(names) do
        local coll = db._colls[name]
        local P = coll._policy
        if P and P.expiry and not db.read_only then
            out[#out + 1] = ttl.task(coll, P)
        end
        if P and P.compaction and P.compaction.window and not db.read_only then
            out[#out + 1] = engine.task(coll, P)
        end
    end
    return out
end

M.quota = quota
M.ttl = ttl
return M
