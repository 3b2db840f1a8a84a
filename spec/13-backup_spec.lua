-- Backups: full and incremental, from Lua and from the command, restored
-- and checked against their source; a backup and an incremental update
-- killed midway (SIGKILL) and run again; the refusals.
local armdb = require("armdb")
local jobs = require("armdb.jobs")

local helpers = require("helpers")
local q, read_file, write_file, exists = helpers.q, helpers.read_file, helpers.write_file, helpers.exists
local tmpdir, defer = helpers.tmpdir, helpers.defer
local LUA_PATH, sh, run = helpers.LUA_PATH, helpers.sh, helpers.run_armdb

local codes = armdb.codes

-- A database with users (u64 -> json) and events (ordered u64 -> raw).
local function make_db(dir, n, opts)
    local o = { sync = "none", max_file_size = 262144 }
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    local db = assert(armdb.open(dir, o))
    local users = assert(db:collection("users", { key = "u64", value = "json" }))
    local events = assert(db:collection("events", { key = "u64", value = "raw", ordered = true }))
    for i = 1, n do
        assert(users:put(i, { name = "u" .. i, n = i }))
        assert(events:put(i, string.rep("e", i % 50)))
    end
    return db, users, events
end

-- Every pair of every collection of the database at dir, as text.
local function contents(dir, opts)
    local db = assert(armdb.open(dir, opts or { read_only = true }))
    local t = {}
    for _, name in ipairs(assert(db:collections())) do
        local s = require("armdb.store").open(dir .. "/" .. name, { read_only = true,
            encryption_key = opts and opts.encryption_key })
        for k, v in s:pairs() do
            t[name .. ":" .. k] = v
        end
        s:close()
    end
    db:close()
    return t
end

describe("jobs.backup()", function()
    it("copies a database at one GSN, and restore gives it back whole", function()
        local tmp = tmpdir()
        local db = make_db(tmp .. "/db", 3000)
        defer(function() db:close() end)
        local r = assert(jobs.backup(db, tmp .. "/b"))
        assert.is_false(r.incremental)
        assert.are.equal("database", r.kind)
        assert.are.equal(db:last_gsn(), r.gsn)
        assert.is_true(r.bytes > 0)
        assert.is_true(exists(tmp .. "/b/BACKUP"))
        assert.is_false(exists(tmp .. "/b.partial"))
        local want = contents(tmp .. "/db", { read_only = true })
        -- writes after the backup are not in it
        local users = assert(db:collection("users"))
        assert(users:put(1, { name = "later" }))
        assert(users:delete(2))
        local rr = assert(jobs.restore(tmp .. "/b", tmp .. "/r"))
        assert.are.equal(r.gsn, rr.gsn)
        assert.are.equal(3000, rr.collections.users.keys)
        assert.are.same(want, contents(tmp .. "/r"))
        -- the check: keys 1 and 2 changed since (2 is gone), everything else equal
        local c = assert(jobs.check(tmp .. "/r", db, { manifest = tmp .. "/b" }))
        assert.is_true(c.ok)
        assert.are.equal(1, c.changed_since)
        assert.are.equal(5998, c.compared)
        assert.are.equal(0, c.mismatched)
        -- and a copy that differs is caught
        local rdb = assert(armdb.open(tmp .. "/r", { sync = "none" }))
        assert(assert(rdb:collection("events")):put(77, "tampered"))
        assert(assert(rdb:collection("users")):delete(78))
        rdb:close()
        c = assert(jobs.check(tmp .. "/r", db, { manifest = tmp .. "/b" }))
        assert.is_false(c.ok)
        assert.are.equal(2, c.mismatched)
        assert.are.equal(2, #c.samples)
    end)

    it("brings a backup up to date from the change feed (incremental)", function()
        local tmp = tmpdir()
        local db, users, events = make_db(tmp .. "/db", 2000)
        defer(function() db:close() end)
        local r1 = assert(jobs.backup(db, tmp .. "/b"))
        for i = 1, 300 do
            assert(users:delete(i))
            assert(events:put(i, "changed"))
        end
        assert(users:put(5000, { name = "new" }))
        local r2 = assert(jobs.backup(db, tmp .. "/b", { incremental = true }))
        assert.is_true(r2.incremental)
        assert.are.equal(601, r2.changes)
        assert.is_true(r2.gsn > r1.gsn)
        -- again, with nothing new: no change applied
        local r3 = assert(jobs.backup(db, tmp .. "/b", { incremental = true }))
        assert.are.equal(0, r3.changes)
        assert(jobs.restore(tmp .. "/b", tmp .. "/r"))
        db:close()
        assert.are.same(contents(tmp .. "/db"), contents(tmp .. "/r"))
    end)

    it("refuses an incremental update the change feed can no longer give", function()
        local tmp = tmpdir()
        local s = assert(armdb.store(tmp .. "/s", { key_len = 8, shards = 2, max_file_size = 131072,
            write_buffer_size = 65536, no_auto_compact = true }))
        defer(function() s:close() end)
        local v = string.rep("x", 100)
        for i = 1, 300 do
            assert(s:put(string.format("%08d", i), v))
        end
        assert(jobs.backup(s, tmp .. "/b"))
        local before = read_file(tmp .. "/b/BACKUP")
        for i = 1, 300 do
            assert(s:delete(string.format("%08d", i)))
        end
        for i = 1000, 3000 do
            assert(s:put(string.format("%08d", i), v))
        end
        assert(s:sync())
        assert(s:compact())
        assert(s:compact())
        local r, msg, code = jobs.backup(s, tmp .. "/b", { incremental = true })
        assert.is_nil(r)
        assert.are.equal(codes.COMPACTED, code)
        assert.matches("take a full backup", msg, 1, true)
        assert.are.equal(before, read_file(tmp .. "/b/BACKUP")) -- untouched
    end)

    it("backs up a raw store, and an encrypted database with its key", function()
        local tmp = tmpdir()
        local s = assert(armdb.store(tmp .. "/s", { key_len = 4, shards = 2 }))
        for i = 1, 100 do
            assert(s:put(string.format("%04d", i), "v" .. i))
        end
        local r = assert(jobs.backup(s, tmp .. "/sb"))
        assert.are.equal("store", r.kind)
        assert(s:close())
        assert(jobs.restore(tmp .. "/sb", tmp .. "/sr"))
        local c = assert(armdb.store(tmp .. "/sr"))
        assert.are.equal(100, c:count())
        assert.are.equal("v7", c:get("0007"))
        c:close()
        local key = string.rep("k", 32)
        local db = make_db(tmp .. "/edb", 200, { encryption_key = key })
        assert(jobs.backup(db, tmp .. "/eb"))
        db:close()
        local _, m1 = jobs.restore(tmp .. "/eb", tmp .. "/er")
        assert.matches("encrypted", m1, 1, true) -- no key: the restored copy cannot be opened
        helpers.rmtree(tmp .. "/er")
        assert(jobs.restore(tmp .. "/eb", tmp .. "/er", { encryption_key = key }))
        assert.are.same(contents(tmp .. "/edb", { encryption_key = key }),
            contents(tmp .. "/er", { encryption_key = key }))
    end)

    it("refuses what it cannot do, with a message", function()
        local tmp = tmpdir()
        local db = make_db(tmp .. "/db", 10)
        defer(function() db:close() end)
        assert(jobs.backup(db, tmp .. "/b"))
        local r, msg, code = jobs.backup(db, tmp .. "/b")
        assert.is_nil(r)
        assert.are.equal(codes.EXISTS, code)
        assert.are.equal("backup: " .. tmp .. "/b exists (an earlier backup? --incremental brings it up to date)",
            msg)
        r, msg = jobs.backup(db, tmp .. "/none", { incremental = true })
        assert.is_nil(r)
        assert.are.equal("no backup at " .. tmp .. "/none (no BACKUP file)", msg)
        r, msg, code = jobs.restore(tmp .. "/b", tmp .. "/db")
        assert.is_nil(r)
        assert.are.equal(codes.EXISTS, code)
        assert.are.equal("restore: " .. tmp .. "/db exists", msg)
        write_file(tmp .. "/b/BACKUP", "{not json")
        r, msg = jobs.restore(tmp .. "/b", tmp .. "/r2")
        assert.is_nil(r)
        assert.are.equal(tmp .. "/b/BACKUP is damaged or of another version", msg)
        local users = assert(db:collection("users"))
        assert.matches("back up the database of collection users",
            helpers.raised(jobs.backup, users, tmp .. "/x"), 1, true)
        assert.matches("unknown option speed", helpers.raised(jobs.backup, db, tmp .. "/x", { speed = 1 }), 1, true)
    end)
end)

-- A child process that backs up dir (a database) into dest and, at its
-- `at`-th yield, writes the marker and waits to be killed.
local CHILD = [[
local jobs = require("armdb.jobs")
local db = assert(require("armdb").open(arg[1], { sync = "none" }))
local n, at = 0, tonumber(arg[4])
local r, msg = jobs.backup(db, arg[2], { incremental = arg[5] == "incremental", step_bytes = 65536,
    yield = function()
        n = n + 1
        if n == at then
            local m = assert(io.open(arg[3], "w"))
            m:close()
            while true do
                os.execute("sleep 1")
            end
        end
    end })
assert(r, msg)
]]

local function kill_midway(tmp, dir, dest, at, mode)
    write_file(tmp .. "/child.lua", CHILD)
    local marker = tmp .. "/marker"
    os.remove(marker)
    sh("(cd " .. q(tmp) .. " && LUA_PATH=" .. q(LUA_PATH) .. " luajit child.lua " .. q(dir) .. " " .. q(dest)
        .. " " .. q(marker) .. " " .. at .. " " .. (mode or "full") .. " >" .. q(tmp .. "/child.err")
        .. " 2>&1 & echo $! >" .. q(tmp .. "/pid") .. ")")
    local pid = read_file(tmp .. "/pid"):match("%d+")
    defer(function() sh("kill -9 " .. pid .. " 2>/dev/null") end)
    helpers.kill_at_marker(pid, marker, tmp .. "/child.err")
end

describe("a backup killed midway", function()
    it("leaves only DEST.partial, and the next run starts again and completes", function()
        local tmp = tmpdir()
        local db = make_db(tmp .. "/db", 20000)
        db:close()
        kill_midway(tmp, tmp .. "/db", tmp .. "/b", 3)
        assert.is_true(exists(tmp .. "/b.partial"))
        assert.is_false(exists(tmp .. "/b"))
        db = assert(armdb.open(tmp .. "/db", { sync = "none" }))
        local r = assert(jobs.backup(db, tmp .. "/b"))
        assert.is_true(r.removed_partial)
        assert.is_false(exists(tmp .. "/b.partial"))
        db:close()
        assert(jobs.restore(tmp .. "/b", tmp .. "/r"))
        assert.are.same(contents(tmp .. "/db"), contents(tmp .. "/r"))
    end)

    it("incremental: refused by restore until run again, then complete", function()
        local tmp = tmpdir()
        local db, users = make_db(tmp .. "/db", 2000)
        assert(jobs.backup(db, tmp .. "/b"))
        for i = 1, 2000 do
            if i % 3 == 0 then
                assert(users:delete(i))
            else
                assert(users:put(i, { name = "again", n = -i }))
            end
        end
        db:close()
        kill_midway(tmp, tmp .. "/db", tmp .. "/b", 1, "incremental")
        local r, msg = jobs.restore(tmp .. "/b", tmp .. "/r")
        assert.is_nil(r)
        assert.are.equal("the backup at " .. tmp .. "/b is incomplete (an incremental backup was cut short): run it"
            .. " again first", msg)
        db = assert(armdb.open(tmp .. "/db", { sync = "none" }))
        local r2 = assert(jobs.backup(db, tmp .. "/b", { incremental = true }))
        assert.is_true(r2.resumed)
        db:close()
        assert(jobs.restore(tmp .. "/b", tmp .. "/r"))
        assert.are.same(contents(tmp .. "/db"), contents(tmp .. "/r"))
    end)
end)

describe("armdb backup / restore", function()
    it("back up, update incrementally, restore and check from the command", function()
        local tmp = tmpdir()
        local db = make_db(tmp .. "/db", 500)
        db:close()
        local out, err, code = run(tmp, { "backup", tmp .. "/db", tmp .. "/b" })
        assert.are.equal("", err)
        assert.are.equal(0, code)
        assert.matches("^kind database\ngsn %d+\nbytes %d+\ncollection events %d+\ncollection users %d+\n$", out)
        db = assert(armdb.open(tmp .. "/db", { sync = "none" }))
        assert(assert(db:collection("users")):delete(1))
        db:close()
        out, err, code = run(tmp, { "backup", "--incremental", tmp .. "/db", tmp .. "/b" })
        assert.are.equal(0, code, err)
        assert.matches("\nchanges 1\n", out, 1, true)
        out, err, code = run(tmp, { "restore", tmp .. "/b", tmp .. "/r", "--check", tmp .. "/db" })
        assert.are.equal(0, code, err)
        assert.matches("\ncollection users %d+ 499\n", out)
        assert.matches("\ncompared 999\nchanged_since 0\nmismatched 0\n$", out)
        assert.are.same(contents(tmp .. "/db"), contents(tmp .. "/r"))
    end)

    it("says what is wrong, and exits 1", function()
        local tmp = tmpdir()
        local db = make_db(tmp .. "/db", 10)
        -- the database is open for writing here: the command cannot take it
        local _, err, code = run(tmp, { "backup", tmp .. "/db", tmp .. "/b" })
        assert.are.equal(1, code)
        assert.matches("locked", err)
        db:close()
        _, err, code = run(tmp, { "backup", tmp .. "/db/users", tmp .. "/b" })
        assert.are.equal(2, code)
        assert.matches("back up the database", err, 1, true)
        _, err, code = run(tmp, { "restore", tmp .. "/nothing", tmp .. "/r" })
        assert.are.equal(1, code)
        assert.are.equal("armdb: no backup at " .. tmp .. "/nothing (no BACKUP file)\n", err)
    end)
end)
