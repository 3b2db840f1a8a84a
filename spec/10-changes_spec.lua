-- The change feed from Lua: store:changes() and collection:changes(),
-- last_gsn(), the COMPACTED refusal, live mode, and misuse.
local armdb = require("armdb")

local helpers = require("helpers")
local defer, tmpdir, raised = helpers.defer, helpers.tmpdir, helpers.raised
local fresh = helpers.fresh_db

local codes = armdb.codes

local function fresh_store(opts)
    local o = { key_len = 8, create = true, sync = "none", shards = 4, no_auto_compact = true }
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    local dir = tmpdir() .. "/s"
    local s = assert(armdb.store(dir, o))
    defer(function() s:close() end)
    return s, dir
end

local function key(i)
    return string.format("%08d", i)
end

-- Every change of the feed as a list of {k, v, gsn, deleted}, and its end.
local function collect(obj, since, opts)
    local nxt, last, code = obj:changes(since, opts)
    assert(nxt, last)
    assert.is_nil(code)
    local out = {}
    for k, v, gsn, deleted in nxt do
        out[#out + 1] = { k, v, gsn, deleted }
    end
    return out, last
end

describe("store:changes()", function()
    it("yields every put and delete in GSN order, with its GSN", function()
        local s = fresh_store()
        assert.are.equal(0, s:last_gsn())
        assert.is_true(s:put(key(1), "one"))
        assert.is_true(s:put(key(2), "two"))
        assert.is_true(s:put(key(1), "uno"))
        assert.is_true(s:delete(key(2)))
        local list, last = collect(s, 0)
        assert.are.equal(4, #list)
        assert.are.equal(s:last_gsn(), last)
        assert.are.same({ key(1), "one", false }, { list[1][1], list[1][2], list[1][4] })
        assert.are.same({ key(2), "two", false }, { list[2][1], list[2][2], list[2][4] })
        assert.are.same({ key(1), "uno", false }, { list[3][1], list[3][2], list[3][4] })
        assert.are.same({ key(2), nil, true }, { list[4][1], list[4][2], list[4][4] })
        for i = 2, 4 do
            assert.is_true(list[i][3] > list[i - 1][3])
        end
        assert.are.equal(last, list[4][3])
    end)

    it("starts after since and resumes from the GSN it ran to", function()
        local s = fresh_store()
        for i = 1, 50 do
            assert.is_true(s:put(key(i), "v" .. i))
        end
        local first, upto = collect(s, 0)
        assert.are.equal(50, #first)
        local mid = first[20][3]
        local rest = collect(s, mid)
        assert.are.equal(30, #rest)
        assert.are.equal(key(21), rest[1][1])
        assert.is_true(s:put(key(99), "late"))
        local tail = collect(s, upto)
        assert.are.equal(1, #tail)
        assert.are.same({ key(99), "late" }, { tail[1][1], tail[1][2] })
    end)

    it("is a cut: writes after the call are not in it", function()
        local s = fresh_store()
        for i = 1, 10 do
            assert.is_true(s:put(key(i), "v"))
        end
        local nxt, last = s:changes(0)
        for i = 11, 20 do
            assert.is_true(s:put(key(i), "w"))
        end
        local n = 0
        for _, _, gsn in nxt do
            assert.is_true(gsn <= last)
            n = n + 1
        end
        assert.are.equal(10, n)
    end)

    it("with live = true gives the current keys, least recently written first", function()
        local s = fresh_store()
        for i = 1, 5 do
            assert.is_true(s:put(key(i), "v" .. i))
        end
        assert.is_true(s:put(key(1), "again"))
        assert.is_true(s:delete(key(3)))
        local list = collect(s, 0, { live = true })
        local keys = {}
        for i, c in ipairs(list) do
            keys[i] = c[1]
            assert.is_false(c[4])
        end
        assert.are.same({ key(2), key(4), key(5), key(1) }, keys)
        assert.are.equal("again", list[4][2])
    end)

    it("returns COMPACTED when compaction removed a delete after since", function()
        local s = fresh_store({ max_file_size = 131072, write_buffer_size = 65536 })
        local v = string.rep("x", 100)
        for i = 1, 200 do
            assert.is_true(s:put(key(i), v))
        end
        local since = s:last_gsn()
        for i = 1, 200 do
            assert.is_true(s:delete(key(i)))
        end
        for i = 1000, 3000 do -- later files, so the deletes' file is compacted
            assert.is_true(s:put(key(i), v))
        end
        assert.is_true(s:sync())
        assert.is_true(s:compact())
        assert.is_true(s:compact())
        local nxt, msg, code = s:changes(since)
        assert.is_nil(nxt)
        assert.are.equal(codes.COMPACTED, code)
        assert.matches("changes since GSN " .. since .. " are not all kept", msg, 1, true)
        -- From 0 it is complete: exactly the live keys, no deleted one back.
        local live = {}
        for k, val, _, deleted in assert(s:changes(0)) do
            live[k] = not deleted and val or nil
        end
        local n = 0
        for k, val in pairs(live) do
            n = n + 1
            assert.are.equal(s:get(k), val)
        end
        assert.are.equal(s:count(), n)
    end)

    it("raises on misuse", function()
        local s = fresh_store()
        assert.are.equal("armdb: changes: since must be a GSN (a whole number >= 0), got -1",
            raised(s.changes, s, -1))
        assert.are.equal("armdb: changes: since must be a GSN (a whole number >= 0), got x",
            raised(s.changes, s, "x"))
        assert.are.equal("armdb: unknown changes option limit", raised(s.changes, s, 0, { limit = 1 }))
        assert.are.equal("armdb: changes option live must be a boolean, got string",
            raised(s.changes, s, 0, { live = "yes" }))
        s:close()
        assert.matches("is closed", raised(s.changes, s, 0))
        assert.matches("is closed", raised(s.last_gsn, s))
    end)

    it("closes early when called with true", function()
        local s = fresh_store()
        assert.is_true(s:put(key(1), "a"))
        assert.is_true(s:put(key(2), "b"))
        local nxt = s:changes(0)
        assert.are.equal(key(1), (nxt()))
        assert.is_nil(nxt(true))
        assert.is_nil(nxt())
    end)

    it("is closed with its store", function()
        local s = fresh_store()
        assert.is_true(s:put(key(1), "a"))
        assert.is_true(s:put(key(2), "b"))
        local nxt = s:changes(0)
        assert.is_not_nil(nxt())
        s:close()
        assert.is_nil(nxt())
    end)
end)

describe("collection:changes()", function()
    it("decodes keys and values through the codecs", function()
        local db = fresh()
        local users = assert(db:collection("users", { key = "u64", value = "json" }))
        assert.is_true(users:put(7, { name = "ada" }))
        assert.is_true(users:put(9, { name = "bob" }))
        assert.is_true(users:delete(7))
        local got = {}
        for k, v, gsn, deleted in assert(users:changes(0)) do
            got[#got + 1] = { k, v, deleted }
            assert.is_true(gsn <= users:last_gsn())
        end
        assert.are.same({ { 7, { name = "ada" }, false }, { 9, { name = "bob" }, false }, { 7, nil, true } }, got)
        assert.are.equal(users:last_gsn(), db:last_gsn())
    end)

    it("returns the end GSN with the iterator, and raises once the collection is closed", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "u64", value = "raw" }))
        assert.is_true(c:put(1, "x"))
        local nxt, last = c:changes(0)
        assert.is_function(nxt)
        assert.are.equal(c:last_gsn(), last)
        db:close()
        assert.are.equal("armdb: collection c is closed", raised(c.changes, c, 0))
    end)

    it("db:last_gsn() is the largest over the open collections", function()
        local db = fresh()
        local a = assert(db:collection("a", { key = "u64", value = "raw" }))
        local b = assert(db:collection("b", { key = "u64", value = "raw" }))
        assert.is_true(a:put(1, "x"))
        assert.is_true(b:put(1, "y"))
        assert.are.equal(b:last_gsn(), db:last_gsn())
        assert.is_true(a:last_gsn() < b:last_gsn())
    end)
end)
