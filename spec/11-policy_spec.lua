-- Storage policies of collections (armdb.policy): ttl, quotas, compaction
-- and sync, declared in the spec and changed at run time, alone and
-- together. Time is a fake clock (policy.now), never a sleep.
local ffi = require("ffi")
local armdb = require("armdb")
local policy = require("armdb.policy")
local cjson = require("cjson").new()

local helpers = require("helpers")
local defer, fresh, raised, read = helpers.defer, helpers.fresh_db, helpers.raised, helpers.read_file

local codes = armdb.codes

ffi.cdef([[
struct armdb_spec11_pt { double x, y; };
struct armdb_spec11_huge { uint8_t b[4090]; };
]])

local T0 = 1700000000 -- the fake clock's start, seconds since the epoch
local clock = T0
local real_now = policy.now

local function set_clock(t)
    clock = t
end

local function tick(s)
    clock = clock + s
end

local function sorted_keys(iter)
    local ks = {}
    for k in iter do
        ks[#ks + 1] = k
    end
    table.sort(ks)
    return ks
end

local function task_of(db, name)
    for _, t in ipairs(policy.tasks(db)) do
        if t.name == name then
            return t
        end
    end
end

local function step_until_done(task, max_steps)
    local steps = 0
    repeat
        steps = steps + 1
        assert(steps <= (max_steps or 1000), "the task never finished its round")
    until task.step(clock + 60)
    return steps
end

-- A time today at hh:mm, local time (what compaction windows read).
local function at(hh, mm)
    local d = os.date("*t", T0)
    d.hour, d.min, d.sec = hh, mm, 0
    return os.time(d)
end

before_each(function()
    set_clock(T0)
    policy.now = function()
        return clock
    end
end)

after_each(function()
    policy.now = real_now
end)

describe("policy.now()", function()
    it("is the wall clock in seconds, and can be replaced", function()
        policy.now = real_now
        local t = policy.now()
        assert.is_number(t)
        assert.is_true(math.abs(t - os.time()) <= 2)
        policy.now = function() return 42 end
        assert.are.equal(42, policy.now())
    end)
end)

describe("policy ttl", function()
    it("hides an expired value from every read", function()
        local db = fresh()
        local s = assert(db:collection("s", { key = "string(8)", value = "raw", ordered = true, ttl = 10 }))
        assert.is_true(s:put("a1", "short"))
        assert.is_true(s:put("a2", "long", { ttl = 100 }))
        assert.is_true(s:put("b1", "never", { ttl = false }))
        -- As stored: the expiry in ms since the epoch, little-endian, then the value.
        local function stored_expiry(k)
            local raw = s._store._raw:get(k .. string.rep("\0", 8 - #k))
            local e = 0
            for i = 8, 1, -1 do
                e = e * 256 + raw:byte(i)
            end
            return e, raw:sub(9)
        end
        assert.are.same({ (T0 + 10) * 1000, "short" }, { stored_expiry("a1") })
        assert.are.same({ (T0 + 100) * 1000, "long" }, { stored_expiry("a2") })
        assert.are.same({ 0, "never" }, { stored_expiry("b1") })
        tick(9.999)
        assert.are.equal("short", s:get("a1"))
        tick(0.001)
        assert.is_nil(s:get("a1"))
        assert.are.equal("long", s:get("a2"))
        local many = assert(s:get_many({ "a1", "a2", "b1", "zz" }))
        assert.are.equal(4, many.n)
        assert.is_nil(many[1])
        assert.are.equal("long", many[2])
        assert.are.equal("never", many[3])
        assert.are.same({ "a2", "b1" }, sorted_keys(s:pairs()))
        assert.are.same({ "a2" }, sorted_keys(s:prefix("a")))
        assert.are.same({ "a2" }, sorted_keys(s:range("a", "b")))
        assert.are.same({ "b1" }, sorted_keys(s:pairs({ reverse = true, limit = 1 })))
        -- Stored until purged: the count still has it.
        assert.are.equal(3, s:count())
        tick(1e9)
        assert.is_nil(s:get("a2"))
        assert.are.equal("never", s:get("b1"))
    end)

    it("sees an expired value as absent in cas, update and delete", function()
        local db = fresh()
        local s = assert(db:collection("s", { key = "u64", value = "json", ttl = 5 }))
        assert.is_true(s:put(1, { n = 1 }))
        assert.is_true(s:put(2, { n = 2 }))
        assert.is_true(s:put(3, { n = 3 }))
        tick(6)
        assert.is_false(s:cas(1, { n = 1 }, { n = 10 })) -- the old value is gone
        assert.is_true(s:cas(1, nil, { n = 11 }))       -- absent: may be set
        assert.are.same({ n = 11 }, s:get(1))
        local seen = "not called"
        assert.is_true(s:update(2, function(cur)
            seen = cur
            return { n = 20 }
        end))
        assert.is_nil(seen)
        assert.are.same({ n = 20 }, s:get(2))
        assert.is_false(s:delete(3)) -- expired: absent, and purged
        assert.are.equal(2, s:count())
        -- cas compares the values, not their expiries; it sets a new one.
        assert.is_true(s:cas(2, { n = 20 }, { n = 21 }, { ttl = 100 }))
        tick(50)
        assert.are.same({ n = 21 }, s:get(2))
        assert.is_nil(s:get(1))
        assert.is_true(s:update(2, function(cur) return { n = cur.n + 1 } end, { ttl = false }))
        tick(1e6)
        assert.are.same({ n = 22 }, s:get(2))
    end)

    it("purges expired keys in bounded, resumable sweep steps", function()
        local db = fresh()
        local s = assert(db:collection("s", { key = "u64", value = "raw", ttl = 10, sweep_every = 5 }))
        for i = 1, 5000 do
            assert.is_true(s:put(i, "v", { ttl = i % 2 == 0 and 10 or 1000 }))
        end
        local task = task_of(db, "ttl:s")
        assert.are.equal(5, task.every)
        tick(11)
        -- A deadline already passed: a step still looks at a few keys.
        assert.is_false(task.step(clock - 1))
        assert.is_true(s:count() > 2500)
        assert.is_false(task.step(clock + 60)) -- at most 2000 keys a step
        -- Between steps: a key written anew with a short ttl stays until
        -- it expires; a key refreshed before its turn is not purged.
        assert.is_true(s:put(6000, "new"))
        assert.is_true(s:put(4998, "again", { ttl = 1000 }))
        assert.is_true(step_until_done(task) >= 2)
        assert.are.equal(2500 + 2, s:count())
        assert.are.equal("again", s:get(4998))
        assert.are.equal("new", s:get(6000))
        -- The next round starts afresh: with nothing expired, nothing goes.
        step_until_done(task)
        assert.are.equal(2502, s:count())
        tick(10)
        step_until_done(task)
        assert.are.equal(2501, s:count())
        assert.is_nil(s:get(6000))
    end)

    it("keeps the expiry across a reopen without the spec", function()
        local db, dir = fresh()
        local s = assert(db:collection("s", { key = "u64", value = "json", ttl = 10 }))
        assert.is_true(s:put(1, { a = 1 }))
        assert.is_true(s:put(2, { a = 2 }, { ttl = 60 }))
        assert.is_true(db:close())
        local cat = cjson.decode(read(dir .. "/CATALOG"))
        assert.are.same({ key = "u64", value = "json", key_len = 8, value_len = 0, expiry = true },
            cat.collections.s)
        tick(30)
        local again = assert(armdb.open(dir, { sync = "none" }))
        defer(function() again:close() end)
        local s2 = assert(again:collection("s"))
        assert.is_nil(s2:get(1))
        assert.are.same({ a = 2 }, s2:get(2))
        -- No default ttl on this handle: a put without one never expires.
        assert.is_true(s2:put(3, { a = 3 }))
        assert.are.same({ ttl = 0, sweep_every = 60 }, s2:policy())
        tick(1e6)
        assert.are.same({ a = 3 }, s2:get(3))
        assert.are.equal(3, s2:count())
        assert.is_true(again:sync())
        local ro = assert(armdb.open(dir, { read_only = true }))
        defer(function() ro:close() end)
        local r = assert(ro:collection("s"))
        assert.are.same({ 3 }, sorted_keys(r:pairs()))
        assert.are.same({}, policy.tasks(ro))
        -- A reader has nothing to tune: engine policies are taken and left aside.
        assert(ro:collection("s", { key = "u64", value = "json", ttl = 5, sync = "always",
            compaction = { threshold = 0.5 } }))
        assert.is_true(r:set_policy({ sync = "none" }))
        assert.are.same({ a = 3 }, r:get(3))
    end)

    it("refuses a spec that contradicts the catalog, naming ttl", function()
        local db = fresh()
        assert(db:collection("s", { key = "u64", value = "raw", ttl = 10 }))
        assert(db:collection("p", { key = "u64", value = "raw" }))
        local c, msg, code = db:collection("s", { key = "u64", value = "raw" })
        assert.is_nil(c)
        assert.are.equal("collection s has values with an expiry in the catalog, the spec has no ttl", msg)
        assert.are.equal(codes.MISMATCH, code)
        c, msg, code = db:collection("p", { key = "u64", value = "raw", ttl = 30 })
        assert.is_nil(c)
        assert.are.equal("collection p has values without an expiry in the catalog, the spec asks for ttl = 30", msg)
        assert.are.equal(codes.MISMATCH, code)
        -- Another default ttl is no contradiction: it is the handle's policy.
        assert(db:collection("s", { key = "u64", value = "raw", ttl = 99 }))
        assert.are.equal(99, db:collection("s"):policy().ttl)
    end)

    it("keeps fixed-length values fixed and inline, 8 bytes longer", function()
        local db, dir = fresh()
        local n = assert(db:collection("n", { key = "u64", value = "number", ttl = 10 }))
        local p = assert(db:collection("p", { key = "u64", value = "struct armdb_spec11_pt", ttl = 10 }))
        assert.is_true(n:put(1, 1.5))
        assert.is_true(p:put(1, { x = 1, y = 2 }))
        assert.is_true(p:put(2, { x = 3, y = 4 }, { ttl = 100 }))
        assert.are.equal(16, n:stats().value_len)
        assert.are.equal(24, p:stats().value_len)
        assert.are.equal(1.5, n:get(1))
        assert.are.equal(2, p:get(1).y)
        tick(11)
        assert.is_nil(n:get(1))
        assert.is_nil(p:get(1))
        assert.are.equal(4, p:get(2).y)
        assert.is_true(db:close())
        assert.are.equal(16, cjson.decode(read(dir .. "/CATALOG")).collections.p.value_len)
        local again = assert(armdb.open(dir, { sync = "none" }))
        defer(function() again:close() end)
        assert.are.equal(3, assert(again:collection("p")):get(2).x)
        local err = raised(function()
            again:collection("h", { key = "u64", value = "struct armdb_spec11_huge", ttl = 1 })
        end)
        assert.are.equal("armdb: collection h: value codec struct armdb_spec11_huge of 4090 bytes leaves no room"
            .. " for the 8-byte expiry of a ttl (at most 4088)", err)
    end)

    it("stamps a batch's puts and compares its checks with values, expired as absent", function()
        local db = fresh()
        local s = assert(db:collection("s", { key = "u64", value = "raw", ttl = 10 }))
        local o = assert(db:collection("o", { key = "u64", value = "raw" }))
        assert.is_true(s:put(1, "one"))
        assert.is_true(s:put(2, "two"))
        tick(5)
        assert.is_true(db:batch(function(b)
            b:check(s, 1, "one")
            b:put(s, 3, "three")
        end))
        tick(6) -- 1 and 2 expired, 3 not
        assert.are.equal("three", s:get(3))
        local ok, msg, code = db:batch(function(b)
            b:check(s, 2, "two")
            b:put(s, 4, "four")
        end)
        assert.is_nil(ok)
        assert.are.equal("batch: check of key 2 in collection s failed: the value differs", msg)
        assert.are.equal(codes.CONFLICT, code)
        assert.is_true(db:batch(function(b) -- expired is absent; across two collections
            b:check(s, 2, nil)
            b:put(s, 2, "two again")
            b:put(o, 1, "plain")
        end))
        assert.are.equal("two again", s:get(2))
        assert.are.equal("plain", o:get(1))
        tick(10)
        assert.is_nil(s:get(2))
        assert.is_nil(s:get(3))
    end)

    it("feeds changes without the expiry, and tells hooks of what it purges", function()
        local db = fresh()
        local s = assert(db:collection("s", { key = "u64", value = "json", ttl = 10 }))
        local seen = {}
        s:on_write(function(k, v) seen[#seen + 1] = { k, v } end)
        assert.is_true(s:put(1, { a = 1 }))
        assert.is_true(s:put(2, { a = 2 }, { ttl = 100 }))
        local got = {}
        for k, v, _, deleted in s:changes(0) do
            got[#got + 1] = { k, v, deleted }
        end
        assert.are.same({ { 1, { a = 1 }, false }, { 2, { a = 2 }, false } }, got)
        tick(10)
        step_until_done(task_of(db, "ttl:s"))
        assert.are.same({ { 1, { a = 1 } }, { 2, { a = 2 } }, { 1 } }, seen)
        assert.are.equal(1, s:count())
    end)

    it("raises on misuse", function()
        local db = fresh()
        local p = assert(db:collection("p", { key = "u64", value = "raw" }))
        local s = assert(db:collection("s", { key = "u64", value = "raw", ttl = 0 }))
        assert.are.equal("armdb: collection p: a write's ttl needs values that carry an expiry: give ttl in the"
            .. " spec when the collection is created", raised(function() p:put(1, "x", { ttl = 5 }) end))
        assert.are.equal("armdb: collection s: unknown write option ttl_ms (ttl is known)",
            raised(function() s:put(1, "x", { ttl_ms = 5 }) end))
        assert.are.equal("armdb: collection s: write option ttl must be a number of seconds >= 0 or false, got"
            .. ' "5"', raised(function() s:put(1, "x", { ttl = "5" }) end))
        assert.are.equal("armdb: collection s: write options must be a table, got number",
            raised(function() s:put(1, "x", 5) end))
        assert.are.equal("armdb: collection p: policy ttl needs values that carry an expiry: give ttl in the"
            .. " spec when the collection is created", raised(function() p:set_policy({ ttl = 5 }) end))
        assert.are.equal("armdb: collection q: policy ttl must be a number of seconds >= 0 (0: no default), got -1",
            raised(function() db:collection("q", { key = "u64", value = "raw", ttl = -1 }) end))
        assert.are.equal("armdb: collection s: unknown policy colour",
            raised(function() s:set_policy({ colour = "red" }) end))
        assert.are.equal("armdb: collection s: set_policy needs a table, got string",
            raised(function() s:set_policy("ttl") end))
        assert.is_nil(db:collection("q"))
        -- Allowed: a default set and removed at run time.
        assert.is_true(s:set_policy({ ttl = 3 }))
        assert.is_true(s:put(1, "x"))
        assert.is_true(s:set_policy({ ttl = false }))
        assert.is_true(s:put(2, "y"))
        tick(4)
        assert.is_nil(s:get(1))
        assert.are.equal("y", s:get(2))
    end)
end)

describe("policy quota", function()
    it("refuses a write past max_keys, writing nothing", function()
        local db = fresh()
        local q = assert(db:collection("q", { key = "u64", value = "raw", max_keys = 3 }))
        for i = 1, 3 do
            assert.is_true(q:put(i, "v"))
        end
        local ok, msg, code = q:put(4, "v")
        assert.is_nil(ok)
        assert.are.equal("q: quota max_keys 3 reached", msg)
        assert.are.equal(codes.FULL, code)
        assert.is_nil(q:get(4))
        assert.are.equal(3, q:count())
        assert.is_true(q:put(2, "overwritten")) -- no new key: fits
        assert.is_true(q:delete(1))
        assert.is_true(q:put(4, "v"))
        assert.are.same({ 2, 3, 4 }, sorted_keys(q:pairs()))
    end)

    it("refuses a write past max_bytes, counting entries as stored", function()
        local db = fresh()
        -- One entry: 16-byte header, 8-byte key, 100-byte value = 124, padded to 128.
        local q = assert(db:collection("q", { key = "u64", value = "raw", max_bytes = 3 * 128 }))
        for i = 1, 3 do
            assert.is_true(q:put(i, string.rep("x", 100)))
        end
        assert.are.equal(384, q:stats().live_bytes)
        local ok, msg, code = q:put(4, "")
        assert.is_nil(ok)
        assert.are.equal("q: quota max_bytes 384 reached", msg)
        assert.are.equal(codes.FULL, code)
        assert.is_true(q:put(3, string.rep("y", 100))) -- the same size in its place
        ok, msg = q:put(3, string.rep("y", 105)) -- 129 bytes, padded to 136
        assert.is_nil(ok)
        assert.are.equal("q: quota max_bytes 384 reached", msg)
        ok, msg, code = q:put(9, string.rep("z", 1000))
        assert.is_nil(ok)
        assert.are.equal("q: quota max_bytes 384 is smaller than the write (1024 bytes)", msg)
        assert.are.equal(codes.FULL, code)
    end)

    it("evicts the least recently written keys, resuming from a cursor", function()
        local db = fresh()
        local q = assert(db:collection("q", { key = "u64", value = "raw", max_keys = 3, on_full = "evict" }))
        for i = 1, 3 do
            assert.is_true(q:put(i, "v" .. i))
        end
        assert.is_true(q:put(1, "v1 again")) -- 1 is now the most recent
        assert.is_true(q:put(4, "v4"))
        assert.are.same({ 1, 3, 4 }, sorted_keys(q:pairs()))
        local cursor = q._policy.cursor
        assert.is_true(cursor > 0)
        assert.is_true(q:put(5, "v5"))
        assert.are.same({ 1, 4, 5 }, sorted_keys(q:pairs()))
        assert.is_true(q._policy.cursor > cursor)
        assert.is_true(q:put(6, "v6"))
        assert.are.same({ 4, 5, 6 }, sorted_keys(q:pairs()))
        assert.are.equal(3, q._policy.evicted)
        -- Over max_bytes too: as many as it takes.
        assert.is_true(q:set_policy({ max_keys = false, max_bytes = 4 * 32 }))
        assert.is_true(q:put(7, string.rep("x", 60))) -- 88 bytes beside 3 of 32: two must go
        assert.are.same({ 6, 7 }, sorted_keys(q:pairs()))
        assert.are.equal("v6", q:get(6))
    end)

    it("tells write hooks of each key it evicts", function()
        local db = fresh()
        local q = assert(db:collection("q", { key = "u64", value = "raw", max_keys = 2, on_full = "evict" }))
        local seen = {}
        q:on_write(function(k, v, old) seen[#seen + 1] = { k, v, old } end, { old = true })
        assert.is_true(q:put(1, "a"))
        assert.is_true(q:put(2, "b"))
        assert.is_true(q:put(3, "c"))
        assert.are.same({ { 1, "a" }, { 2, "b" }, { 1, nil, "a" }, { 3, "c" } }, seen)
    end)

    it("evicts expired keys before live ones, and never the key being written", function()
        local db = fresh()
        local q = assert(db:collection("q", { key = "u64", value = "raw", ttl = 100, max_keys = 3,
            on_full = "evict" }))
        assert.is_true(q:put(1, "old and live"))
        assert.is_true(q:put(2, "live"))
        assert.is_true(q:put(3, "newest but short", { ttl = 1 }))
        tick(2)
        assert.is_true(q:put(4, "v4"))
        assert.are.same({ 1, 2, 4 }, sorted_keys(q:pairs()))
        assert.are.equal(3, q:count()) -- purged, not only hidden
        assert.is_nil(q._policy.evicted)
        -- Now a live key must go: the oldest.
        assert.is_true(q:put(5, "v5"))
        assert.are.same({ 2, 4, 5 }, sorted_keys(q:pairs()))
        -- cas on the oldest key, growing the bytes: others go, not it.
        assert.is_true(q:set_policy({ max_keys = false, max_bytes = q:stats().live_bytes }))
        assert.is_true(q:cas(2, "live", string.rep("L", 40)))
        assert.are.equal(string.rep("L", 40), q:get(2))
        assert.is_nil(q:get(4))
    end)

    it("purges expired keys before refusing: they do not count", function()
        local db = fresh()
        local q = assert(db:collection("q", { key = "u64", value = "raw", ttl = 10, max_keys = 2 }))
        assert.is_true(q:put(1, "a", { ttl = 1 }))
        assert.is_true(q:put(2, "b"))
        local ok, msg = q:put(3, "c")
        assert.is_nil(ok)
        assert.are.equal("q: quota max_keys 2 reached", msg)
        tick(1)
        assert.is_true(q:put(3, "c"))
        assert.are.same({ 2, 3 }, sorted_keys(q:pairs()))
        assert.are.equal(2, q:count())
        ok, msg = q:put(4, "d")
        assert.is_nil(ok)
        assert.are.equal("q: quota max_keys 2 reached", msg)
        -- A batch writing an expired key again and a new one: the purged
        -- key counts as new again, so two keys do not fit beside 3.
        assert.is_true(q:put(2, "b", { ttl = 1 }))
        tick(1)
        ok, msg = db:batch(function(b)
            b:put(q, 2, "b again")
            b:put(q, 5, "e")
        end)
        assert.is_nil(ok)
        assert.are.equal("q: quota max_keys 2 reached", msg)
        assert.are.same({ 3 }, sorted_keys(q:pairs()))
        assert.are.equal(1, q:count())
    end)

    it("admits a batch as a whole: refused, or room made beside its keys", function()
        local db = fresh()
        local r = assert(db:collection("r", { key = "u64", value = "raw", max_keys = 3 }))
        local e = assert(db:collection("e", { key = "u64", value = "raw", max_keys = 3, on_full = "evict" }))
        for i = 1, 3 do
            assert.is_true(r:put(i, "v"))
            assert.is_true(e:put(i, "v"))
        end
        local ok, msg, code = db:batch(function(b)
            b:put(r, 1, "in place")
            b:put(r, 9, "new")
        end)
        assert.is_nil(ok)
        assert.are.equal("r: quota max_keys 3 reached", msg)
        assert.are.equal(codes.FULL, code)
        assert.are.equal("v", r:get(1))
        assert.is_true(db:batch(function(b)
            b:delete(r, 2)
            b:put(r, 9, "new")
        end))
        assert.are.same({ 1, 3, 9 }, sorted_keys(r:pairs()))
        -- Evict: the batch writes 1 (the oldest) and two new keys; 2 and 3 go.
        assert.is_true(db:batch(function(b)
            b:put(e, 1, "kept")
            b:put(e, 10, "x")
            b:put(e, 11, "y")
        end))
        assert.are.same({ 1, 10, 11 }, sorted_keys(e:pairs()))
        assert.are.equal("kept", e:get(1))
        -- Across collections, one refusal stops all of it.
        ok, msg = db:batch(function(b)
            b:put(e, 12, "z")
            b:put(r, 20, "over")
        end)
        assert.is_nil(ok)
        assert.are.equal("r: quota max_keys 3 reached", msg)
        assert.is_nil(r:get(20))
    end)

    it("counts update and cas against the quota", function()
        local db = fresh()
        local q = assert(db:collection("q", { key = "u64", value = "json", max_keys = 2 }))
        assert.is_true(q:put(1, { n = 1 }))
        assert.is_true(q:put(2, { n = 2 }))
        local ok, msg, code = q:cas(3, nil, { n = 3 })
        assert.is_nil(ok)
        assert.are.equal("q: quota max_keys 2 reached", msg)
        assert.are.equal(codes.FULL, code)
        ok, msg, code = q:update(3, function() return { n = 3 } end)
        assert.is_nil(ok)
        assert.are.equal("q: quota max_keys 2 reached", msg)
        assert.are.equal(codes.FULL, code)
        assert.is_false(q:cas(1, { n = 9 }, { n = 10 })) -- a cas bound to fail fails as ever
        assert.is_true(q:cas(1, { n = 1 }, { n = 10 }))
        assert.is_true(q:update(2, function(cur) return { n = cur.n + 1 } end))
        assert.are.same({ n = 3 }, q:get(2))
        assert.is_true(q:set_policy({ on_full = "evict" }))
        assert.is_true(q:update(3, function() return { n = 3 } end))
        assert.are.same({ 2, 3 }, sorted_keys(q:pairs()))
        assert.is_true(q:cas(4, nil, { n = 4 }))
        assert.are.same({ 3, 4 }, sorted_keys(q:pairs()))
    end)

    it("is set and removed at run time, and checked", function()
        local db = fresh()
        local q = assert(db:collection("q", { key = "u64", value = "raw" }))
        for i = 1, 5 do
            assert.is_true(q:put(i, "v"))
        end
        assert.is_true(q:set_policy({ max_keys = 5 }))
        assert.are.same({ max_keys = 5, on_full = "refuse" }, q:policy())
        local ok, msg = q:put(6, "v")
        assert.is_nil(ok)
        assert.are.equal("q: quota max_keys 5 reached", msg)
        assert.is_true(q:set_policy({ max_keys = false }))
        assert.is_true(q:put(6, "v"))
        assert.are.same({}, q:policy())
        assert.are.equal("armdb: collection q: policy max_keys must be a whole number >= 1 or false, got 0",
            raised(function() q:set_policy({ max_keys = 0 }) end))
        assert.are.equal('armdb: collection q: policy on_full must be "refuse" or "evict", got "drop"',
            raised(function() q:set_policy({ on_full = "drop" }) end))
        assert.are.equal("armdb: collection z: unknown spec field max_rows",
            raised(function() db:collection("z", { key = "u64", value = "raw", max_rows = 1 }) end))
    end)
end)

describe("policy compaction and sync", function()
    it("sets the threshold and byte budget of the store, at open and at run time", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "u64", value = "raw",
            compaction = { threshold = 0.5, bytes_per_sec = 50e6 } }))
        local t = c._store:tuning()
        assert.are.equal(0.5, t.compaction_threshold)
        assert.are.equal(50e6, t.compact_bytes_per_sec)
        assert.is_true(t.auto_compact)
        assert.is_true(c:set_policy({ compaction = { threshold = 0.2 } }))
        t = c._store:tuning()
        assert.are.equal(0.2, t.compaction_threshold)
        assert.are.equal(0, t.compact_bytes_per_sec)
        assert.is_true(c:set_policy({ compaction = false }))
        assert.are.equal(0.3, c._store:tuning().compaction_threshold)
        assert.is_nil(c:policy().compaction)
        assert.are.equal("armdb: collection c: policy compaction.threshold must be a number in (0, 1], got 2",
            raised(function() c:set_policy({ compaction = { threshold = 2 } }) end))
        assert.are.equal("armdb: collection c: policy compaction has an unknown field rate (threshold, window and"
            .. " bytes_per_sec are known)", raised(function() c:set_policy({ compaction = { rate = 1 } }) end))
        assert.are.equal('armdb: collection c: policy compaction.window must be two times "HH:MM", got "25:00"',
            raised(function() c:set_policy({ compaction = { window = { "25:00", "01:00" } } }) end))
    end)

    it("compacts only inside its window, opened and closed by its task", function()
        set_clock(at(12, 0))
        local db = fresh()
        local c = assert(db:collection("c", { key = "u64", value = "raw",
            compaction = { window = { "01:00", "05:00" } } }))
        assert.is_false(c._store:tuning().auto_compact)
        local task = task_of(db, "compaction:c")
        assert.are.equal(60, task.every)
        set_clock(at(1, 0))
        assert.is_true(task.step(clock + 1))
        assert.is_true(c._store:tuning().auto_compact)
        set_clock(at(4, 59))
        assert.is_true(task.step(clock + 1))
        assert.is_true(c._store:tuning().auto_compact)
        set_clock(at(5, 0))
        assert.is_true(task.step(clock + 1))
        assert.is_false(c._store:tuning().auto_compact)
        -- A window past midnight; then none: compaction at any time.
        assert.is_true(c:set_policy({ compaction = { window = { "22:00", "02:00" } } }))
        assert.is_false(c._store:tuning().auto_compact)
        set_clock(at(23, 30))
        task.step(clock + 1)
        assert.is_true(c._store:tuning().auto_compact)
        set_clock(at(3, 0))
        task.step(clock + 1)
        assert.is_false(c._store:tuning().auto_compact)
        assert.is_true(c:set_policy({ compaction = { threshold = 0.4 } }))
        assert.is_true(c._store:tuning().auto_compact)
        assert.is_nil(task_of(db, "compaction:c"))
    end)

    it("compacts garbage once the window opens", function()
        set_clock(at(12, 0))
        local db = fresh({ max_file_size = 65536 })
        local c = assert(db:collection("c", { key = "u64", value = "raw",
            compaction = { threshold = 0.2, window = { "01:00", "02:00" } } }))
        local v = string.rep("x", 1000)
        for round = 1, 3 do
            for i = 1, 200 do
                assert.is_true(c:put(i, v .. round))
            end
        end
        assert.is_true(c:stats().dead_bytes > 0)
        assert.are.equal(0, c:stats().compactions)
        set_clock(at(1, 30))
        task_of(db, "compaction:c").step(clock + 1)
        local deadline = os.time() + 20
        while c:stats().compactions == 0 and os.time() < deadline do
            os.execute("sleep 0.05")
        end
        assert.is_true(c:stats().compactions > 0)
        for i = 1, 200 do
            assert.are.equal(v .. 3, c:get(i))
        end
    end)

    it("sets the sync mode per collection, at open and at run time", function()
        local db = fresh() -- the database syncs with mode none
        local a = assert(db:collection("a", { key = "u64", value = "raw", sync = "always" }))
        local n = assert(db:collection("n", { key = "u64", value = "raw" }))
        assert.are.equal("always", a._store:tuning().sync)
        assert.are.equal("none", n._store:tuning().sync)
        local before = a:stats().syncs
        assert.is_true(a:put(1, "durable"))
        assert.is_true(a:stats().syncs > before)
        assert.is_true(a:set_policy({ sync = "none" }))
        before = a:stats().syncs
        assert.is_true(a:put(2, "buffered"))
        assert.are.equal(before, a:stats().syncs)
        assert.is_true(n:set_policy({ sync = "interval", sync_interval_ms = 20 }))
        local t = n._store:tuning()
        assert.are.equal("interval", t.sync)
        assert.are.equal(20, t.sync_interval_ms)
        assert.are.same({ sync = "interval", sync_interval_ms = 20 }, n:policy())
        assert.are.equal('armdb: collection n: policy sync must be "none", "interval" or "always", got "often"',
            raised(function() n:set_policy({ sync = "often" }) end))
        assert.are.equal("armdb: collection n: policy sync_interval_ms must be a whole number from 1 to 60000, got 0",
            raised(function() n:set_policy({ sync_interval_ms = 0 }) end))
    end)
end)

describe("policy.tasks()", function()
    it("lists the tasks of the open collections, which end once closed", function()
        local db = fresh()
        assert(db:collection("b", { key = "u64", value = "raw", ttl = 5,
            compaction = { window = { "01:00", "02:00" } } }))
        assert(db:collection("a", { key = "u64", value = "raw", ttl = 1 }))
        assert(db:collection("plain", { key = "u64", value = "raw", max_keys = 10 }))
        local names = {}
        for _, t in ipairs(policy.tasks(db)) do
            names[#names + 1] = t.name
            assert.is_number(t.every)
            assert.is_function(t.step)
        end
        assert.are.same({ "ttl:a", "ttl:b", "compaction:b" }, names)
        local task = task_of(db, "ttl:a")
        assert.is_true(db:close())
        assert.is_true(task.step(clock + 1))
    end)

    it("takes a deadline on another clock for a short budget", function()
        assert.are.equal(clock + 1, policy.step_end(clock + 1))
        assert.are.equal(clock + policy.STEP_BUDGET, policy.step_end(12345.6)) -- a monotonic clock's
        assert.is_nil(policy.step_end(nil))
        local db = fresh()
        local s = assert(db:collection("s", { key = "u64", value = "raw", ttl = 1 }))
        for i = 1, 100 do
            assert.is_true(s:put(i, "v"))
        end
        tick(2)
        -- The fake clock stands still: the step ends by its key count.
        assert.is_true(task_of(db, "ttl:s").step(12345.6))
        assert.are.equal(0, s:count())
    end)

    it("says whether a collection's compaction window is open", function()
        set_clock(at(3, 0))
        local db = fresh()
        local w = assert(db:collection("w", { key = "u64", value = "raw",
            compaction = { window = { "01:00", "02:00" } } }))
        local p = assert(db:collection("p", { key = "u64", value = "raw" }))
        assert.is_false(policy.compaction_allowed(w))
        assert.is_true(policy.compaction_allowed(p))
        set_clock(at(1, 59))
        assert.is_true(policy.compaction_allowed(w))
    end)
end)
