-- backup_nightly.lua: a nightly backup of a database (or a raw store), one
-- directory a day, the last few kept, each checked against its source.
--
--   luajit examples/backup_nightly.lua DATA_DIR BACKUP_ROOT [--keep N] [--date YYYY-MM-DD]
--   armdb run examples/backup_nightly.lua DATA_DIR BACKUP_ROOT [--keep N] [--date YYYY-MM-DD]
--
-- Today's backup is BACKUP_ROOT/YYYY-MM-DD (--date names another day):
--
--   - the first backup of all is full: a copy of every file at one GSN,
--     taken online while writers go on (armdb.jobs.backup);
--   - a later day starts from a copy of the newest earlier backup
--     (cp --reflink=auto, so it is cheap where the file system can share
--     blocks) and brings it up to date from the source's change feed: an
--     incremental backup reads only what was written since;
--   - a rerun the same day brings today's backup up to date again, so the
--     script is idempotent: run it twice, or after a crash, and it ends
--     with one complete backup for today;
--   - when the source no longer has the changes since the earlier backup
--     (compaction dropped a delete after it) or has a collection the backup
--     lacks, today's backup is taken in full instead.
--
-- Then jobs.check compares today's backup with the source (every key not
-- written since the backup's GSN must be equal in both), and only the
-- newest N day directories are kept (--keep, default 7). Exit status 0 if
-- the backup is complete and equal to its source, 1 otherwise, 2 on a
-- usage error. The source must not have another writer process: run the
-- script from that process (`armdb run` opens DATA_DIR for writing), or
-- stop it meanwhile.
local armdb_args = { ... }

-- Use an installed armdb if there is one, else the checkout around this file.
if not package.searchpath("armdb", package.path) then
    local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
    package.path = here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;" .. package.path
end
local armdb = require("armdb")
local jobs = require("armdb.jobs")

local format = string.format

local USAGE = "usage: backup_nightly.lua DATA_DIR BACKUP_ROOT [--keep N] [--date YYYY-MM-DD]"

-- A failure: raised as a table so that main() tells it from a bug.
local function fail(msg)
    error({ msg = msg }, 2)
end

local function usage(msg)
    error({ msg = msg .. "\n" .. USAGE, status = 2 }, 2)
end

local function help()
    error({ msg = USAGE, status = 0 }, 2)
end

local function check(what, ok, msg, code)
    if ok == nil then
        fail(format("%s: %s (code %s)", what, tostring(msg), tostring(code)))
    end
    return ok
end

local function quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function sh(cmd)
    local r = os.execute(cmd)
    return r == 0 or r == true
end

local function exists(path)
    return sh("test -e " .. quote(path))
end

local function bytes(n)
    if n >= 2 ^ 20 then
        return format("%.1f MiB", n / 2 ^ 20)
    elseif n >= 2 ^ 10 then
        return format("%.1f KiB", n / 2 ^ 10)
    end
    return format("%d B", n)
end

-- The day directories under root (YYYY-MM-DD, with a BACKUP manifest),
-- oldest first.
local function days(root)
    local out = {}
    local p = io.popen("ls -A " .. quote(root) .. " 2>/dev/null")
    for name in p:lines() do
        if name:match("^%d%d%d%d%-%d%d%-%d%d$") and exists(root .. "/" .. name .. "/BACKUP") then
            out[#out + 1] = name
        end
    end
    p:close()
    table.sort(out)
    return out
end

local function remove(path)
    if exists(path) and not sh("rm -rf " .. quote(path)) then
        fail("cannot remove " .. path)
    end
end

-- ---- arguments ----

-- Under `armdb run` the first argument is the opened database (or store).
local source, own_source
local args = armdb_args
if type(args[1]) ~= "table" then
    args = arg or {}
end

local function parse(a)
    local pos, keep, date = {}, 7, nil
    local i = 1
    while i <= #a do
        local v = a[i]
        if v == "--keep" then
            keep = tonumber(a[i + 1])
            if not keep or keep < 1 or keep ~= math.floor(keep) then
                usage("--keep takes a whole number >= 1, got " .. tostring(a[i + 1]))
            end
            i = i + 2
        elseif v == "--date" then
            date = a[i + 1]
            if type(date) ~= "string" or not date:match("^%d%d%d%d%-%d%d%-%d%d$") then
                usage("--date takes YYYY-MM-DD, got " .. tostring(date))
            end
            i = i + 2
        elseif v == "-h" or v == "--help" then
            help()
        else
            pos[#pos + 1] = v
            i = i + 1
        end
    end
    return pos, keep, date or os.date("%Y-%m-%d")
end

local function open_source(dir)
    if exists(dir .. "/CATALOG") then
        return check("open " .. dir, armdb.open(dir, { create = false }))
    elseif exists(dir .. "/ARMDB") then
        return check("open " .. dir, armdb.store(dir, { create = false }))
    end
    fail(dir .. " is neither a database (no CATALOG) nor a store (no ARMDB)")
end

-- ---- the backup ----

-- Bring dest up to date from source; nil, message, code if it cannot be.
local function incremental(dest)
    return jobs.backup(source, dest, { incremental = true })
end

-- Today's backup at dest: { how, report }.
local function take(root, today)
    local dest = root .. "/" .. today
    remove(dest .. ".seed") -- left by a run that stopped while copying
    remove(dest .. ".stale")
    local how
    if exists(dest .. "/BACKUP") then
        how = "rerun"
    else
        local earlier
        for _, d in ipairs(days(root)) do
            if d < today then
                earlier = d
            end
        end
        if earlier then
            -- Copied beside it, then renamed: a cut-short copy is never
            -- taken for a backup.
            if not sh("cp -a --reflink=auto " .. quote(root .. "/" .. earlier) .. " " .. quote(dest .. ".seed"))
                or not os.rename(dest .. ".seed", dest) then
                fail("cannot copy " .. root .. "/" .. earlier .. " to " .. dest)
            end
            how = "from " .. earlier
        end
    end
    if how then
        local r, msg, code = incremental(dest)
        if r then
            return how, r
        end
        if code ~= armdb.codes.COMPACTED and code ~= armdb.codes.INVAL then
            check("incremental backup into " .. dest, nil, msg, code)
        end
        print(format("  note      %s; taking a full backup", msg))
        -- Kept until the full one is complete.
        if not os.rename(dest, dest .. ".stale") then
            fail("cannot move " .. dest .. " aside")
        end
    end
    local r = check("full backup into " .. dest, jobs.backup(source, dest))
    remove(dest .. ".stale")
    return "full", r
end

local function run()
    local pos, keep, today = parse(args)
    if type(pos[1]) == "table" then
        source = table.remove(pos, 1)
    end
    local expect = source and 1 or 2
    if #pos ~= expect then
        usage(source and "expected BACKUP_ROOT" or "expected DATA_DIR and BACKUP_ROOT")
    end
    local root = pos[#pos]:gsub("/+$", "")
    if not source then
        source = open_source(pos[1])
        own_source = true
    end
    if not sh("mkdir -p " .. quote(root)) then
        fail("cannot create " .. root)
    end
    local dest = root .. "/" .. today
    print(format("backup_nightly: %s -> %s", source.dir or "source", dest))

    local how, r = take(root, today)
    if how == "full" then
        print(format("  backup    full, gsn %d, %s copied", r.gsn, bytes(r.bytes)))
    else
        print(format("  backup    incremental (%s), gsn %d, %d changes applied", how, r.gsn, r.changes))
    end
    local names = {}
    for name, gsn in pairs(r.collections or {}) do
        names[#names + 1] = format("%s@%d", name ~= "" and name or "store", gsn)
    end
    table.sort(names)
    print("  contents  " .. (#names > 0 and table.concat(names, " ") or "(none)"))

    -- The check: the backup against the live source.
    local c = check("check " .. dest, jobs.check(dest, source))
    if not c.ok then
        print(format("  check     FAILED: %d keys differ", c.mismatched))
        for _, s in ipairs(c.samples) do
            print("            " .. s)
        end
        fail("the backup at " .. dest .. " does not match its source")
    end
    print(format("  check     ok: %d keys equal, %d written since the backup", c.compared, c.changed_since))

    -- Keep the newest `keep` days (today is among them).
    local all = days(root)
    local removed = {}
    for i = 1, #all - keep do
        remove(root .. "/" .. all[i])
        removed[#removed + 1] = all[i]
    end
    local kept = days(root)
    print(format("  kept      %d of at most %d: %s", #kept, keep, table.concat(kept, " ")))
    if #removed > 0 then
        print("  removed   " .. table.concat(removed, " "))
    end
    if own_source then
        check("close", source:close())
    end
    print("ok")
    return 0
end

local ok, status = xpcall(run, function(e)
    if type(e) == "table" and e.msg then
        return e
    end
    return { msg = debug.traceback(tostring(e), 2) }
end)
if not ok then
    if status.status == 0 then
        print(status.msg)
    else
        io.stderr:write("backup_nightly: ", status.status == 2 and "" or "FAILED: ", status.msg, "\n")
    end
    if own_source and source then
        source:close()
    end
    status = status.status or 1
end
if type(armdb_args[1]) == "table" then
    return status -- armdb run: the exit status
end
os.exit(status)
