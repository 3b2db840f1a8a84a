-- Model-based test of armdb.open: random operations (put, get, delete,
-- cas, update, get_many, count, pairs) on three collections of different
-- codecs, checked step by step against a plain Lua table, with the db
-- closed and reopened now and then, and the process restarted: a child
-- luajit replays the same seed, checks every pair on disk, runs the next
-- operations itself, and the parent carries on from its writes.
--
-- Run by busted with a few fixed seeds and one from the clock; a failure
-- names its seed, and ARMDB_SEED=<n> runs that seed alone. This file is also
-- the child: `luajit spec/05-model_spec.lua child SEED FROM TO DIR`.
local ffi = require("ffi")
local bit = require("bit")

local CHILD = not describe and arg and arg[1] == "child"
if CHILD then
    local root = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.." -- this file is in spec/
    package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
end

local armdb = require("armdb")

ffi.cdef([[
struct armdb_spec05_point { double x; int32_t y; };
]])

local STEPS = 700         -- operations per seed
local REOPEN_PER = 150    -- about one reopen per this many operations
local CHILD_AT = { 250, 500 } -- steps at which a child process takes over
local CHILD_STEPS = 60    -- operations the child runs itself

-- ---- a deterministic generator (xorshift32), the same in every process ----

local function rng(seed)
    local x = bit.tobit(seed * 2654435761 % 4294967296)
    if x == 0 then
        x = 1
    end
    return function(n) -- 1..n
        x = bit.bxor(x, bit.lshift(x, 13))
        x = bit.bxor(x, bit.rshift(x, 17))
        x = bit.bxor(x, bit.lshift(x, 5))
        return (x % n) + 1
    end
end

-- ---- the collections: codecs, key pools, values, equality ----

local function rand_string(r, alphabet, len)
    local t = {}
    for i = 1, len do
        local j = r(#alphabet)
        t[i] = alphabet:sub(j, j)
    end
    return table.concat(t)
end

local KINDS = {
    {
        name = "users",
        spec = { key = "u64", value = "json" },
        keys = function(r)
            local ks = {}
            for i = 1, 40 do
                ks[i] = r(3) == 1 and 2 ^ 53 - r(1000) or r(1000) - 1
            end
            return ks
        end,
        canon = function(k) return k end,
        value = function(r)
            local c = r(4)
            if c == 1 then
                return r(2000000000) - 1000000000
            elseif c == 2 then
                return rand_string(r, 'ab"\\/\n z', r(12) - 1)
            elseif c == 3 then
                return { r(100), rand_string(r, "xyz", r(5)), r(2) == 1 }
            end
            return { name = rand_string(r, "abc", r(6)) }
        end,
        same = function(a, b)
            if type(a) ~= "table" or type(b) ~= "table" then
                return a == b
            end
            for k, v in pairs(a) do
                if b[k] ~= v then
                    return false
                end
            end
            for k in pairs(b) do
                if a[k] == nil then
                    return false
                end
            end
            return true
        end,
    },
    {
        name = "names",
        spec = { key = "string(24)", value = "raw" },
        keys = function(r)
            local ks = {}
            for i = 1, 40 do
                local k = rand_string(r, "ab\0z", r(25) - 1)
                if k:sub(-1) == "\0" then
                    k = k:sub(1, -2) .. "q"
                end
                ks[i] = k
            end
            return ks
        end,
        canon = function(k) return k end,
        value = function(r)
            local n = r(10) == 1 and 3000 + r(5000) or r(60) - 1
            return rand_string(r, "abcdefgh\0\255", n)
        end,
        same = function(a, b) return a == b end,
    },
    {
        name = "points",
        spec = { key = "uuid", value = "struct armdb_spec05_point" },
        keys = function(r)
            local ks = {}
            for i = 1, 40 do
                local u = string.format("%04x%04x-%04x-%04x-%04x-%04x%04x%04x", r(65536) - 1, r(65536) - 1,
                    r(65536) - 1, r(65536) - 1, r(65536) - 1, r(65536) - 1, r(65536) - 1, r(65536) - 1)
                ks[i] = r(2) == 1 and u:upper() or u
            end
            return ks
        end,
        canon = function(k) return k:lower() end,
        value = function(r)
            return { x = (r(2001) - 1001) / 8, y = r(100000) - 50000 }
        end,
        -- a: the model's { x, y }; b: a model value or a decoded cdata
        same = function(a, b)
            return a.x == b.x and a.y == b.y
        end,
        to_db = function(v) return { v.x, v.y } end,
    },
}

-- ---- the run ----

local function show(v)
    if type(v) == "table" then
        local parts = {}
        for k, x in pairs(v) do
            parts[#parts + 1] = tostring(k) .. "=" .. show(x)
        end
        table.sort(parts)
        return "{" .. table.concat(parts, ",") .. "}"
    elseif type(v) == "string" then
        return string.format("%q", v)
    elseif type(v) == "cdata" then
        return "{x=" .. tostring(v.x) .. ",y=" .. tostring(v.y) .. "}"
    end
    return tostring(v)
end

-- state: { seed, r, step, model = { [coll] = { [canon key] = value } },
--          pools = { [coll] = keys }, db, colls, dir }
local function new_state(seed, dir)
    local r = rng(seed)
    local st = { seed = seed, r = r, step = 0, model = {}, pools = {}, dir = dir }
    for i, kind in ipairs(KINDS) do
        st.model[i] = {}
        st.pools[i] = kind.keys(r)
    end
    return st
end

local function fail(st, what)
    error(string.format("seed %d, step %d: %s", st.seed, st.step, what), 0)
end

local function open_db(st, first)
    local db, msg = armdb.open(st.dir, { sync = "none", shards = 2 })
    if not db then
        fail(st, "open: " .. tostring(msg))
    end
    st.db, st.colls = db, {}
    for i, kind in ipairs(KINDS) do
        -- with the spec the first time, from the catalog afterwards
        local c, cmsg = db:collection(kind.name, first and kind.spec or nil)
        if not c then
            fail(st, "collection " .. kind.name .. ": " .. tostring(cmsg))
        end
        st.colls[i] = c
    end
end

local function close_db(st)
    if st.db then
        local ok, msg = st.db:close()
        if not ok then
            fail(st, "close: " .. tostring(msg))
        end
        st.db, st.colls = nil, nil
    end
end

local function to_db(kind, v)
    if v ~= nil and kind.to_db then
        return kind.to_db(v)
    end
    return v
end

local function check_get(st, kind, what, got, want)
    if want == nil then
        if got ~= nil then
            fail(st, what .. ": expected nil, got " .. show(got))
        end
    elseif got == nil or not kind.same(want, got) then
        fail(st, what .. ": expected " .. show(want) .. ", got " .. show(got))
    end
end

-- Every pair of every collection, against the model.
local function verify(st)
    for i, kind in ipairs(KINDS) do
        local c, m = st.colls[i], st.model[i]
        local n = 0
        for k in pairs(m) do
            n = n + 1
            check_get(st, kind, kind.name .. ":get(" .. show(k) .. ")", c:get(k), m[k])
        end
        if c:count() ~= n then
            fail(st, kind.name .. ":count() is " .. c:count() .. ", the model has " .. n)
        end
        local seen = 0
        for k, v in c:pairs() do
            seen = seen + 1
            check_get(st, kind, kind.name .. ":pairs() at " .. show(k), v, m[kind.canon(k)])
        end
        if seen ~= n then
            fail(st, kind.name .. ":pairs() gave " .. seen .. " pairs, the model has " .. n)
        end
    end
end

-- One random operation. Every random choice is drawn before anything is
-- done, so that the model alone (live == false) follows the same path.
local function step(st, live)
    local r = st.r
    st.step = st.step + 1
    local ci = r(#KINDS)
    local kind, m, pool = KINDS[ci], st.model[ci], st.pools[ci]
    local c = live and st.colls[ci]
    local k = pool[r(#pool)]
    local ck = kind.canon(k)
    local cur = m[ck]
    local op = r(100)
    local name = kind.name
    if op <= 30 then -- put
        local v = kind.value(r)
        if live then
            local ok, msg = c:put(k, to_db(kind, v))
            if ok ~= true then
                fail(st, name .. ":put: " .. tostring(msg))
            end
        end
        m[ck] = v
    elseif op <= 45 then -- get
        if live then
            check_get(st, kind, name .. ":get(" .. show(k) .. ")", c:get(k), cur)
        end
    elseif op <= 55 then -- delete
        if live then
            local ok = c:delete(k)
            if ok ~= (cur ~= nil) then
                fail(st, name .. ":delete(" .. show(k) .. ") gave " .. tostring(ok))
            end
        end
        m[ck] = nil
    elseif op <= 70 then -- cas
        local how, other = r(3), kind.value(r)
        local new = kind.value(r)
        local old = other -- how == 3: most likely a wrong value
        if how == 1 then
            old = nil -- "must be absent"
        elseif how == 2 then
            old = cur -- the right value (nil if absent)
        end
        local want
        if old == nil then
            want = cur == nil
        else
            want = cur ~= nil and kind.same(old, cur)
        end
        if live then
            local ok, msg = c:cas(k, to_db(kind, old), to_db(kind, new))
            if ok ~= want then
                fail(st, name .. ":cas(" .. show(k) .. ", " .. show(old) .. ") gave " .. tostring(ok)
                    .. " (" .. tostring(msg) .. "), expected " .. tostring(want))
            end
        end
        if want then
            m[ck] = new
        end
    elseif op <= 82 then -- update
        local new = r(4) > 1 and kind.value(r) or nil
        if live then
            local calls = 0
            local ok, msg = c:update(k, function(v)
                calls = calls + 1
                check_get(st, kind, name .. ":update(" .. show(k) .. ") fn argument", v, cur)
                return to_db(kind, new)
            end)
            if ok ~= (new ~= nil) or calls ~= 1 then
                fail(st, name .. ":update gave " .. tostring(ok) .. " (" .. tostring(msg) .. ") after "
                    .. calls .. " calls")
            end
        end
        if new ~= nil then
            m[ck] = new
        end
    elseif op <= 90 then -- get_many
        local keys = {}
        for i = 1, r(8) do
            keys[i] = pool[r(#pool)]
        end
        if live then
            local got, msg = c:get_many(keys)
            if not got or got.n ~= #keys then
                fail(st, name .. ":get_many: " .. tostring(msg))
            end
            for i, key in ipairs(keys) do
                check_get(st, kind, name .. ":get_many[" .. i .. "]", got[i], m[kind.canon(key)])
            end
        end
    elseif op <= 96 then -- count
        if live then
            local n = 0
            for _ in pairs(m) do
                n = n + 1
            end
            if c:count() ~= n then
                fail(st, name .. ":count() is " .. c:count() .. ", the model has " .. n)
            end
        end
    elseif op <= 99 then -- pairs, the whole database
        if live then
            verify(st)
        end
    else
        if live then
            close_db(st)
            open_db(st, false)
        end
    end
    if r(REOPEN_PER) == 1 and live then
        close_db(st)
        open_db(st, false)
    end
end

-- The child: replay the model to `from`, check the database, run the
-- operations from+1..to on it, and close it.
local function child(seed, from, to, dir)
    local st = new_state(seed, dir)
    for _ = 1, from do
        step(st, false)
    end
    open_db(st, false)
    verify(st)
    for _ = from + 1, to do
        step(st, true)
    end
    verify(st)
    close_db(st)
end

if CHILD then
    local ok, err = pcall(child, tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4]), arg[5])
    if not ok then
        io.stderr:write("child: ", tostring(err), "\n")
        os.exit(1)
    end
    os.exit(0)
end

-- ---- under busted ----

local helpers = require("helpers")
local defer, tmpdir = helpers.defer, helpers.tmpdir

local SELF = debug.getinfo(1, "S").source:sub(2)

local function run_child(st, to)
    local out = st.dir .. ".child"
    local cmd = string.format("luajit '%s' child %d %d %d '%s' >'%s' 2>&1", SELF, st.seed, st.step, to, st.dir, out)
    local rc = os.execute(cmd)
    local f = io.open(out, "rb")
    local text = f and f:read("*a") or ""
    if f then
        f:close()
    end
    os.remove(out)
    if rc ~= 0 and rc ~= true then
        fail(st, "child process failed (" .. tostring(rc) .. "): " .. text)
    end
end

local function run(seed)
    local top = tmpdir()
    local st = new_state(seed, top .. "/db")
    defer(function() if st.db then st.db:close() end end)
    open_db(st, true)
    local next_child = 1
    while st.step < STEPS do
        if st.step == CHILD_AT[next_child] then
            next_child = next_child + 1
            close_db(st)
            local to = st.step + CHILD_STEPS
            run_child(st, to) -- checks everything so far, then writes more
            while st.step < to do
                step(st, false) -- follow its writes in the model
            end
            open_db(st, false)
            verify(st)
        else
            step(st, true)
        end
    end
    verify(st)
    close_db(st)
end

describe("collections against a table model", function()
    local seeds = { 1, 2, 3, os.time() % 100000 }
    local env = os.getenv("ARMDB_SEED")
    if env and env ~= "" then
        seeds = { (assert(tonumber(env), "ARMDB_SEED must be a number")) }
    end
    for _, seed in ipairs(seeds) do
        it("agrees with the model for seed " .. seed .. " (replay: ARMDB_SEED=" .. seed .. ")", function()
            run(seed)
        end)
    end

    it("catches a database that disagrees with the model", function()
        -- the checker itself: a value changed behind the model's back is found
        local top = tmpdir()
        local st = new_state(7, top .. "/db")
        open_db(st, true)
        defer(function() close_db(st) end)
        for _ = 1, 50 do
            step(st, true)
        end
        assert(st.colls[2]:put(st.pools[2][1], "tampered"))
        local ok, err = pcall(verify, st)
        assert.is_false(ok)
        assert.matches("^seed 7, step 50: names:", err)
    end)
end)
