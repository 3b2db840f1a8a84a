-- quickstart.lua: armdb from Lua in one run. A database directory, a typed
-- collection of a million web sessions (uuid keys, a fixed-length C struct
-- as the value: armdb's fast path, kept inline in the index so that reads
-- never touch the disk), written, read back and checked field by field, a
-- tenth deleted, closed, reopened (the whole index is rebuilt: the time is
-- printed), checked again, and what the store says about itself.
--
--   luajit examples/quickstart.lua [DIR]     (default: ./demo-data; `make demo`)
--
-- A DIR left by an earlier run is started over. Any failure ends the run
-- with a message on stderr and exit status 1.
local ffi = require("ffi")

-- Use an installed armdb if there is one, else the checkout around this file.
if not package.searchpath("armdb", package.path) then
    local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
    package.path = here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;" .. package.path
end
local armdb = require("armdb")
io.stdout:setvbuf("line") -- results and progress (stderr) interleave in order

local N = 1000000            -- sessions written
local DELETE_EVERY = 10      -- every tenth session is deleted
local SAMPLE = 10000         -- sessions checked after the reopen
local NAME = "sessions"
local DIR = arg and arg[1] or "demo-data"

-- The value: a fixed-length struct. Declared by name, so the catalog can
-- name it ("struct session") and a later run can open the collection
-- without repeating the spec.
ffi.cdef([[
struct session {
    uint64_t user_id;
    uint32_t created;      /* unix seconds */
    uint32_t expires;      /* unix seconds */
    uint8_t flags;         /* bit 0: mfa, bit 1: remember me, bit 2: admin */
    char ip[16];           /* client address as text, zero-padded */
};
int isatty(int fd);
typedef struct { int64_t sec, nsec; } armdb_quickstart_ts;
int armdb_quickstart_clock_gettime(int clk, armdb_quickstart_ts *ts) __asm__("clock_gettime");
]])
local session_t = ffi.typeof("struct session")

local format, band, rshift = string.format, bit.band, bit.rshift

-- ---- small helpers ----

local ts = ffi.new("armdb_quickstart_ts")
local function now()
    ffi.C.armdb_quickstart_clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

-- A failure: raised as a table so that main() tells it from a bug.
local function fail(msg)
    error({ msg = msg }, 2)
end

-- check(what, call(...)): the call's first result, or a failure naming
-- what was done and what armdb said.
local function check(what, ok, msg, code)
    if ok == nil then
        fail(format("%s: %s (code %s)", what, tostring(msg), tostring(code)))
    end
    return ok
end

local function commas(n)
    local s = format("%d", n)
    local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
    return (out:gsub("^,", ""))
end

local function bytes(n)
    if n >= 2 ^ 30 then
        return format("%.2f GiB", n / 2 ^ 30)
    elseif n >= 2 ^ 20 then
        return format("%.1f MiB", n / 2 ^ 20)
    elseif n >= 2 ^ 10 then
        return format("%.1f KiB", n / 2 ^ 10)
    end
    return format("%d B", n)
end

local function quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- true if the shell command cmd exits 0 (os.execute answers a number in
-- LuaJIT, true in its 5.2-compatible builds).
local function sh_ok(cmd)
    local r = os.execute(cmd)
    return r == 0 or r == true
end

-- Progress on stderr: a bar redrawn in place on a terminal, else a line
-- at every tenth (so that logs stay short).
local tty = ffi.C.isatty(2) == 1
local function progress(label, total)
    local t0, step = now(), math.max(1, math.floor(total / (tty and 100 or 10)))
    local next_at = step
    return function(done)
        if done < next_at and done < total or next_at > total + step then
            return
        end
        next_at = done >= total and total + 2 * step or next_at + step
        local rate = done / math.max(now() - t0, 1e-9)
        if tty then
            local width = 30
            local fill = math.floor(width * done / total)
            io.stderr:write(format("\r  %-8s [%s%s] %3d%% %9s/s ", label, string.rep("#", fill),
                string.rep(".", width - fill), math.floor(100 * done / total), commas(rate)))
            if done >= total then
                io.stderr:write("\r", string.rep(" ", 70), "\r")
            end
        else
            io.stderr:write(format("  %s: %3d%% (%s of %s)\n", label, math.floor(100 * done / total + 0.5),
                commas(done), commas(total)))
        end
    end
end

-- ---- the sessions ----

-- splitmix64: the id of session i is 128 random-looking bits, always the
-- same for the same i (so every phase can recompute what it expects).
local function mix(x)
    x = x + 0x9e3779b97f4a7c15ULL
    x = bit.bxor(x, bit.rshift(x, 30)) * 0xbf58476d1ce4e5b9ULL
    x = bit.bxor(x, bit.rshift(x, 27)) * 0x94d049bb133111ebULL
    return bit.bxor(x, bit.rshift(x, 31))
end

-- The uuid of session i: the high 64 bits are mix(i), distinct for every
-- i (splitmix64 is a bijection), so no two sessions share an id.
local function session_id(i)
    local x, y = mix(0ULL + i), mix(0x5e55000000000000ULL + i)
    return format("%08x-%04x-%04x-%04x-%04x%08x", tonumber(rshift(x, 32)), tonumber(band(rshift(x, 16), 0xffff)),
        tonumber(band(x, 0xffff)), tonumber(rshift(y, 48)), tonumber(band(rshift(y, 32), 0xffff)),
        tonumber(band(y, 0xffffffff)))
end

local EPOCH = 1764547200 -- 2025-12-01 00:00 UTC

-- The fields of session i.
local function user_of(i)
    return 100000 + (i * 7919) % 250000
end
local function created_of(i)
    return EPOCH + i
end
local function expires_of(i)
    return EPOCH + i + 3600 * (1 + i % 72)
end
local function flags_of(i)
    return i % 8
end
local function ip_of(i)
    return format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
end

local function fill(rec, i)
    rec.user_id = user_of(i)
    rec.created = created_of(i)
    rec.expires = expires_of(i)
    rec.flags = flags_of(i)
    rec.ip = ip_of(i)
    return rec
end

-- nil if v holds session i, else what differs.
local function wrong(v, i)
    if v == nil then
        return "is missing"
    elseif not ffi.istype(session_t, v) then
        return "is a " .. type(v) .. ", not a struct session"
    elseif v.user_id ~= user_of(i) then
        return "has user_id " .. tostring(v.user_id) .. ", expected " .. user_of(i)
    elseif v.created ~= created_of(i) then
        return "has created " .. v.created .. ", expected " .. created_of(i)
    elseif v.expires ~= expires_of(i) then
        return "has expires " .. v.expires .. ", expected " .. expires_of(i)
    elseif v.flags ~= flags_of(i) then
        return "has flags " .. v.flags .. ", expected " .. flags_of(i)
    elseif ffi.string(v.ip) ~= ip_of(i) then
        return "has ip " .. ffi.string(v.ip) .. ", expected " .. ip_of(i)
    end
    return nil
end

-- ---- the run ----

local phases = {}
local function phase(name, count, t0, note)
    phases[#phases + 1] = { name = name, count = count, secs = now() - t0, note = note }
    return phases[#phases]
end

-- Entries of directory dir (nil if it does not exist).
local function list_dir(dir)
    local p = io.popen("ls -A " .. quote(dir) .. " 2>/dev/null")
    local names = {}
    for line in p:lines() do
        names[#names + 1] = line
    end
    local ok = p:close()
    if not ok then
        return nil
    end
    return names
end

-- If DIR holds the sessions of an earlier run, remove them (and only what
-- a run of this demo makes); refuse to touch a directory holding anything
-- else.
local function start_over()
    if sh_ok("test -e " .. quote(DIR) .. " && test ! -d " .. quote(DIR)) then
        fail(DIR .. " exists and is not a directory")
    end
    local names = list_dir(DIR)
    if names == nil or #names == 0 then
        return
    end
    local mine = { CATALOG = true, [NAME] = true }
    local other = {}
    for _, n in ipairs(names) do
        if not mine[n] then
            other[#other + 1] = n
        end
    end
    local db = armdb.open(DIR, { create = false })
    local colls = db and db:collections() or {}
    for _, n in ipairs(colls) do
        if n ~= NAME then
            other[#other + 1] = "collection " .. n
        end
    end
    if #other > 0 then
        if db then
            db:close()
        end
        fail(DIR .. " holds other data (" .. table.concat(other, ", ")
            .. "); give the demo a new or empty directory")
    end
    if db then
        check("close " .. DIR, db:close())
    end
    local had = db and "an empty database" or "files"
    if sh_ok("test -e " .. quote(DIR .. "/" .. NAME .. "/ARMDB")) then
        -- Opened as a raw store (whatever its codecs were), which takes its
        -- writer lock: a store in use by another process is reported here,
        -- not removed under it.
        local old = check("open the earlier " .. NAME, armdb.store(DIR .. "/" .. NAME, { create = false }))
        had = "a " .. NAME .. " collection of " .. commas(old:count()) .. " keys"
        check("close the earlier " .. NAME, old:close())
    end
    print(format("%s holds %s from an earlier run: starting over", DIR, had))
    if not sh_ok("rm -rf " .. quote(DIR .. "/" .. NAME) .. " " .. quote(DIR .. "/CATALOG")) then
        fail("cannot remove the earlier run's files in " .. DIR)
    end
end

-- Bytes allocated under dir, and the size of its hint files (du, find).
local function disk_bytes(dir)
    local p = io.popen("du -sB1 " .. quote(dir) .. " 2>/dev/null")
    local total = tonumber(p:read("*a"):match("^(%d+)"))
    p:close()
    p = io.popen("find " .. quote(dir) .. " -name '*.hint' -printf '%s\\n' 2>/dev/null")
    local hints = 0
    for line in p:lines() do
        hints = hints + (tonumber(line) or 0)
    end
    p:close()
    return total, hints
end

local function run()
    print(format("armdb quickstart: %s sessions in %s (library %s)", commas(N), DIR, armdb.library))
    start_over()

    -- The database, and a collection: uuid keys, struct session values.
    local t0 = now()
    local db = check("open " .. DIR, armdb.open(DIR))
    local sessions = check("collection " .. NAME, db:collection(NAME, { key = "uuid", value = session_t }))
    phase("create", 1, t0, "database " .. DIR .. ", collection " .. NAME)

    t0 = now()
    local ids = {}
    for i = 1, N do
        ids[i] = session_id(i)
    end
    phase("make ids", N, t0, "uuid text of every session, outside the timings below")

    -- Write: one struct, refilled for each session.
    local rec = session_t()
    local show = progress("write", N)
    t0 = now()
    for i = 1, N do
        local ok, msg, code = sessions:put(ids[i], fill(rec, i))
        if not ok then
            check("put " .. ids[i], ok, msg, code)
        end
        if i % 1000 == 0 then
            show(i)
        end
    end
    check("sync", db:sync())
    show(N)
    phase("write", N, t0, "put every session, then sync")

    -- Read back and check every field.
    show = progress("read", N)
    t0 = now()
    for i = 1, N do
        local v, msg, code = sessions:get(ids[i])
        if v == nil and msg then
            check("get " .. ids[i], nil, msg, code)
        end
        local why = wrong(v, i)
        if why then
            fail(format("session %d (%s) %s", i, ids[i], why))
        end
        if i % 1000 == 0 then
            show(i)
        end
    end
    show(N)
    phase("read", N, t0, "get every session, check every field")

    -- Delete a tenth.
    local deleted = 0
    t0 = now()
    for i = DELETE_EVERY, N, DELETE_EVERY do
        local ok, msg, code = sessions:delete(ids[i])
        if ok == nil then
            check("delete " .. ids[i], ok, msg, code)
        elseif ok ~= true then
            fail(format("delete of session %d (%s) found no key", i, ids[i]))
        end
        deleted = deleted + 1
    end
    check("sync", db:sync())
    phase("delete", deleted, t0, "every " .. DELETE_EVERY .. "th session, then sync")

    local expect = N - deleted
    if sessions:count() ~= expect then
        fail(format("count is %s after the deletes, expected %s", commas(sessions:count()), commas(expect)))
    end
    local before = check("stats", sessions:stats())

    t0 = now()
    check("close", db:close())
    phase("close", 1, t0, "write buffers out, hint files")

    -- Reopen: the index is rebuilt from the files. No spec this time: the
    -- catalog has it.
    t0 = now()
    db = check("reopen " .. DIR, armdb.open(DIR))
    sessions = check("reopen collection " .. NAME, db:collection(NAME))
    local recovery = phase("reopen", 1, t0, "recovery: the index rebuilt from the files")
    local st = check("stats", sessions:stats())
    recovery.note = format("recovery: %d hint files loaded, %d data files scanned",
        st.hints_loaded, st.files_scanned)
    print(format("reopened in %.0f ms: %s keys", recovery.secs * 1000, commas(sessions:count())))

    -- Count and a sample (deleted ones must stay deleted).
    t0 = now()
    if sessions:count() ~= expect then
        fail(format("count is %s after the reopen, expected %s", commas(sessions:count()), commas(expect)))
    end
    local step = math.max(1, math.floor(N / SAMPLE))
    local checked = 0
    for i = 1, N, step do
        local v, msg, code = sessions:get(ids[i])
        if v == nil and msg then
            check("get " .. ids[i], nil, msg, code)
        end
        if i % DELETE_EVERY == 0 then
            if v ~= nil then
                fail(format("session %d (%s) was deleted, and is back after the reopen", i, ids[i]))
            end
        else
            local why = wrong(v, i)
            if why then
                fail(format("session %d (%s) after the reopen %s", i, ids[i], why))
            end
        end
        checked = checked + 1
    end
    phase("verify", checked, t0, "count, and a sample of sessions (deleted ones too)")
    check("close", db:close())

    -- The report.
    local disk, hints = disk_bytes(DIR)
    print("")
    print(format("%-10s %10s %10s %14s  %s", "phase", "count", "time", "rate", "what"))
    for _, p in ipairs(phases) do
        local rate = p.count > 1 and format("%s/s", commas(p.count / p.secs)) or ""
        print(format("%-10s %10s %8.0f ms %14s  %s", p.name, commas(p.count), p.secs * 1000, rate, p.note))
    end
    print("")
    local rows = {
        { "keys", commas(st.keys) .. " (" .. commas(deleted) .. " deleted)" },
        { "value", format("struct session, %d bytes, kept inline", ffi.sizeof(session_t)) },
        { "shards", st.shards },
        { "data files", st.files },
        { "bytes on disk", format("%s: entries %s live + %s dead, hint files %s", disk and bytes(disk) or "?",
            bytes(before.live_bytes), bytes(before.dead_bytes), bytes(hints)) },
        { "index", format("%s, %d bytes per key", bytes(st.index_bytes), st.index_bytes_per_key) },
        { "write backend", format("%s, %s", st.io_backend, st.direct_io and "O_DIRECT" or "buffered") },
    }
    for _, r in ipairs(rows) do
        print(format("%-14s %s", r[1], tostring(r[2])))
    end
    print("")
    print("ok")
end

local ok, err = xpcall(run, function(e)
    if type(e) == "table" and e.msg then
        return e.msg
    end
    return debug.traceback(tostring(e), 2)
end)
if not ok then
    io.stderr:write("quickstart: FAILED: ", tostring(err), "\n")
    os.exit(1)
end
