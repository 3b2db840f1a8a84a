-- The batch jobs (armdb.jobs): export, import, verify, stats and compact
-- from Lua and from the `armdb` command, an import killed midway and run
-- again, damage found by verify, and the scheduler's slices on a fake clock.
local armdb = require("armdb")
local jobs = require("armdb.jobs")
local scheduler = require("armdb.jobs.scheduler")
local cjson = require("cjson")

local helpers = require("helpers")
local q, read_file, write_file = helpers.q, helpers.read_file, helpers.write_file
local tmpdir, defer = helpers.tmpdir, helpers.defer
local LUA_PATH, sh, run = helpers.LUA_PATH, helpers.sh, helpers.run_armdb

local function contents(s)
    local t = {}
    for k, v in s:pairs() do
        t[k] = v
    end
    return t
end

local function lines(text)
    local t = {}
    for line in text:gmatch("[^\n]+") do
        t[#t + 1] = line
    end
    return t
end

-- A raw store of 4-byte keys with the pairs of t, open (closed at the end).
local function store_with(dir, t, opts)
    local s = helpers.store_with(dir, t, opts)
    defer(function() s:close() end)
    return s
end

local function flip_byte(path, at)
    local f = assert(io.open(path, "r+b"))
    f:seek("set", at)
    local b = f:read(1)
    f:seek("set", at)
    f:write(string.char(bit.bxor(b:byte(), 0x40)))
    f:close()
end

describe("jobs.export()", function()
    it("writes every pair of a raw store to a path, a file or a function, and counts them", function()
        local tmp = tmpdir()
        local s = store_with(tmp .. "/s", { abcd = "one", efgh = "\255two", wxyz = "" })
        local r = assert(jobs.export(s, tmp .. "/out.jsonl"))
        assert.same({ 3, s.dir }, { r.exported, r.name })
        local text = read_file(tmp .. "/out.jsonl")
        assert.equal(#text, r.bytes)
        local got = lines(text)
        table.sort(got)
        assert.same({ '{"key":"abcd","value":"one"}', '{"key":"efgh","value_hex":"ff74776f"}',
            '{"key":"wxyz","value":""}' }, got)
        local seen = {}
        r = assert(jobs.export(s, function(line) seen[#seen + 1] = line end, { hex = true }))
        assert.equal(3, r.exported)
        table.sort(seen)
        assert.equal('{"key_hex":"61626364","value_hex":"6f6e65"}\n', seen[1])
        local f = assert(io.open(tmp .. "/again.jsonl", "wb"))
        assert(jobs.export(s, f))
        f:close()
        assert.equal(#text, #read_file(tmp .. "/again.jsonl"))
    end)

    it("writes a collection through its codecs, and needs a collection name for a database", function()
        local db = helpers.fresh_db()
        local users = assert(db:collection("users", { key = "u64", value = "json" }))
        assert(users:put(7, { name = "ann" }))
        local out = {}
        local r = assert(jobs.export(db, function(line) out[#out + 1] = line end, { collection = "users" }))
        assert.same({ 1, { '{"key":7,"value":{"name":"ann"}}\n' } }, { r.exported, out })
        assert.matches("is a database: name a collection with opts.collection", helpers.raised(jobs.export, db,
            function() end))
        assert.matches("out must be a path, a file or a function, got number", helpers.raised(jobs.export, users, 5))
        local none, msg = jobs.export(users, "/nonexistent/dir/x.jsonl")
        assert.is_nil(none)
        assert.matches("^cannot write /nonexistent/dir/x.jsonl", msg)
    end)
end)

describe("jobs.import()", function()
    it("puts every good record and reports each bad one with its line and reason", function()
        local tmp = tmpdir()
        local s = store_with(tmp .. "/s", { keep = "old" }, { value_len = 3 })
        local rejected = {}
        local r = assert(jobs.import(s, {
            '{"key":"aaaa","value":"one"}',
            "",
            '{"key":"bbb","value":"two"}',
            '{"key":"cccc","value":"three"}',
            '{"key":"dddd",',
            '{"key_hex":"65656565","value_hex":"303132"}',
            '{"key":"ffff","value_hex":"zz"}',
        }, { on_reject = function(n, why) rejected[#rejected + 1] = n .. ": " .. why end }))
        assert.same({ 7, 2, 4, 1, false }, { r.lines, r.imported, r.rejected, r.empty, r.ok })
        assert.same({
            "3: key of 3 bytes, the store has key_len 4",
            "4: value of 5 bytes, the store has value_len 3",
            "5: malformed JSON: Expected object key string but found T_END at character 15",
            "7: value_hex is not hexadecimal (two digits a byte): zz",
        }, rejected)
        assert.same({ line = 3, reason = "key of 3 bytes, the store has key_len 4" }, r.rejects[1])
        assert.same({ keep = "old", aaaa = "one", eeee = "012" }, contents(s))
    end)

    it("checks records against a collection's key and value codecs", function()
        local db = helpers.fresh_db()
        local c = assert(db:collection("scores", { key = "string(4)", value = "number" }))
        local n = assert(db:collection("nums", { key = "u32", value = "raw" }))
        local r = assert(jobs.import(c, {
            '{"key":"ann","value":1.5}',
            '{"key":"toolong","value":2}',
            '{"key":"bob","value":"x"}',
            '{"key":"cy","value":"inf"}',
            '{"key":5,"value":1}',
        }))
        assert.same({ 2, 3 }, { r.imported, r.rejected })
        assert.equal(2, r.rejects[1].line)
        assert.matches("string%(4%)", r.rejects[1].reason)
        assert.same({ line = 3, reason = "value is not a number" }, r.rejects[2])
        assert.same({ line = 5, reason = "key is not a string" }, r.rejects[3])
        assert.same({ 1.5, math.huge }, { c:get("ann"), c:get("cy") })
        r = assert(jobs.import(n, { '{"key":4294967296,"value":"x"}', '{"key":"12","value":"y"}',
            '{"key":1.5,"value":"z"}', '{"key":3,"value":{"a":1}}' }))
        assert.same({ 1, 3 }, { r.imported, r.rejected })
        assert.same({ 1, 3, 4 }, { r.rejects[1].line, r.rejects[2].line, r.rejects[3].line })
        assert.matches("u32", r.rejects[1].reason)
        assert.equal("value is not a string", r.rejects[3].reason)
        assert.equal("y", n:get(12))
    end)

    it("stops after max_rejects, and raises on misuse", function()
        local tmp = tmpdir()
        local s = store_with(tmp .. "/s")
        local r = assert(jobs.import(s, { "x", "y", '{"key":"aaaa","value":"1"}' }, { max_rejects = 2 }))
        assert.same({ 2, 0, true }, { r.rejected, r.imported, r.stopped })
        assert.matches("input must be a path, a file, a function or an array of lines, got number",
            helpers.raised(jobs.import, s, 5))
        assert.matches("max_rejects must be a number >= 1", helpers.raised(jobs.import, s, {}, { max_rejects = 0 }))
        local none, msg = jobs.import(s, tmp .. "/missing.jsonl")
        assert.is_nil(none)
        assert.matches("^cannot read .*missing.jsonl", msg)
    end)

    it("gives the same store when run twice over the same input", function()
        local tmp = tmpdir()
        local s = store_with(tmp .. "/s", { zzzz = "untouched" })
        local input = { '{"key":"aaaa","value":"1"}', '{"key":"bbbb","value":"2"}', '{"key":"aaaa","value":"3"}' }
        assert(jobs.import(s, input))
        local once = contents(s)
        assert(jobs.import(s, input))
        assert.same(once, contents(s))
        assert.same({ zzzz = "untouched", aaaa = "3", bbbb = "2" }, once)
    end)

    it("killed midway (SIGKILL) and run again, ends as one complete run does", function()
        local tmp = tmpdir()
        local N = 6000
        local recs = {}
        for i = 1, N do
            -- keys repeat, so the order in which records apply matters
            recs[i] = string.format('{"key":"%04d","value":"v%d"}', i % 2500, i)
        end
        write_file(tmp .. "/in.jsonl", table.concat(recs, "\n") .. "\n")
        -- the reference: one complete run
        local ref = store_with(tmp .. "/ref", { keep = "yes" })
        assert(jobs.import(ref, tmp .. "/in.jsonl"))
        local want = contents(ref)
        -- the victim: a child that imports, says when it is halfway, and waits to be killed
        local dir = tmp .. "/s"
        local s = assert(armdb.store(dir, { key_len = 4, shards = 2 }))
        assert(s:put("keep", "yes"))
        assert(s:close())
        write_file(tmp .. "/child.lua", [[
local jobs = require("armdb.jobs")
local s = assert(require("armdb").store(arg[1], { sync_interval_ms = 1 }))
local f = assert(io.open(arg[2], "rb"))
local n = 0
local function input()
    n = n + 1
    if n == ]] .. math.floor(N / 2) .. [[ then
        os.execute("sleep 0.2") -- the interval barrier makes what came before durable
        local m = assert(io.open(arg[3], "w"))
        m:close()
        while true do
            os.execute("sleep 1")
        end
    end
    return f:read("*l")
end
jobs.import(s, input)
]])
        local marker = tmp .. "/halfway"
        sh("(cd " .. q(tmp) .. " && LUA_PATH=" .. q(LUA_PATH) .. " luajit child.lua " .. q(dir) .. " in.jsonl "
            .. q(marker) .. " >/dev/null 2>&1 & echo $! >" .. q(tmp .. "/pid") .. ")")
        local pid = read_file(tmp .. "/pid"):match("%d+")
        defer(function() sh("kill -9 " .. pid .. " 2>/dev/null") end)
        helpers.kill_at_marker(pid, marker)
        -- cut short: some records are in, not all
        s = assert(armdb.store(dir))
        defer(function() s:close() end)
        local half = contents(s)
        assert.equal("yes", half.keep)
        assert.is_not_nil(half["0001"])
        assert.are_not.same(want, half)
        -- run again, to its end
        local r = assert(jobs.import(s, tmp .. "/in.jsonl"))
        assert.same({ N, 0 }, { r.imported, r.rejected })
        assert.same(want, contents(s))
    end)
end)

describe("jobs.verify()", function()
    it("counts every entry, dead ones too, on a clean store", function()
        local tmp = tmpdir()
        local s = store_with(tmp .. "/s", nil, { shards = 1, sync = "none" })
        for i = 1, 3 do
            assert(s:put("abcd", "version " .. i))
        end
        assert(s:delete("abcd"))
        -- a writer's active file: what is still in its write buffer is not on disk to check
        assert.equal(0, assert(jobs.verify(s)).entries)
        assert(s:sync())
        local r = assert(jobs.verify(s))
        assert.same({ 4, 1, 0, true, 0 }, { r.entries, r.files, r.damage, r.ok, #r.damages })
        assert.equal(0, r.pages)
        assert.matches("needs a store, a collection or a database, got 5", helpers.raised(jobs.verify, 5))
    end)

    it("reports a flipped byte in a dead entry by file and offset", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        local s = assert(armdb.store(dir, { key_len = 4, shards = 1 }))
        local old = string.rep("O", 200)
        assert(s:put("abcd", old))
        assert(s:put("abcd", "new"))
        assert(s:put("efgh", "other"))
        assert(s:close())
        local data = dir .. "/000/00000001.data"
        local at = assert(read_file(data):find(old, 1, true)) - 1
        flip_byte(data, at + 50)
        s = assert(armdb.store(dir, { read_only = true }))
        defer(function() s:close() end)
        assert.equal("new", s:get("abcd")) -- the live values are intact
        local seen = {}
        local r = assert(jobs.verify(s, { on_damage = function(ev) seen[#seen + 1] = ev end }))
        assert.same({ false, 1, 1, 2 }, { r.ok, r.damage, r.damaged_entries, r.entries })
        local d = r.damages[1]
        assert.same({ "entry", 0, 1, data, at - 20, 224 }, { d.what, d.shard, d.file, d.path, d.offset, d.length })
        assert.equal("offset " .. (at - 20) .. ": 224 bytes are not an intact entry (a failed checksum or header)",
            d.message)
        assert.same({ d }, seen)
    end)

    it("reports a damaged hint and a page of an encrypted store", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        local key = string.rep("k", 32)
        local s = assert(armdb.store(dir, { key_len = 4, shards = 1, encryption_key = key }))
        for i = 1, 20 do
            assert(s:put(string.format("%04d", i), string.rep("x", 1000)))
        end
        assert(s:close())
        flip_byte(dir .. "/000/00000001.data", 4096 + 7)
        flip_byte(dir .. "/000/00000001.hint", 100)
        s = assert(armdb.store(dir, { read_only = true, encryption_key = key }))
        defer(function() s:close() end)
        local r = assert(jobs.verify(s))
        assert.is_false(r.ok)
        assert.same({ 1, 1 }, { r.damaged_pages, r.damaged_hints })
        local kinds = {}
        for _, d in ipairs(r.damages) do
            kinds[d.what] = d
        end
        assert.same({ 4096, 4096 }, { kinds.page.offset, kinds.page.length })
        assert.equal(dir .. "/000/00000001.hint", kinds.hint.path)
        assert.is_true(r.pages >= 5)
    end)

    it("verifies each collection of a database", function()
        local db = helpers.fresh_db()
        local a = assert(db:collection("a", { key = "u32", value = "raw" }))
        assert(db:collection("b", { key = "u32", value = "number" }))
        assert(a:put(1, "x"))
        assert(db:sync())
        local r = assert(jobs.verify(db))
        assert.same({ "a", "b" }, r.names)
        assert.same({ 1, 0, true }, { r.collections.a.entries, r.collections.b.entries, r.ok })
    end)
end)

describe("jobs.stats() and jobs.compact()", function()
    it("give a store's counters as a table, text and JSON", function()
        local tmp = tmpdir()
        local s = store_with(tmp .. "/s", { abcd = "1", efgh = "2" })
        local st = assert(jobs.stats(s))
        assert.same({ 2, 4 }, { st.keys, st.key_len })
        local j = cjson.decode(jobs.stats_json(st))
        assert.same({ 2, "pwrite", false }, { j.keys, j.io_backend == "io_uring" and "pwrite" or j.io_backend,
            j.read_only })
        assert.truthy(jobs.stats_text(st):find("\nkeys 2\n", 1, true))
        local db = helpers.fresh_db()
        assert(db:collection("c", { key = "u32", value = "raw" }))
        local all = assert(jobs.stats(db))
        assert.equal(0, all.c.keys)
        assert.equal(0, cjson.decode(jobs.stats_json(all)).c.keys)
    end)

    it("compacts and reports what it reclaimed", function()
        local tmp = tmpdir()
        local s = store_with(tmp .. "/s", nil, { shards = 1, max_file_size = 65536, no_auto_compact = true })
        for round = 1, 6 do
            for i = 1, 100 do
                assert(s:put(string.format("%04d", i), string.rep(string.char(64 + round), 400)))
            end
        end
        local r = assert(jobs.compact(s))
        assert.is_true(r.files_compacted > 0)
        assert.is_true(r.bytes_reclaimed > 0)
        assert.is_true(r.disk_after < r.disk_before)
        assert.equal(string.rep("F", 400), s:get("0042"))
    end)
end)

describe("armdb export, import, verify, stats and compact", function()
    it("export and import copy a store; dump and load are the same commands", function()
        local tmp = tmpdir()
        local a = store_with(tmp .. "/a", { abcd = "1", efgh = "\0binary" })
        assert(a:close()) -- what another process reads, whole
        assert(armdb.store(tmp .. "/b", { key_len = 4, shards = 1 })):close()
        local out, err, code = run(tmp, { "export", tmp .. "/a", "-o", tmp .. "/a.jsonl" })
        assert.same({ "", "", 0 }, { out, err, code })
        assert.same({ "imported 2\nrejected 0\n", "", 0 }, { run(tmp, { "import", tmp .. "/b", tmp .. "/a.jsonl" }) })
        assert.same(lines(read_file(tmp .. "/a.jsonl")), lines((run(tmp, { "dump", tmp .. "/b" }))))
        assert.same({ "imported 2\nrejected 0\n", "", 0 }, { run(tmp, { "load", tmp .. "/b" },
            read_file(tmp .. "/a.jsonl")) })
        out = run(tmp, { "help", "import" })
        assert.truthy(out:find("idempotent by key", 1, true))
        assert.truthy(out:find("--max-rejects N", 1, true))
        out = run(tmp, { "--help" })
        assert.truthy(out:find("\n  export +DIR", 1))
        assert.truthy(out:find("\n  dump +DIR +the same as export\n", 1))
    end)

    it("import reports each bad record with its line, imports the rest and exits 1", function()
        local tmp = tmpdir()
        local s = assert(armdb.store(tmp .. "/s", { key_len = 4, shards = 1 }))
        assert(s:close())
        local out, err, code = run(tmp, { "import", tmp .. "/s" }, '{"key":"aaaa","value":"1"}\n'
            .. '{"key":"bb","value":"2"}\nnot json\n{"key":"cccc","value":"3"}\n')
        assert.same({ "imported 2\nrejected 2\n", 1 }, { out, code })
        assert.equal("stdin:2: key of 2 bytes, the store has key_len 4\n"
            .. "stdin:3: malformed JSON: Expected value but found invalid token at character 1\n"
            .. "armdb: stdin: 2 of 4 records rejected\n", err)
        s = assert(armdb.store(tmp .. "/s", { read_only = true }))
        assert.same({ aaaa = "1", cccc = "3" }, contents(s))
        s:close()
        assert.same({ "", "armdb: --max-rejects needs a positive integer, got 0\n", 2 },
            { run(tmp, { "import", "--max-rejects", "0", tmp .. "/s" }) })
    end)

    it("verify names the damage, exits 1, and gives JSON with --json", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        local s = assert(armdb.store(dir, { key_len = 4, shards = 1 }))
        local payload = string.rep("P", 100)
        assert(s:put("aaaa", "first"))
        assert(s:put("bbbb", payload))
        assert(s:put("cccc", "last"))
        assert(s:close())
        assert.equal(0, select(3, run(tmp, { "verify", dir })))
        local data = dir .. "/000/00000001.data"
        local at = assert(read_file(data):find(payload, 1, true)) - 1
        flip_byte(data, at + 10)
        local out, err, code = run(tmp, { "verify", dir })
        assert.same({ "armdb: damage found in " .. dir .. "\n", 1 }, { err, code })
        local line = "\ndamage " .. data .. ": offset " .. (at - 20) .. ": 120 bytes are not an intact entry (a failed"
            .. " checksum or header)\ndamaged\n"
        assert.equal(line, out:sub(-#line))
        assert.truthy(out:find("^entries 2\n"), out)
        out, err, code = run(tmp, { "verify", "--json", dir })
        assert.same({ "armdb: damage found in " .. dir .. "\n", 1 }, { err, code })
        local j = cjson.decode(out)
        assert.same({ false, 1, "entry", at - 20, 120, data }, { j.ok, j.damage, j.damages[1].what,
            j.damages[1].offset, j.damages[1].length, j.damages[1].path })
    end)

    it("stats --json and compact report through the jobs", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        local s = assert(armdb.store(dir, { key_len = 4, shards = 1, no_auto_compact = true }))
        for i = 1, 3 do
            assert(s:put("abcd", string.rep("v", 100 * i)))
        end
        assert(s:close())
        local out, err, code = run(tmp, { "stats", "--json", dir })
        assert.same({ "", 0 }, { err, code })
        assert.equal(1, cjson.decode(out).keys)
        out, err, code = run(tmp, { "compact", dir })
        assert.same({ "", 0 }, { err, code })
        local f = {}
        for k, v in out:gmatch("(%S+) (%d+)\n") do
            f[k] = tonumber(v)
        end
        assert.same({ 1, true }, { f.files_compacted, f.bytes_reclaimed > 0 })
        assert.equal(f.disk_before - f.disk_after, f.bytes_reclaimed)
    end)
end)

describe("scheduler", function()
    -- A clock the test moves.
    local function fake_clock()
        local c = { now = 1000 }
        c.fn = function() return c.now end
        return c
    end

    it("runs due steps until the slice is used up, overrunning it by at most one step", function()
        local clk = fake_clock()
        local sched = scheduler.new({ slice = 0.005, clock = clk.fn })
        local calls, deadlines = 0, {}
        sched:add({ name = "busy", every = 10, step = function(deadline)
            calls = calls + 1
            deadlines[#deadlines + 1] = deadline
            clk.now = clk.now + 0.002 -- each step takes 2 ms
            return calls >= 5
        end })
        local t0 = clk.now
        assert.equal(3, sched:tick()) -- 0, 2, 4 ms started; the third ends at 6 ms
        assert.same({ t0 + 0.005, t0 + 0.005, t0 + 0.005 }, deadlines)
        assert.is_true(clk.now - t0 <= 0.005 + 0.002)
        assert.equal(2, sched:tick()) -- the round goes on at the next tick, and ends
        assert.equal(5, calls)
        assert.equal(0, sched:tick()) -- not due again before `every`
        clk.now = t0 + 10
        assert.equal(1, sched:tick())
        assert.equal(6, calls)
    end)

    it("lets tasks take turns, and stops a tick where no step moved the clock", function()
        local clk = fake_clock()
        local sched = scheduler.new({ slice = 0.01, clock = clk.fn })
        local order = {}
        for _, name in ipairs({ "a", "b" }) do
            sched:add({ name = name, every = 1, step = function()
                order[#order + 1] = name
                clk.now = clk.now + 0.003
                return false
            end })
        end
        sched:add({ name = "stuck", every = 1, first = 100, step = function() return false end })
        sched:tick()
        assert.same({ "a", "b", "a", "b" }, order)
        -- a step that takes no time and never finishes cannot hold a tick
        local frozen = scheduler.new({ slice = 0.01, clock = function() return 5 end })
        local n = 0
        frozen:add({ every = 0, step = function() n = n + 1 return false end })
        assert.equal(1, frozen:tick())
        assert.equal(1, n)
    end)

    it("keeps a step's error, ends its round and tells on_error", function()
        local clk = fake_clock()
        local errs = {}
        local sched = scheduler.new({ clock = clk.fn, on_error = function(task, e) errs[#errs + 1] = task.name .. ":"
            .. tostring(e):match("boom") end })
        local task = sched:add({ name = "bad", every = 5, step = function() error("boom") end })
        sched:tick()
        assert.same({ "bad:boom" }, errs)
        assert.matches("boom", task.last_error)
        assert.same({ 1, false, clk.now + 5 }, { task.rounds, task.running, task.due })
        assert.matches("needs a step function", helpers.raised(sched.add, sched, { every = 1 }))
        assert.matches("every must be a number", helpers.raised(sched.add, sched, { step = print }))
    end)

    it("run loops, sleeping until a task is due, until told to stop", function()
        local clk = fake_clock()
        local slept = {}
        local sched = scheduler.new({ clock = clk.fn, sleep = function(s)
            slept[#slept + 1] = s
            clk.now = clk.now + s
        end })
        local rounds = 0
        sched:add({ every = 2, step = function()
            rounds = rounds + 1
            return true
        end })
        sched:run({ ["until"] = function() return rounds >= 3 end })
        assert.equal(3, rounds)
        assert.same({ 1, 1, 1, 1 }, slept) -- 2 s apart, sleeping at most max_sleep = 1 s
    end)

    it("add_db adds the policy tasks where armdb.policy is, and a compaction step", function()
        local clk = fake_clock()
        local db = helpers.fresh_db({ no_auto_compact = true, max_file_size = 65536 })
        local c = assert(db:collection("c", { key = "u32", value = "raw" }))
        local saved = package.loaded["armdb.policy"]
        defer(function() package.loaded["armdb.policy"] = saved end)
        package.loaded["armdb.policy"] = { tasks = function(d)
            assert.equal(db, d)
            return { { name = "policy task", every = 1, step = function() return true end } }
        end }
        local sched = scheduler.new({ clock = clk.fn })
        local added = sched:add_db(db, { compact_every = 30, compact = { min_bytes = 0 } })
        assert.same({ "policy task", "compact " .. db.dir }, { added[1].name, added[2].name })
        -- without the module: no policy tasks
        package.loaded["armdb.policy"] = nil
        local path, cpath, preload = package.path, package.cpath, package.preload["armdb.policy"]
        package.path, package.cpath, package.preload["armdb.policy"] = "", "", nil
        local ok, more = pcall(scheduler.new({ clock = clk.fn }).add_db, scheduler.new({ clock = clk.fn }), db,
            { compact_every = 30 })
        package.path, package.cpath, package.preload["armdb.policy"] = path, cpath, preload
        assert.is_true(ok, more)
        assert.equal(1, #more)
        -- without compact options: no compaction step (the stores compact by themselves)
        assert.equal(0, #scheduler.new({ clock = clk.fn }):add_db(db))
        -- the compaction step compacts a collection with garbage, when due
        for round = 1, 5 do
            for i = 1, 100 do
                assert(c:put(i, string.rep(string.char(64 + round), 500)))
            end
        end
        local task = added[2]
        sched:remove(added[1])
        sched:tick()
        assert.equal(0, task.stats.compactions) -- not due before compact_every
        clk.now = clk.now + 30
        sched:tick()
        assert.equal(1, task.stats.compactions)
        assert.equal(1, task.rounds)
        assert.equal(string.rep("E", 500), c:get(42))
    end)

    it("start_ngx ticks from ngx.timer.every", function()
        local timers = {}
        local saved = rawget(_G, "ngx")
        defer(function() rawset(_G, "ngx", saved) end)
        rawset(_G, "ngx", { timer = { every = function(interval, fn)
            timers[#timers + 1] = { interval, fn }
            return true
        end } })
        local clk = fake_clock()
        local sched = scheduler.new({ clock = clk.fn })
        local n = 0
        sched:add({ every = 1, step = function() n = n + 1 clk.now = clk.now + 0.001 return true end })
        assert.is_true(sched:start_ngx({ interval = 0.25 }))
        assert.equal(0.25, timers[1][1])
        timers[1][2](false)
        assert.equal(1, n)
        clk.now = clk.now + 1
        timers[1][2](true) -- premature: the worker is exiting
        assert.equal(1, n)
        timers[1][2](false)
        assert.equal(2, n)
        clk.now = clk.now + 1
        sched:stop()
        timers[1][2](false)
        assert.equal(2, n)
        rawset(_G, "ngx", nil)
        assert.matches("needs OpenResty", helpers.raised(sched.start_ngx, sched))
    end)
end)

describe("armdb.cli.add_command()", function()
    it("adds a command with its options, run by main and listed in the help", function()
        local cli = require("armdb.cli")
        local seen
        cli.add_command({ name = "hello", args = "DIR", summary = "greet DIR", text = "Greets DIR.",
            options = { loud = false }, run = function(opts, pos)
                seen = { opts.loud == true, pos[1] }
                return 5
            end })
        assert.equal(5, cli.main({ "hello", "--loud", "there" }))
        assert.same({ true, "there" }, seen)
        local saved = io.stderr
        local err = {}
        io.stderr = { write = function(_, ...) -- luacheck: ignore
            for _, s in ipairs({ ... }) do
                err[#err + 1] = s
            end
        end }
        local code = cli.main({ "hello", "--quiet", "there" })
        io.stderr = saved -- luacheck: ignore
        assert.same({ 2, "armdb: unknown option --quiet for hello (see armdb help hello)\n" },
            { code, table.concat(err) })
    end)
end)

describe("armdb.jobs.progress", function()
    it("draws a bar when asked for one on a terminal, and nothing off a terminal", function()
        local progress = jobs.progress
        local buf = {}
        local out = { write = function(_, s) buf[#buf + 1] = s end }
        local bar = progress.new("import", 200, out)
        bar:step(1, 100)
        bar:step(2, 101) -- same percentage: not drawn again
        bar:step(3, 200)
        bar:done()
        assert.same({ "\rimport [###############...............]  50% 1",
            "\rimport [##############################] 100% 3", "\r\27[K" }, buf)
        local saved = progress.is_tty
        defer(function() progress.is_tty = saved end)
        progress.is_tty = function() return false end
        assert.equal(progress.silent, progress.new("export", 10))
        assert.equal(progress.silent, progress.of(true, "export", 10))
        assert.equal(progress.silent, progress.of(nil, "export", 10))
        assert.equal(bar, progress.of(bar, "export", 10))
    end)
end)

describe("jobs.sweep() and armdb sweep", function()
    it("purge the expired values of every collection with expiries", function()
        local tmp = tmpdir()
        local db = assert(armdb.open(tmp .. "/db", { sync = "none" }))
        local sess = assert(db:collection("sess", { key = "u64", value = "json", ttl = 3600 }))
        local plain = assert(db:collection("plain", { key = "u64", value = "raw" }))
        for i = 1, 10 do
            assert(sess:put(i, { i = i }, { ttl = i <= 4 and 0.001 or nil }))
            assert(plain:put(i, "v"))
        end
        sh("sleep 0.05")
        local r = assert(jobs.sweep(db))
        assert.same({ purged = 4, collections = { sess = 4 } }, r)
        assert.equal(6, sess:count())
        assert.equal(10, plain:count())
        assert(sess:put(11, { i = 11 }, { ttl = 0.001 }))
        db:close()
        sh("sleep 0.05")
        local out, err, code = run(tmp, { "sweep", tmp .. "/db" })
        assert.equal(0, code, err)
        assert.equal("purged 1\ncollection sess 1\n", out)
        out, err, code = run(tmp, { "sweep", tmp .. "/db/sess" })
        assert.equal(2, code)
        assert.equal("", out)
        assert.equal("armdb: " .. tmp .. "/db/sess is a collection: sweep works on a database (its collections"
            .. " keep the expiries)\n", err)
    end)
end)
