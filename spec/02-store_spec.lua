-- armdb.store: the raw store from Lua, every method: the happy path, the
-- failure value with its message and code, and misuse that raises.
local armdb = require("armdb")

local codes = armdb.codes

local helpers = require("helpers")
local defer, tmpdir = helpers.defer, helpers.tmpdir

-- A fresh store in a temp dir, closed and removed when the test ends.
local function fresh(opts)
    local dir = tmpdir()
    local o = { key_len = 8, sync = "none" }
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    local s = assert(armdb.store(dir .. "/s", o))
    defer(function() s:close() end)
    return s, dir .. "/s"
end

describe("armdb.store()", function()
    it("creates a store and reopens it with its data", function()
        local s, path = fresh()
        assert.is_true(s:put("key00001", "one"))
        assert.is_true(s:close())
        local again = assert(armdb.store(path, { sync = "none" }))
        assert.are.equal("one", again:get("key00001"))
        assert.are.equal(8, again:stats().key_len)
        again:close()
    end)

    it("returns nil, message, code for a store it cannot open", function()
        local dir = tmpdir()
        local s, msg, code = armdb.store(dir .. "/none", { create = false, key_len = 8 })
        assert.is_nil(s)
        assert.are.equal(-2, code) -- -ENOENT
        assert.matches("No such file or directory$", msg)
        s, msg, code = armdb.store(dir .. "/s", { key_len = 0 })
        assert.is_nil(s)
        assert.are.equal(codes.INVAL, code)
        assert.matches("key_len", msg, 1, true)
    end)

    it("names the option that contradicts the stored store", function()
        local first, path = fresh()
        first:close()
        local s, msg, code = armdb.store(path, { key_len = 9 })
        assert.is_nil(s)
        assert.are.equal(codes.MISMATCH, code)
        assert.matches("key_len", msg, 1, true)
    end)

    it("reports a store held by another handle as locked", function()
        local _, path = fresh()
        local s, msg, code = armdb.store(path)
        assert.is_nil(s)
        assert.are.equal(codes.LOCKED, code)
        assert.matches("pid " .. "%d+", msg)
    end)

    it("opens read-only beside a writer", function()
        local s, path = fresh()
        assert(s:put("key00001", "v"))
        assert(s:sync())
        local r = assert(armdb.store(path, { read_only = true }))
        defer(function() r:close() end)
        assert.are.equal("v", r:get("key00001"))
        local ok, msg, code = r:put("key00002", "w")
        assert.is_nil(ok)
        assert.are.equal(codes.READONLY, code)
        assert.matches("read%-only", msg)
        assert.is_true(r:stats().read_only)
    end)

    it("raises on misuse", function()
        assert.has_error(function() armdb.store(42) end, "armdb.store: dir must be a string, got number")
        assert.has_error(function() armdb.store("x", 1) end, "armdb.store: opts must be a table, got number")
        assert.has_error(function() armdb.store("x", { bogus = 1 }) end, "armdb: unknown option bogus")
        assert.has_error(function() armdb.store("x", { key_len = "8" }) end,
            "armdb: option key_len must be a non-negative number, got 8")
        assert.has_error(function() armdb.store("x", { sync = "sometimes" }) end,
            'armdb: option sync must be "interval", "none" or "always", got sometimes')
        assert.has_error(function() armdb.store("x", { create = 1 }) end,
            "armdb: option create must be a boolean, got 1")
    end)

    it("takes every sync mode", function()
        for _, mode in ipairs({ "none", "interval", "always" }) do
            local s = fresh({ sync = mode })
            assert.is_true(s:put("key00001", mode))
            assert.are.equal(mode, s:get("key00001"))
        end
    end)
end)

describe("store:put() and store:get()", function()
    it("round-trips values of every size up to the limit", function()
        local s = fresh()
        local sizes = { 0, 1, 100, 4095, 4096, 16383, 16384, 16385, 100000, 1040000 }
        for i, n in ipairs(sizes) do
            local k = string.format("key%05d", i)
            local v = string.rep(string.char(65 + i), n)
            assert.is_true(s:put(k, v))
            assert.are.equal(v, s:get(k)) -- from the write buffer
        end
        assert(s:sync())
        for i, n in ipairs(sizes) do
            assert.are.equal(n, #s:get(string.format("key%05d", i)))
        end
    end)

    it("keeps binary keys and values intact", function()
        local s = fresh()
        local k, v = "\0\1\2\3\255\254\0\0", "\0value\0with\0zeros\255"
        assert.is_true(s:put(k, v))
        assert.are.equal(v, s:get(k))
    end)

    it("returns plain nil for a missing key", function()
        local s = fresh()
        local v, msg = s:get("missing!")
        assert.is_nil(v)
        assert.is_nil(msg)
    end)

    it("returns nil, message, code for a key of the wrong length", function()
        local s = fresh()
        local ok, msg, code = s:put("short", "v")
        assert.is_nil(ok)
        assert.are.equal(codes.KEYLEN, code)
        assert.matches("key of 5 bytes, store .* has key_len 8", msg)
        ok, msg, code = s:get("short")
        assert.is_nil(ok)
        assert.are.equal(codes.KEYLEN, code)
        assert.matches("key length differs from the store's key_len$", msg)
    end)

    it("refuses a value longer than the store takes", function()
        local s = fresh()
        local ok, msg, code = s:put("key00001", string.rep("x", 2 * 1024 * 1024))
        assert.is_nil(ok)
        assert.are.equal(codes.TOOBIG, code)
        assert.matches("value length not accepted by the store$", msg)
        assert.is_nil(s:get("key00001"))
    end)

    it("stores fixed-length values inline", function()
        local s = fresh({ value_len = 4 })
        assert.is_true(s:put("key00001", "abcd"))
        assert.are.equal("abcd", s:get("key00001"))
        local ok, _, code = s:put("key00002", "abc")
        assert.is_nil(ok)
        assert.are.equal(codes.TOOBIG, code)
    end)

    it("raises on a key or value that is not a string", function()
        local s = fresh()
        assert.has_error(function() s:put(1, "v") end, "armdb: key must be a string, got number")
        assert.has_error(function() s:put("key00001", nil) end, "armdb: value must be a string, got nil")
        assert.has_error(function() s:get({}) end, "armdb: key must be a string, got table")
    end)
end)

describe("store:delete()", function()
    it("deletes a key and says whether it was there", function()
        local s = fresh()
        assert(s:put("key00001", "v"))
        assert.is_true(s:delete("key00001"))
        assert.is_nil(s:get("key00001"))
        assert.is_false(s:delete("key00001"))
    end)

    it("returns nil, message, code for a wrong key length, and raises on a non-string", function()
        local s = fresh()
        local ok, _, code = s:delete("k")
        assert.is_nil(ok)
        assert.are.equal(codes.KEYLEN, code)
        assert.has_error(function() s:delete(false) end, "armdb: key must be a string, got boolean")
    end)
end)

describe("store:cas()", function()
    it("sets only from the expected value, or from absence with nil", function()
        local s = fresh()
        assert.is_true(s:cas("key00001", nil, "a"))
        assert.is_false(s:cas("key00001", nil, "b"))
        assert.is_false(s:cas("key00001", "x", "b"))
        assert.are.equal("a", s:get("key00001"))
        assert.is_true(s:cas("key00001", "a", "b"))
        assert.are.equal("b", s:get("key00001"))
        assert.is_false(s:cas("key00002", "a", "b")) -- absent, but a value was expected
    end)

    it("returns nil, message, code for a wrong key length and raises on bad types", function()
        local s = fresh()
        local ok, _, code = s:cas("k", nil, "v")
        assert.is_nil(ok)
        assert.are.equal(codes.KEYLEN, code)
        assert.has_error(function() s:cas("key00001", 1, "v") end, "armdb: value must be a string, got number")
        assert.has_error(function() s:cas("key00001", nil, nil) end, "armdb: value must be a string, got nil")
    end)
end)

describe("store:get_many()", function()
    it("returns what single gets return, nil for the missing", function()
        local s = fresh()
        local keys = {}
        for i = 1, 2500 do -- more than one batch of ARMDB_BATCH_MAX
            keys[i] = string.format("key%05d", i)
            if i % 3 ~= 0 then
                assert(s:put(keys[i], string.rep("v", i % 50) .. i))
            end
        end
        assert(s:put("key00004", string.rep("L", 300000))) -- larger than the scratch: retried
        local got = assert(s:get_many(keys))
        assert.are.equal(2500, got.n)
        for i = 1, 2500 do
            assert.are.equal(s:get(keys[i]), got[i])
        end
    end)

    it("returns nil, message, code for keys of different lengths", function()
        local s = fresh()
        local got, msg, code = s:get_many({ "key00001", "k" })
        assert.is_nil(got)
        assert.are.equal(codes.KEYLEN, code)
        assert.are.equal("keys[2] is 1 bytes, keys[1] is 8", msg)
    end)

    it("raises on a non-table or a non-string key", function()
        local s = fresh()
        assert.has_error(function() s:get_many("key00001") end, "armdb: keys must be an array of strings, got string")
        assert.has_error(function() s:get_many({ "key00001", 5 }) end, "armdb: keys[2] must be a string, got number")
    end)
end)

describe("store:sync(), count() and stats()", function()
    it("count follows puts and deletes; stats report the store", function()
        local s = fresh()
        assert.are.equal(0, s:count())
        for i = 1, 10 do
            assert(s:put(string.format("key%05d", i), "v"))
        end
        assert(s:delete("key00001"))
        assert.are.equal(9, s:count())
        assert.is_true(s:sync())
        local st = assert(s:stats())
        assert.are.equal(9, st.keys)
        assert.are.equal(10, st.puts)
        assert.are.equal(1, st.deletes)
        assert.is_true(st.syncs >= 1)
        assert.is_true(st.io_backend == "io_uring" or st.io_backend == "pwrite")
        assert.are.equal("boolean", type(st.direct_io))
        assert.is_false(st.read_only)
        assert.are.equal(0, st.value_len)
    end)

    it("honours no_uring", function()
        local s = fresh({ no_uring = true })
        assert.are.equal("pwrite", s:stats().io_backend)
    end)
end)

describe("store:compact()", function()
    it("reclaims overwritten and deleted entries, keeps the rest, and reports it in stats", function()
        local s, path = fresh({ max_file_size = 65536, no_auto_compact = true, shards = 2 })
        local want = {}
        for round = 1, 6 do
            for i = 1, 300 do
                local k = string.format("key%05d", i)
                want[k] = string.rep(tostring(round), 200)
                assert(s:put(k, want[k]))
            end
        end
        for i = 1, 300, 3 do
            local k = string.format("key%05d", i)
            assert.is_true(s:delete(k))
            want[k] = nil
        end
        local before = s:stats()
        assert.is_true(s:compact())
        local st = s:stats()
        assert.is_true(st.compactions > 0)
        assert.is_true(st.bytes_reclaimed > 0)
        assert.is_true(st.compact_bytes_written < st.compact_bytes_read)
        assert.is_true(before.write_amplification == 1)
        assert.are.equal((st.bytes_written + st.compact_bytes_written) / st.bytes_written, st.write_amplification)
        assert.is_true(st.write_amplification > 1)
        assert.is_true(st.live_bytes + st.dead_bytes < before.live_bytes + before.dead_bytes)
        assert.is_true(s:close())
        local again = assert(armdb.store(path, { sync = "none" }))
        defer(function() again:close() end)
        local got = {}
        for k, v in again:pairs() do
            got[k] = v
        end
        assert.same(want, got)
    end)

    it("returns nil, message, code on a read-only store", function()
        local _, path = fresh()
        local r = assert(armdb.store(path, { read_only = true }))
        defer(function() r:close() end)
        local ok, msg, code = r:compact()
        assert.is_nil(ok)
        assert.are.equal(codes.READONLY, code)
        assert.matches("read%-only", msg)
    end)
end)

describe("store:pairs()", function()
    it("visits every live pair once", function()
        local s = fresh()
        local want = {}
        for i = 1, 500 do
            local k = string.format("key%05d", i)
            want[k] = "value" .. i
            assert(s:put(k, want[k]))
        end
        assert(s:delete("key00007"))
        want["key00007"] = nil
        local seen = 0
        for k, v in s:pairs() do
            assert.are.equal(want[k], v)
            want[k] = nil
            seen = seen + 1
        end
        assert.are.equal(499, seen)
        assert.is_nil(next(want))
    end)

    it("is closed with the store when a loop is left early", function()
        local s = fresh()
        assert(s:put("key00001", "a"))
        assert(s:put("key00002", "b"))
        local it = s:pairs()
        assert.is_not_nil(it())
        assert.is_true(s:close())
        assert.is_nil(it()) -- the scan was closed with the store: no use after free
    end)
end)

describe("store:range() and store:prefix() on an ordered store", function()
    -- keys of an ordered store, collected from a scan
    local function keys(it)
        local out = {}
        for k in it do
            out[#out + 1] = k
        end
        return table.concat(out, " ")
    end

    local function ordered()
        local s, dir = fresh({ ordered = true, shards = 3 })
        for _, k in ipairs({ "apple---", "apricot-", "banana--", "blueberr", "cherry--", "apple--2" }) do
            assert(s:put(k, k:upper()))
        end
        return s, dir
    end

    it("scans in key order across shards, both ways, with a limit", function()
        local s = ordered()
        assert.are.equal("apple--- apple--2 apricot- banana-- blueberr cherry--", keys(s:pairs()))
        assert.are.equal("cherry-- blueberr banana--", keys(s:pairs({ reverse = true, limit = 3 })))
        assert.are.equal("", keys(s:pairs({ limit = 0 })))
        for k, v in s:pairs({ limit = 1 }) do
            assert.are.equal("apple---", k)
            assert.are.equal("APPLE---", v)
        end
    end)

    it("takes [lo, hi) with bounds shorter than the key", function()
        local s = ordered()
        assert.are.equal("apricot- banana-- blueberr", keys(s:range("apr", "c")))
        assert.are.equal("blueberr banana-- apricot-", keys(s:range("apr", "c", { reverse = true })))
        assert.are.equal("apple--- apple--2", keys(s:range(nil, "apr")))
        assert.are.equal("cherry--", keys(s:range("c", nil)))
        assert.are.equal("", keys(s:range("c", "a")))
    end)

    it("takes a prefix, forwards and in reverse", function()
        local s = ordered()
        assert.are.equal("apple--- apple--2 apricot-", keys(s:prefix("ap")))
        assert.are.equal("apricot- apple--2 apple---", keys(s:prefix("ap", { reverse = true })))
        assert.are.equal("banana-- blueberr", keys(s:prefix("b")))
        assert.are.equal("", keys(s:prefix("zz")))
        assert.are.equal(6, #keys(s:prefix("")):gsub("%S+", "x"):gsub(" ", ""))
    end)

    it("keeps the order across a reopen, and sees later writes in place", function()
        local s, dir = ordered()
        assert(s:close())
        s = assert(armdb.store(dir, { sync = "none" })) -- ordered as created
        defer(function() s:close() end)
        assert(s:put("avocado-", "x"))
        assert(s:delete("banana--"))
        assert.are.equal("apple--- apple--2 apricot- avocado- blueberr cherry--", keys(s:pairs()))
    end)

    it("refuses bounds on an unordered store and bad options, naming the problem", function()
        local s = fresh()
        local ok, err = pcall(s.range, s, "a", "b")
        assert.is_false(ok)
        assert.matches("need an ordered store %(ARMDB_ORDERED%)", err)
        err = select(2, pcall(s.pairs, s, { reverse = true }))
        assert.matches("need an ordered store", err)
        local o = ordered()
        err = select(2, pcall(o.range, o, "012345678", nil))
        assert.matches("lo: 9 bytes, longer than the key length 8", err)
        assert.matches("unknown scan option bogus", select(2, pcall(o.pairs, o, { bogus = 1 })))
        assert.matches("limit must be a whole number", select(2, pcall(o.pairs, o, { limit = -1 })))
        assert.matches("prefix cannot go with lo or hi", select(2, pcall(o.pairs, o, { prefix = "a", lo = "b" })))
        assert.matches("prefix must be a string", select(2, pcall(o.prefix, o, 5)))
    end)
end)

describe("store:close()", function()
    it("is idempotent, and a closed store raises", function()
        local s = fresh()
        assert.is_true(s:close())
        assert.is_true(s:close())
        assert.is_false(s:is_open())
        assert.has_error(function() s:get("key00001") end)
        local ok, err = pcall(s.put, s, "key00001", "v")
        assert.is_false(ok)
        assert.matches("armdb: store .* is closed", err)
    end)

    it("lets a dropped store be collected and its lock taken again", function()
        local dir = tmpdir()
        local s = assert(armdb.store(dir .. "/s", { key_len = 8, sync = "none" }))
        assert(s:put("key00001", "v"))
        s = nil -- luacheck: ignore 311
        collectgarbage()
        collectgarbage()
        local again = assert(armdb.store(dir .. "/s", { sync = "none" }))
        assert.are.equal("v", again:get("key00001"))
        again:close()
    end)
end)

describe("armdb.strerror()", function()
    it("names armdb codes and system errors", function()
        assert.are.equal("key not found", armdb.strerror(codes.NOTFOUND))
        assert.are.equal("No such file or directory", armdb.strerror(-2))
    end)
end)

describe("armdb.store() with shared = true", function()
    it("lets several handles write one store, each reading the others' writes at once", function()
        local dir = tmpdir() .. "/s"
        local a = assert(armdb.store(dir, { key_len = 8, shards = 2, shared = true }))
        defer(function()
            a:close()
        end)
        local b = assert(armdb.store(dir, { shared = true }))
        defer(function()
            b:close()
        end)
        assert(a:put("key00001", "from a"))
        assert.are.equal("from a", b:get("key00001"))
        assert(b:put("key00001", "from b"))
        assert.are.equal("from b", a:get("key00001"))
        assert.is_true(a:cas("key00001", "from b", "cas by a"))
        assert.is_false(b:cas("key00001", "from b", "stale"))
        assert(b:delete("key00001"))
        assert.is_nil(a:get("key00001"))
        local st = assert(a:stats())
        assert.is_true(st.shared)
        assert.is_true(st.shared_applied >= 2)
        assert.are.equal(0, st.shared_repairs)
    end)

    it("is refused beside a single writer, and with read_only, with the reason", function()
        local dir = tmpdir() .. "/s"
        local single = assert(armdb.store(dir, { key_len = 8 }))
        local s, msg, code = armdb.store(dir, { shared = true })
        assert.is_nil(s)
        assert.are.equal(codes.LOCKED, code)
        assert.matches("is locked by pid %d+, which is not in shared mode", msg)
        single:close()
        s, msg, code = armdb.store(dir, { shared = true, read_only = true })
        assert.is_nil(s)
        assert.are.equal(codes.INVAL, code)
        assert.matches("ARMDB_SHARED is for writers", msg, 1, true)
    end)
end)
