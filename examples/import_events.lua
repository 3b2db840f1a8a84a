-- import_events.lua: web events from a JSON-lines file into a typed
-- collection, the bad lines reported with their line numbers, then a few
-- questions asked of what was imported.
--
--   luajit examples/import_events.lua [DATA_DIR] [FILE]
--   armdb run examples/import_events.lua DATA_DIR [FILE]
--
-- DATA_DIR (default ./events-data) is a database, created if absent; the
-- events go into its collection "events": u64 keys (the event id), json
-- values, ordered, so that a range of ids is a stretch of time. FILE
-- (default: data/events.jsonl beside this script, made by
-- data/make_events.lua) has one {"key":ID,"value":{...}} per line, as
-- `armdb export` writes them. Each line is checked against the collection
-- before anything is written; a bad one (broken JSON, no key, a key that is
-- not a u64, no value) is reported as FILE:LINE: REASON and the others are
-- imported. An import is idempotent by key, so running this again leaves
-- the same collection.
--
-- Exit status 0 when the import ran to the end (whatever it rejected) and
-- the collection holds what it should, 1 otherwise.
local armdb_args = { ... }

-- Use an installed armdb if there is one, else the checkout around this file.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
if not package.searchpath("armdb", package.path) then
    package.path = here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;" .. package.path
end
local armdb = require("armdb")
local jobs = require("armdb.jobs")

local format = string.format

local function fail(msg)
    error({ msg = msg }, 2)
end

local function check(what, ok, msg, code)
    if ok == nil then
        fail(format("%s: %s (code %s)", what, tostring(msg), tostring(code)))
    end
    return ok
end

-- The n largest of counts (a table name -> count), as "name n" strings.
local function top(counts, n, fmt)
    local list = {}
    for k, v in pairs(counts) do
        list[#list + 1] = { k, v }
    end
    table.sort(list, function(a, b)
        return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1])
    end)
    local out = {}
    for i = 1, math.min(n, #list) do
        out[i] = format(fmt or "%s %d", list[i][1], list[i][2])
    end
    return table.concat(out, ", ")
end

local function run()
    local db, own, file
    if type(armdb_args[1]) == "table" then -- armdb run: the database is open
        db, file = armdb_args[1], armdb_args[2]
    else
        local dir = arg and arg[1] or "events-data"
        file = arg and arg[2]
        db = check("open " .. dir, armdb.open(dir))
        own = true
    end
    file = file or (here .. "/data/events.jsonl")
    local events = check("collection events",
        db:collection("events", { key = "u64", value = "json", ordered = true }))
    print(format("import_events: %s -> %s/events", file, db.dir))

    -- The import: good lines go in, bad ones are reported and skipped.
    local r, msg, code, partial = jobs.import(events, file, { name = file:match("[^/]*$") })
    if not r then
        if partial then
            print(format("  stopped after %d lines", partial.lines))
        end
        check("import " .. file, nil, msg, code)
    end
    print(format("  lines     %d read, %d imported, %d rejected", r.lines, r.imported, r.rejected))
    for _, rej in ipairs(r.rejects) do
        print(format("  rejected  %s:%d: %s", r.name, rej.line, rej.reason))
    end
    if r.stopped then
        fail("import stopped early: too many rejects")
    end
    local n = events:count()
    print(format("  stored    %d events", n))
    if r.imported > 0 and n == 0 then
        fail("the collection is empty after importing " .. r.imported .. " lines")
    end

    -- The questions: one pass over the collection.
    local by_type, by_path, revenue, users, buyers, first, last = {}, {}, {}, {}, {}, nil, nil
    for id, e in events:pairs() do
        first = first or id
        last = id
        by_type[e.type] = (by_type[e.type] or 0) + 1
        if e.type == "page_view" then
            by_path[e.path] = (by_path[e.path] or 0) + 1
        elseif e.type == "purchase" then
            revenue[e.currency] = (revenue[e.currency] or 0) + e.amount
            buyers[e.user] = true
        end
        users[e.user] = true
    end
    local function size(t)
        local c = 0
        for _ in pairs(t) do
            c = c + 1
        end
        return c
    end
    print(format("  ids       %s to %s (key order), %d users, %d of them bought", tostring(first),
        tostring(last), size(users), size(buyers)))
    print("  by type   " .. top(by_type, 10))
    print("  top pages " .. top(by_path, 5))
    print("  revenue   " .. top(revenue, 3, "%s %.2f"))

    -- An ordered collection answers a range of keys: the last 5 events.
    local recent = {}
    for id, e in events:range(nil, nil, { reverse = true, limit = 5 }) do
        recent[#recent + 1] = format("%s %s %s", tostring(id), e.ts, e.type)
    end
    print("  latest    " .. table.concat(recent, "; "))

    if own then
        check("close", db:close())
    end
    print("ok")
    return 0
end

local ok, err = xpcall(run, function(e)
    if type(e) == "table" and e.msg then
        return e.msg
    end
    return debug.traceback(tostring(e), 2)
end)
local status = 0
if not ok then
    io.stderr:write("import_events: FAILED: ", tostring(err), "\n")
    status = 1
end
if type(armdb_args[1]) == "table" then
    return status -- armdb run: the exit status
end
os.exit(status)
