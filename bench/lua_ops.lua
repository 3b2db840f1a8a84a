-- lua_ops.lua: what a get and a put cost from Lua, against the same calls
-- from C, on the same machine in the same run (see bench/lua-vs-c.md).
--
--   luajit bench/lua_ops.lua [N] [REPS]     (defaults: 1000000 keys, 3 repetitions)
--
-- Needs `make build` (it links bench/c_ops.c against build/libarmdb.a and
-- loads the binding from lua/ of this checkout). Every row is measured REPS
-- times, C and Lua alternately (C first in odd repetitions, Lua first in
-- even ones), each time on a fresh store in a temporary directory that is
-- removed afterwards, after one untimed round on each side; the table shows
-- the medians. The rows:
--
--   store         armdb.store, 16-byte keys, 100-byte values (variable length)
--   bytes(16)/raw a collection with the same keys and values
--   u64/number    a collection with u64 keys and number values (fixed
--                 8-byte values, kept inline), against C on 8-byte
--                 big-endian keys and 8-byte values
--
-- The data (keys, values, read order) is made before the clock starts, by
-- the same generator and seed as bench/c_ops.c. The timed loops make the
-- call and add the value's length (or the number) to a sum; every value is
-- checked in an untimed pass between the puts and the timed gets.
local ffi = require("ffi")

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local root = script_dir .. "/.."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. script_dir .. "/?.lua;" .. package.path

local armdb = require("armdb")
local benchdata = require("benchdata")
local now_ns, median = benchdata.now_ns, benchdata.median


-- A failure of the run (not a bug): reported without a traceback.
local function die(msg)
    error({ msg = msg }, 0)
end

local function usage(msg)
    io.stderr:write("lua_ops: ", msg, "\nusage: luajit bench/lua_ops.lua [N] [REPS]\n")
    os.exit(2)
end

local N = tonumber(arg[1] or "1000000")
local REPS = tonumber(arg[2] or "3")
if not N or N < 1 or N > 50000000 or N ~= math.floor(N) then
    usage("N must be an integer 1..50000000, got " .. tostring(arg[1]))
end
if not REPS or REPS < 1 or REPS > 15 or REPS ~= math.floor(REPS) then
    usage("REPS must be an integer 1..15, got " .. tostring(arg[2]))
end

-- Output of the shell command cmd, and whether it exited 0 (popen's
-- close() does not say so in LuaJIT).
local function sh(cmd)
    local p = assert(io.popen(cmd .. "; echo \"lua_ops_rc=$?\""))
    local out = p:read("*a")
    p:close()
    local rc = tonumber(out:match("lua_ops_rc=(%d+)%s*$"))
    return out:gsub("lua_ops_rc=%d+%s*$", ""), rc == 0
end

local function quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- ---- the data: as make_data() of bench/c_ops.c ----

local SEED, KEY_LEN, VAL_LEN = benchdata.SEED, benchdata.KEY_LEN, benchdata.VAL_LEN
local U53 = 0x1FFFFFFFFFFFFFULL
local band = bit.band
local splitmix64 = benchdata.splitmix64

-- The data of mode "bytes": keys[i] (i = 1..n) is key i - 1 of the C
-- program; its value is kept in one buffer, as in C, and made into Lua
-- strings only for the put loop (so that a million value strings are not
-- alive, filling LuaJIT's string table, while the gets run).
local function make_bytes(n)
    local d = benchdata.bytes(n)
    local vbuf = d.vbuf
    -- The floor under a Lua get: ns to make each value, in the read order,
    -- into a new Lua string (what ffi.string does for every get), with no
    -- armdb call. LuaJIT interns every string: the cost grows with the
    -- number of live strings (here the n keys).
    function d.floor(order)
        collectgarbage()
        local sum = 0
        local t0 = now_ns()
        for j = 1, n do
            sum = sum + #ffi.string(vbuf + (order[j] - 1) * VAL_LEN, VAL_LEN)
        end
        local ns = (now_ns() - t0) / n
        assert(sum == n * VAL_LEN)
        return ns
    end
    return d
end

-- The data of mode "u64": key i - 1 of the C program as a number (below
-- 2^53), and the value (i - 1) + 0.5.
local function make_u64(n)
    local s = ffi.new("uint64_t[1]", SEED)
    local keys = {}
    for i = 0, n - 1 do
        keys[i + 1] = tonumber(band(splitmix64(s), U53))
    end
    local d = { keys = keys }
    function d.make_vals()
        local vals = {}
        for i = 1, n do
            vals[i] = i - 0.5
        end
        return vals
    end
    function d.ok(i, v)
        return v == i - 0.5
    end
    return d
end

local function make_order(n)
    return benchdata.order(n, 0)
end

-- ---- one repetition ----

local CACHE = math.max(N * 256, 64 * 2 ^ 20) -- as c_ops.c: every value read stays cached

local function time_puts(h, keys, vals)
    collectgarbage()
    local n = #keys
    local t0 = now_ns()
    for i = 1, n do
        local ok, err = h:put(keys[i], vals[i])
        if not ok then
            die("put: " .. tostring(err))
        end
    end
    return (now_ns() - t0) / n
end

local function check_all(h, keys, ok)
    for i = 1, #keys do
        local v, err = h:get(keys[i])
        if not ok(i, v) then
            die(string.format("key %d: wrong value read back (%s)", i - 1, tostring(err or v)))
        end
    end
end

local function time_gets_bytes(h, keys, order)
    collectgarbage()
    local n, sum = #keys, 0
    local t0 = now_ns()
    for j = 1, n do
        local v = h:get(keys[order[j]])
        if v == nil then
            die("get: key " .. (order[j] - 1) .. " is missing")
        end
        sum = sum + #v
    end
    local ns = (now_ns() - t0) / n
    if sum ~= n * VAL_LEN then
        die(string.format("gets returned %d bytes, expected %d", sum, n * VAL_LEN))
    end
    return ns
end

local function time_gets_number(h, keys, order)
    collectgarbage()
    local n, sum = #keys, 0
    local t0 = now_ns()
    for j = 1, n do
        local v = h:get(keys[order[j]])
        if v == nil then
            die("get: key " .. (order[j] - 1) .. " is missing")
        end
        sum = sum + v
    end
    local ns = (now_ns() - t0) / n
    if sum ~= n * n / 2 then -- sum of i + 0.5 for i = 0 .. n-1
        die(string.format("gets summed to %.1f, expected %.1f", sum, n * n / 2))
    end
    return ns
end

local STORE_OPTS = { sync = "none", cache_size = CACHE }

local function run_lua(row, dir, data)
    local handle, db, err
    if row.kind == "store" then
        handle, err = armdb.store(dir, { key_len = KEY_LEN, sync = "none", cache_size = CACHE })
    else
        db, err = armdb.open(dir, STORE_OPTS)
        if db then
            handle, err = db:collection("bench", row.spec)
        end
    end
    if not handle then
        die(row.name .. ": open: " .. tostring(err))
    end
    local put_ns = time_puts(handle, data.keys, data.make_vals())
    collectgarbage() -- the value strings of the puts are gone before the gets
    check_all(handle, data.keys, data.ok)
    local get_ns = (row.mode == "u64" and time_gets_number or time_gets_bytes)(handle, data.keys, data.order)
    local count = handle:count()
    if count ~= #data.keys then
        die(string.format("%s: count is %s, expected %d", row.name, tostring(count), #data.keys))
    end
    local backend = (handle.stats and handle:stats() or {}).io_backend
    if db then
        assert(db:close())
    else
        assert(handle:close())
    end
    return put_ns, get_ns, backend
end

local function run_c(exe, row, dir, warm_dir)
    local out, ok = sh(quote(exe) .. " " .. row.mode .. " " .. N .. " " .. quote(dir) .. " " .. quote(warm_dir))
    if not ok then
        die(row.name .. ": c_ops failed: " .. out)
    end
    local put_ns = tonumber(out:match('"put_ns":([%d.]+)'))
    local get_ns = tonumber(out:match('"get_ns":([%d.]+)'))
    if not put_ns or not get_ns then
        die(row.name .. ": c_ops printed no figures: " .. out)
    end
    return put_ns, get_ns, out:match('"io_backend":"([%w_]+)"')
end

-- ---- report ----


local function range(t)
    local lo, hi = math.huge, -math.huge
    for _, x in ipairs(t) do
        lo, hi = math.min(lo, x), math.max(hi, x)
    end
    return string.format("%.0f-%.0f", lo, hi)
end

local function machine()
    local f = io.open("/proc/cpuinfo")
    local text = f and f:read("*a") or ""
    if f then
        f:close()
    end
    local model = text:match("model name%s*:%s*([^\n]+)") or "unknown CPU"
    local cores = select(2, text:gsub("\nprocessor%s*:", "")) + (text:match("^processor%s*:") and 1 or 0)
    return model, cores
end

local function loadavg()
    local f = io.open("/proc/loadavg")
    if not f then
        return "?"
    end
    local l = f:read("*l")
    f:close()
    return l:match("^(%S+ %S+ %S+)")
end

local function main()
    local build = root .. "/build/libarmdb.a"
    local f = io.open(build)
    if not f then
        io.stderr:write("lua_ops: ", build, " is missing: run `make build` first\n")
        os.exit(1)
    end
    f:close()
    local tmp = sh("mktemp -d"):gsub("%s+$", "")
    if tmp == "" then
        io.stderr:write("lua_ops: mktemp -d failed\n")
        os.exit(1)
    end
    local ok, err = xpcall(function()
        local exe = tmp .. "/c_ops"
        local cc = string.format("cc -O2 -I%s %s %s -luring -lxxhash -lpthread -o %s 2>&1",
            quote(root .. "/src"), quote(root .. "/bench/c_ops.c"), quote(build), quote(exe))
        local out, built = sh(cc)
        if not built then
            die("building c_ops failed:\n" .. cc .. "\n" .. out)
        end

        local have_db = pcall(require, "armdb.db")
        local rows = {
            { name = "store", kind = "store", mode = "bytes" },
            { name = "bytes(16)/raw", kind = "coll", mode = "bytes", spec = { key = "bytes(16)", value = "raw" } },
            { name = "u64/number", kind = "coll", mode = "u64", spec = { key = "u64", value = "number" } },
        }
        io.stderr:write(string.format("lua_ops: making the data for %d keys\n", N))
        local data = {}
        do
            local order = make_order(N)
            data.bytes = make_bytes(N)
            data.bytes.order = order
            data.u64 = make_u64(N)
            data.u64.order = order
        end
        local load_before = loadavg()
        local backend
        local floor = {}
        for _, row in ipairs(rows) do
            row.c_put, row.c_get, row.l_put, row.l_get = {}, {}, {}, {}
        end
        -- An untimed round of every row first: c_ops does one in each run
        -- (see its main()), so both sides are timed in a process that has
        -- already grown (and freed) the memory of a store of this size.
        for _, row in ipairs(rows) do
            if row.kind == "store" or have_db then
                run_lua(row, tmp .. "/lua-warm", data[row.mode])
                os.execute("rm -rf " .. quote(tmp .. "/lua-warm"))
            end
        end
        io.stderr:write("lua_ops: warm-up round done\n")
        for rep = 1, REPS do
            for _, row in ipairs(rows) do
                if row.kind == "coll" and not have_db then
                    row.skipped = true
                else
                    local function c()
                        local dir, warm = tmp .. "/c", tmp .. "/c-warm"
                        local p, g, b = run_c(exe, row, dir, warm)
                        row.c_put[rep], row.c_get[rep] = p, g
                        backend = backend or b
                        os.execute("rm -rf " .. quote(dir) .. " " .. quote(warm))
                    end
                    local function l()
                        local dir = tmp .. "/lua"
                        local p, g = run_lua(row, dir, data[row.mode])
                        row.l_put[rep], row.l_get[rep] = p, g
                        if row.kind == "store" then
                            floor[rep] = data.bytes.floor(data.bytes.order)
                        end
                        os.execute("rm -rf " .. quote(dir))
                    end
                    if rep % 2 == 1 then
                        c()
                        l()
                    else
                        l()
                        c()
                    end
                    io.stderr:write(string.format(
                        "lua_ops: rep %d/%d %-14s put C %.0f Lua %.0f  get C %.0f Lua %.0f ns\n", rep, REPS, row.name,
                        row.c_put[rep], row.l_put[rep], row.c_get[rep], row.l_get[rep]))
                end
            end
        end

        local model, cores = machine()
        print(string.format("machine: %s, %d cores; %s; LuaJIT %s; io backend %s",
            model, cores, os.date("!%Y-%m-%d %H:%M UTC"), jit.version:match("[%d.]+%S*") or jit.version,
            backend or "?"))
        print(string.format("%d keys, %d repetitions, medians (min-max); load average %s before, %s after",
            N, REPS, load_before, loadavg()))
        print("")
        print("| operation | C ns/op | Lua ns/op | Lua / C |")
        print("|---|---:|---:|---:|")
        for _, row in ipairs(rows) do
            if row.skipped then
                print(string.format("| %s put, get | - | - | not run: %s |", row.name,
                    "the collections layer (armdb.db) did not load"))
            else
                for _, op in ipairs({ "put", "get" }) do
                    local c, l = row["c_" .. op], row["l_" .. op]
                    print(string.format("| %s %s | %.0f (%s) | %.0f (%s) | %.2fx |", row.name, op,
                        median(c), range(c), median(l), range(l), median(l) / median(c)))
                end
                if row.kind == "store" then
                    print(string.format("| %s | - | %.0f (%s) | - |",
                        "(floor: a new 100-byte Lua string per get, no armdb call)", median(floor), range(floor)))
                end
            end
        end
    end, function(e)
        if type(e) == "table" then
            return e.msg
        end
        return debug.traceback(tostring(e), 2)
    end)
    os.execute("rm -rf " .. quote(tmp))
    if not ok then
        io.stderr:write("lua_ops: ", tostring(err), "\n")
        os.exit(1)
    end
end

main()
