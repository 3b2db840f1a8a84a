-- db:batch, store:batch and collection:on_write: all or nothing within a
-- collection and across collections (also across a kill -9 of the writer),
-- and the hooks called once per committed write.
local armdb = require("armdb")

local codes = armdb.codes

local helpers = require("helpers")
local defer, tmpdir, q, write, exists = helpers.defer, helpers.tmpdir, helpers.q, helpers.write_file, helpers.exists

local fresh = helpers.fresh_db

local raised = require("helpers").raised

describe("store:batch()", function()
    it("applies puts, deletes and checks all or nothing", function()
        local dir = tmpdir() .. "/s"
        local s = assert(armdb.store(dir, { key_len = 4, shards = 4, sync = "none" }))
        defer(function() s:close() end)
        assert.is_true(s:batch({ { "put", "aaaa", "1" }, { "put", "bbbb", "2" }, { "put", "cccc", "3" } }))
        assert.is_true(s:batch({ { "check", "aaaa", "1" }, { "delete", "bbbb" }, { "put", "dddd", "4" } }))
        assert.are.same({ "1", nil, "3", "4" }, { s:get("aaaa"), s:get("bbbb"), s:get("cccc"), s:get("dddd") })
        local ok, msg, code = s:batch({ { "put", "eeee", "5" }, { "check", "cccc", nil } })
        assert.is_nil(ok)
        assert.are.equal(codes.EXISTS, code)
        assert.matches("ops%[1%]: the check failed: the key is present", msg)
        assert.is_nil(s:get("eeee"))
        ok, msg, code = s:batch({ { "put", "eeee", "5" }, { "delete", "eeee" } })
        assert.is_nil(ok)
        assert.are.equal(codes.INVAL, code)
        assert.matches("ops%[0%] and ops%[1%] both write the same key", msg)
        assert.matches('type must be "put", "delete" or "check"', raised(s.batch, s, { { "get", "aaaa" } }))
        assert.matches("value must be a string", raised(s.batch, s, { { "put", "aaaa" } }))
    end)
end)

describe("db:batch()", function()
    it("writes within one collection atomically, the last write of a key winning", function()
        local db = fresh()
        local users = assert(db:collection("users", { key = "u64", value = "json" }))
        assert(users:put(1, { n = 1 }))
        assert.is_true(db:batch(function(b)
            b:check(users, 1, { n = 1 })
            b:put(users, 1, { n = 2 })
            b:put(users, 2, { n = 0 })
            b:put(users, 2, { n = 3 }) -- replaces the put above
            b:delete("users", 7)
        end))
        assert.are.same({ n = 2 }, users:get(1))
        assert.are.same({ n = 3 }, users:get(2))
        local ok, msg, code = db:batch(function(b)
            b:put(users, 3, { n = 3 })
            b:check(users, 1, { n = 1 })
        end)
        assert.is_nil(ok)
        assert.are.equal(codes.CONFLICT, code)
        assert.are.equal("batch: check of key 1 in collection users failed: the value differs", msg)
        assert.is_nil(users:get(3))
    end)

    it("writes across collections atomically; a failed check anywhere writes nothing", function()
        local db, dir = fresh()
        local users = assert(db:collection("users", { key = "u64", value = "json" }))
        local names = assert(db:collection("names", { key = "string(16)", value = "raw", ordered = true }))
        assert.is_true(db:batch(function(b)
            b:put(users, 1, { name = "ann" })
            b:put(names, "ann", "1")
            b:check(names, "bob", nil)
        end))
        assert.are.same({ name = "ann" }, users:get(1))
        assert.are.equal("1", names:get("ann"))
        assert.is_false(exists(dir .. "/BATCH")) -- the intent is gone once done
        local ok, msg, code = db:batch(function(b)
            b:put(users, 2, { name = "bob" })
            b:put(names, "bob", "2")
            b:check(names, "ann", nil)
        end)
        assert.is_nil(ok)
        assert.are.equal(codes.EXISTS, code)
        assert.are.equal('batch: check of key "ann" in collection names failed: the key is present', msg)
        assert.is_nil(users:get(2))
        assert.is_nil(names:get("bob"))
    end)

    it("applies nothing when the function raises, and refuses misuse", function()
        local db = fresh()
        local users = assert(db:collection("users", { key = "u64", value = "json" }))
        local kept
        assert.are.equal("boom", raised(db.batch, db, function(b)
            kept = b
            b:put(users, 1, { x = 1 })
            error("boom", 0)
        end))
        assert.is_nil(users:get(1))
        assert.matches("the batch is over", raised(kept.put, kept, users, 2, { x = 2 }))
        assert.matches("codec u64: %-1 is out of range", raised(db.batch, db, function(b) b:put(users, -1, {}) end))
        assert.matches("value is nil", raised(db.batch, db, function(b) b:put(users, 1, nil) end))
        assert.matches("batch needs a function", raised(db.batch, db, 5))
        local other = fresh()
        local foreign = assert(other:collection("users", { key = "u64", value = "json" }))
        assert.matches("is not a collection of", raised(db.batch, db, function(b) b:put(foreign, 1, {}) end))
        assert.matches("not in the catalog", raised(db.batch, db, function(b) b:put("nope", 1, {}) end))
    end)

    it("completes a batch across collections that a crash cut short, at the next open", function()
        local db, dir = fresh()
        local users = assert(db:collection("users", { key = "u64", value = "json" }))
        assert(db:collection("names", { key = "string(16)", value = "raw" }))
        assert(users:put(9, { name = "old" }))
        db:close()
        -- As a writer killed after its intent and the first part: the
        -- intent names both parts; only the first is in.
        local hex = function(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
        local k9 = "\0\0\0\0\0\0\0\9"
        write(dir .. "/BATCH", string.format('{"format":1,"parts":['
            .. '{"collection":"users","ops":[["put","%s","%s"]]},'
            .. '{"collection":"names","ops":[["put","%s","%s"],["delete","%s"]]}]}',
            hex(k9), hex('{"name":"new"}'), hex("nine" .. ("\0"):rep(12)), hex("9"), hex("gone" .. ("\0"):rep(12))))
        local s = assert(armdb.store(dir .. "/users", {}))
        assert(s:put(k9, '{"name":"new"}'))
        s:close()
        local again = assert(armdb.open(dir, { sync = "none" }))
        defer(function() again:close() end)
        assert.is_false(exists(dir .. "/BATCH"))
        assert.are.same({ name = "new" }, assert(again:collection("users")):get(9))
        assert.are.equal("9", assert(again:collection("names")):get("nine"))
    end)

    it("is all or nothing across collections when the writer is killed at any moment", function()
        local dir = tmpdir() .. "/db"
        local script = tmpdir() .. "/writer.lua"
        -- Each batch sets key i of both collections to the same counter.
        write(script, [[
local armdb = require("armdb")
local db = assert(armdb.open(arg[1], { sync = "none" }))
local a = assert(db:collection("a", { key = "u32", value = "number" }))
local b = assert(db:collection("b", { key = "u32", value = "number" }))
io.stdout:write("ready\n") io.stdout:flush()
for n = 1, 1e9 do
    local i = n % 16
    assert(db:batch(function(t) t:put(a, i, n) t:put(b, i, n) end))
end
]])
        local env = "LUA_PATH=" .. q(helpers.ROOT .. "/lua/?.lua;" .. helpers.ROOT .. "/lua/?/init.lua;;")
        math.randomseed(os.time())
        for round = 1, 6 do
            local p = io.popen(env .. " luajit " .. q(script) .. " " .. q(dir) .. " & echo $!; wait", "r")
            local pid = p:read("*l")
            assert.are.equal("ready", p:read("*l"))
            os.execute("sleep 0." .. string.format("%02d", math.random(5, 40)))
            os.execute("kill -9 " .. pid)
            p:close()
            local db = assert(armdb.open(dir, { sync = "none" }))
            local a, b = assert(db:collection("a")), assert(db:collection("b"))
            local batches = 0
            for i = 0, 15 do
                assert.are.equal(a:get(i), b:get(i), "round " .. round .. " key " .. i)
                batches = batches + (a:get(i) and 1 or 0)
            end
            assert.is_true(batches > 0, "the writer made no batch before it was killed")
            db:close()
        end
    end)
end)

describe("collection:on_write()", function()
    it("is called once per committed write, with the old value when asked", function()
        local db = fresh()
        local users = assert(db:collection("users", { key = "u64", value = "json" }))
        local seen = {}
        local off = users:on_write(function(k, v, old)
            seen[#seen + 1] = { k = k, v = v and v.n, old = old and old.n }
        end, { old = true })
        assert(users:put(1, { n = 1 }))
        assert(users:put(1, { n = 2 }))
        assert.is_false(users:cas(1, { n = 9 }, { n = 3 })) -- no call
        assert(users:cas(1, { n = 2 }, { n = 3 }))
        assert(users:update(1, function(cur) return { n = cur.n + 1 } end))
        assert.is_false(users:delete(5)) -- absent: no call
        assert(users:delete(1))
        assert(db:batch(function(b)
            b:put(users, 2, { n = 20 })
            b:delete(users, 3) -- absent: no call
        end))
        assert.are.same({
            { k = 1, v = 1 }, { k = 1, v = 2, old = 1 }, { k = 1, v = 3, old = 2 }, { k = 1, v = 4, old = 3 },
            { k = 1, old = 4 }, { k = 2, v = 20 },
        }, seen)
        off()
        assert(users:put(3, { n = 3 }))
        assert.are.equal(6, #seen)
        assert.matches("on_write needs a function", raised(users.on_write, users, 5))
        assert.matches("unknown on_write option", raised(users.on_write, users, print, { new = true }))
    end)

    it("lets an error in a hook reach the writer, the write staying done", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "u32", value = "raw" }))
        c:on_write(function() error("hook failed", 0) end)
        assert.are.equal("hook failed", raised(c.put, c, 1, "x"))
        assert.are.equal("x", c:get(1))
    end)
end)
