-- armdb.open and its collections: every public function of the database
-- and of a collection, with the happy path, the failure value and its exact
-- message, and the misuse that raises.
local ffi = require("ffi")
local armdb = require("armdb")
local cjson = require("cjson").new()

local codes = armdb.codes

ffi.cdef([[
struct armdb_spec04_pt { double x, y; };
struct armdb_spec04_big { double x, y, z; };
]])

local helpers = require("helpers")
local defer, tmpdir = helpers.defer, helpers.tmpdir
local read, write = helpers.read_file, helpers.write_file

local fresh = helpers.fresh_db

local raised = require("helpers").raised

local USERS = { key = "u64", value = "json" }

describe("armdb.open()", function()
    it("creates the directory and an empty CATALOG", function()
        local db, dir = fresh()
        assert.are.equal(dir, db.dir)
        local cat = cjson.decode(read(dir .. "/CATALOG"))
        assert.are.equal(1, cat.format)
        assert.are.same({}, cat.collections)
        assert.are.same({}, db:collections())
    end)

    it("keeps data and specs across a reopen", function()
        local db, dir = fresh()
        local users = assert(db:collection("users", USERS))
        assert.is_true(users:put(7, { name = "ada" }))
        assert.is_true(db:close())
        local again = assert(armdb.open(dir, { sync = "none" }))
        defer(function() again:close() end)
        local u = assert(again:collection("users"))
        assert.are.same({ key = "u64", value = "json", key_len = 8, value_len = 0, ordered = false }, u.spec)
        assert.are.same({ name = "ada" }, u:get(7))
        assert.are.same({ "users" }, again:collections())
    end)

    it("writes the catalog of the contract", function()
        local db, dir = fresh()
        assert(db:collection("users", USERS))
        assert(db:collection("pts", { key = "uuid", value = "struct armdb_spec04_pt" }))
        local cat = cjson.decode(read(dir .. "/CATALOG"))
        assert.are.same({ format = 1, collections = {
            users = { key = "u64", value = "json", key_len = 8, value_len = 0 },
            pts = { key = "uuid", value = "struct armdb_spec04_pt", key_len = 16, value_len = 16 },
        } }, cat)
        local f = io.open(dir .. "/CATALOG.tmp", "rb")
        assert.is_nil(f) -- renamed into place, nothing left behind
    end)

    it("returns nil, message, code where there is no database", function()
        local dir = tmpdir()
        local db, msg, code = armdb.open(dir .. "/none", { create = false })
        assert.is_nil(db)
        assert.are.equal("no database at " .. dir .. "/none (no CATALOG)", msg)
        assert.are.equal(-2, code)
        db, msg, code = armdb.open(dir .. "/none", { read_only = true })
        assert.is_nil(db)
        assert.are.equal("no database at " .. dir .. "/none (no CATALOG)", msg)
        assert.are.equal(-2, code)
        db, msg, code = armdb.open(dir .. "/no/parent")
        assert.is_nil(db)
        assert.are.equal("create directory " .. dir .. "/no/parent: No such file or directory", msg)
        assert.are.equal(-2, code)
    end)

    it("reports a damaged CATALOG as CORRUPT", function()
        local db, dir = fresh()
        assert(db:collection("users", USERS))
        db:close()
        local good = read(dir .. "/CATALOG")
        local cases = {
            { "{nope", "^CATALOG of " .. dir:gsub("%p", "%%%0") .. ": not JSON: " },
            { '{"format":2,"collections":{}}', "format is 2, this armdb reads format 1" },
            { '{"collections":{}}', "format is nil, this armdb reads format 1" },
            { "[1,2]", "format is nil, this armdb reads format 1" },
            { '"text"', "not a JSON object" },
            { '{"format":1}', "collections is not an object" },
            { '{"format":1,"collections":{"../x":{}}}', 'collection name "../x" is not valid' },
            { good:gsub('"key_len":8', '"key_len":4'), "collection users: key_len is 4, codec u64 has 8" },
            { good:gsub('"u64"', '"u17"'), 'collection users: unknown key codec "u17"' },
            { good:gsub('"value_len":0', '"value_len":5'), "collection users: value_len is 5, codec json has 0" },
            { good:gsub('"value_len":0', '"value_len":-1'), "collection users: value_len -1 is not 0..4096" },
            { good:gsub('"value":"json"', '"value":7'), "collection users: value is not a codec name" },
        }
        for _, case in ipairs(cases) do
            write(dir .. "/CATALOG", case[1])
            local d, msg, code = armdb.open(dir)
            assert.is_nil(d, case[1])
            assert.are.equal(codes.CORRUPT, code)
            if case[2]:sub(1, 1) == "^" then
                assert.matches(case[2], msg)
            else
                assert.are.equal("CATALOG of " .. dir .. ": " .. case[2], msg)
            end
        end
    end)

    it("raises on bad arguments and options", function()
        assert.are.equal("armdb.open: dir must be a non-empty string, got 5", raised(armdb.open, 5))
        assert.are.equal('armdb.open: dir must be a non-empty string, got ""', raised(armdb.open, ""))
        assert.are.equal("armdb.open: opts must be a table, got string", raised(armdb.open, "x", "y"))
        assert.are.equal("armdb.open: unknown option bogus", raised(armdb.open, "x", { bogus = 1 }))
        assert.are.equal("armdb.open: option key_len is set per collection, by its codec",
            raised(armdb.open, "x", { key_len = 8 }))
        assert.are.equal("armdb.open: option value_len is set per collection, by its codec",
            raised(armdb.open, "x", { value_len = 8 }))
        assert.are.equal("armdb.open: option shards must be a number, got string",
            raised(armdb.open, "x", { shards = "4" }))
        assert.are.equal('armdb.open: option sync must be "interval", "none" or "always", got "never"',
            raised(armdb.open, "x", { sync = "never" }))
        assert.are.equal("armdb.open: option create must be a boolean, got number",
            raised(armdb.open, "x", { create = 1 }))
    end)

    it("applies the store options to every collection", function()
        local db = fresh({ shards = 3 })
        local a = assert(db:collection("a", { key = "u32", value = "raw" }))
        local b = assert(db:collection("b", { key = "uuid", value = "number" }))
        assert.are.equal(3, a:stats().shards)
        assert.are.equal(3, b:stats().shards)
        assert.are.equal(8, b:stats().value_len)
    end)
end)

describe("db:collection()", function()
    it("creates a collection once and returns the same object again", function()
        local db, dir = fresh()
        local users = assert(db:collection("users", USERS))
        assert.are.equal("users", users.name)
        assert.are.equal(users, db:collection("users", USERS))
        assert.are.equal(users, db:collection("users"))
        assert.are.equal(8, users:stats().key_len)
        assert.is_truthy(io.open(dir .. "/users/"):close()) -- its store directory
    end)

    it("returns MISMATCH for a spec contradicting the catalog", function()
        local db, dir = fresh()
        assert(db:collection("users", USERS))
        local c, msg, code = db:collection("users", { key = "u32", value = "json" })
        assert.is_nil(c)
        assert.are.equal("collection users: key is u64 in the catalog, the spec asks for u32", msg)
        assert.are.equal(codes.MISMATCH, code)
        db:close()
        -- and after a reopen, from the catalog on disk
        local again = assert(armdb.open(dir, { sync = "none" }))
        defer(function() again:close() end)
        c, msg, code = again:collection("users", { key = "u64", value = "raw" })
        assert.is_nil(c)
        assert.are.equal("collection users: value is json in the catalog, the spec asks for raw", msg)
        assert.are.equal(codes.MISMATCH, code)
        assert(again:collection("pts", { key = "u32", value = "struct armdb_spec04_pt" }))
        c, msg, code = again:collection("pts", { key = "u32", value = "struct armdb_spec04_big" })
        assert.is_nil(c)
        assert.are.equal("collection pts: value is struct armdb_spec04_pt in the catalog, the spec asks for"
            .. " struct armdb_spec04_big", msg)
        assert.are.equal(codes.MISMATCH, code)
    end)

    it("returns NOTFOUND for an unknown collection without a spec", function()
        local db, dir = fresh()
        local c, msg, code = db:collection("ghost")
        assert.is_nil(c)
        assert.are.equal("collection ghost is not in the catalog of " .. dir .. "; give its spec to create it", msg)
        assert.are.equal(codes.NOTFOUND, code)
    end)

    it("refuses to create a collection in a read-only database", function()
        local db, dir = fresh()
        local users = assert(db:collection("users", USERS))
        assert(users:put(1, "one"))
        assert(db:sync())
        local ro = assert(armdb.open(dir, { read_only = true }))
        defer(function() ro:close() end)
        local c, msg, code = ro:collection("other", USERS)
        assert.is_nil(c)
        assert.are.equal("collection other is not in the catalog of " .. dir .. ", and the database is read-only", msg)
        assert.are.equal(codes.READONLY, code)
        -- but reads an existing one beside the live writer
        local r = assert(ro:collection("users"))
        assert.are.equal("one", r:get(1))
        assert.is_true(r:stats().read_only)
        local ok, _, wcode = r:put(2, "two")
        assert.is_nil(ok)
        assert.are.equal(codes.READONLY, wcode)
    end)

    it("sees collections another handle added after open", function()
        local db, dir = fresh()
        local ro = assert(armdb.open(dir, { read_only = true }))
        defer(function() ro:close() end)
        assert(db:collection("late", USERS))
        assert.are.same({ key = "u64", value = "json", key_len = 8, value_len = 0, ordered = false },
            assert(ro:collection("late")).spec)
    end)

    it("passes the store's LOCKED through for a second writer", function()
        local db, dir = fresh()
        assert(db:collection("users", USERS))
        local other = assert(armdb.open(dir, { sync = "none" }))
        defer(function() other:close() end)
        local c, msg, code = other:collection("users")
        assert.is_nil(c)
        assert.are.equal(codes.LOCKED, code)
        assert.matches("store " .. (dir .. "/users"):gsub("%p", "%%%0") .. " is locked by pid %d+", msg)
    end)

    it("records ordered in the catalog and holds a later spec to it", function()
        local db, dir = fresh()
        assert(db:collection("o", { key = "u64", value = "json", ordered = true }))
        assert.matches('"o":{[^}]*"ordered":true}', read(dir .. "/CATALOG"))
        local c, msg, code = db:collection("o", { key = "u64", value = "json" })
        assert.is_nil(c)
        assert.are.equal("collection o is ordered in the catalog, the spec asks for ordered = false", msg)
        assert.are.equal(codes.MISMATCH, code)
        assert.matches("spec field ordered must be a boolean", raised(db.collection, db, "p",
            { key = "u64", value = "json", ordered = 1 }))
        db:close()
        local again = assert(armdb.open(dir, { sync = "none" }))
        defer(function() again:close() end)
        assert.is_true(assert(again:collection("o")).spec.ordered) -- from the catalog
    end)

    it("rebuilds an FFI value codec from the catalog, or says it cannot", function()
        local db, dir = fresh()
        local pts = assert(db:collection("pts", { key = "u32", value = ffi.typeof("struct armdb_spec04_pt") }))
        assert(pts:put(1, ffi.new("struct armdb_spec04_pt", 3, 4)))
        db:close()
        local again = assert(armdb.open(dir, { sync = "none" }))
        assert.are.equal(4, assert(again:collection("pts")):get(1).y)
        again:close()
        write(dir .. "/CATALOG", (read(dir .. "/CATALOG"):gsub("armdb_spec04_pt", "armdb_spec04_nope")))
        again = assert(armdb.open(dir, { sync = "none" }))
        defer(function() again:close() end)
        local c, msg, code = again:collection("pts")
        assert.is_nil(c)
        assert.matches("^collection pts: value codec struct armdb_spec04_nope of the catalog is not known here %(.*%);"
            .. " declare it or pass the spec$", msg)
        assert.are.equal(codes.INVAL, code)
    end)

    it("raises on names that could leave the directory, and on bad specs", function()
        local db = fresh()
        local why = " is not valid (1..64 bytes of A-Z a-z 0-9 _ . -, not starting with . or -)"
        for _, name in ipairs({ "../x", "a/b", ".", "..", "", string.rep("n", 65), "-x", ".hidden", "a b",
            "a\0b" }) do
            assert.are.equal("armdb: collection name " .. require("armdb.codecs").show(name) .. why,
                raised(db.collection, db, name, USERS))
        end
        assert(db:collection(string.rep("n", 64), USERS))
        assert(db:collection("A-1.b_2", USERS))
        assert.are.equal("armdb: collection name must be a string, got number", raised(db.collection, db, 5))
        assert.are.equal("armdb: collection c: spec must be a table, got string", raised(db.collection, db, "c", "u64"))
        assert.are.equal("armdb: collection c: unknown spec field keys",
            raised(db.collection, db, "c", { keys = "u64", value = "raw" }))
        assert.are.equal("armdb: collection c: spec needs a key and a value codec",
            raised(db.collection, db, "c", { key = "u64" }))
        assert.are.equal('armdb: unknown key codec "u63" (bytes(N), string(N), u32, u64, i64 or uuid)',
            raised(db.collection, db, "c", { key = "u63", value = "raw" }))
        assert.are.same({ "A-1.b_2", string.rep("n", 64) }, db:collections()) -- nothing else was created
    end)
end)

describe("db:collections()", function()
    it("lists the catalog's collections, sorted", function()
        local db, dir = fresh()
        for _, name in ipairs({ "b", "a", "c_2", "B" }) do
            assert(db:collection(name, USERS))
        end
        assert.are.same({ "B", "a", "b", "c_2" }, db:collections())
        write(dir .. "/CATALOG", "{nope")
        local names, msg, code = db:collections()
        assert.is_nil(names)
        assert.matches("^CATALOG of .*: not JSON: ", msg)
        assert.are.equal(codes.CORRUPT, code)
    end)
end)

describe("the CATALOG with two handles", function()
    it("keeps the collections both add, and checks specs the other wrote", function()
        local one, dir = fresh()
        local two = assert(armdb.open(dir, { sync = "none" }))
        defer(function() two:close() end)
        assert(one:collection("a", USERS))
        assert(two:collection("b", { key = "u32", value = "raw" })) -- two never saw "a"
        assert.are.same({ "a", "b" }, one:collections())
        local cat = cjson.decode(read(dir .. "/CATALOG")).collections
        assert.are.equal("u64", cat.a.key)
        assert.are.equal("u32", cat.b.key)
        local c, msg, code = two:collection("a", { key = "i64", value = "json" })
        assert.is_nil(c)
        assert.are.equal("collection a: key is u64 in the catalog, the spec asks for i64", msg)
        assert.are.equal(codes.MISMATCH, code)
    end)

    it("returns the write failure and leaves the catalog as it was", function()
        local db, dir = fresh()
        assert(db:collection("a", USERS))
        local before = read(dir .. "/CATALOG")
        assert(os.execute("mkdir '" .. dir .. "/CATALOG.tmp'") == 0) -- in the way of the temp file
        local c, msg, code = db:collection("b", USERS)
        assert.is_nil(c)
        assert.are.equal("CATALOG of " .. dir .. ": create " .. dir .. "/CATALOG.tmp: Is a directory", msg)
        assert.are.equal(-21, code) -- -EISDIR
        assert.are.equal(before, read(dir .. "/CATALOG"))
        assert.are.same({ "a" }, db:collections())
    end)
end)

describe("db:sync() and db:stats()", function()
    it("syncs every open collection and sums their stats", function()
        local db, dir = fresh()
        local a = assert(db:collection("a", { key = "u32", value = "raw" }))
        local b = assert(db:collection("b", { key = "string(8)", value = "lua" }))
        for i = 1, 5 do
            assert(a:put(i, "v" .. i))
        end
        assert(b:put("x", { 1 }))
        assert.is_true(db:sync())
        local st = db:stats()
        assert.are.equal(dir, st.dir)
        assert.are.equal(2, st.catalog)
        assert.are.equal(2, st.totals.collections)
        assert.are.equal(5, st.collections.a.keys)
        assert.are.equal(1, st.collections.b.keys)
        assert.are.equal(6, st.totals.keys)
        assert.are.equal(6, st.totals.puts)
        assert.are.equal("lua", st.collections.b.value)
        assert.is_nil(st.totals.key_len) -- settings are not summed
    end)
end)

describe("db:close()", function()
    it("closes every collection once; later use raises", function()
        local db, dir = fresh()
        local users = assert(db:collection("users", USERS))
        assert.is_true(db:close())
        assert.is_true(db:close())
        assert.is_false(db:is_open())
        assert.are.equal("armdb: collection users is closed", raised(users.get, users, 1))
        assert.are.equal("armdb: collection users is closed", raised(users.put, users, 1, "x"))
        assert.are.equal("armdb: database " .. dir .. " is closed", raised(db.collection, db, "users"))
        assert.are.equal("armdb: database " .. dir .. " is closed", raised(db.sync, db))
        -- its stores were released: a new handle takes them
        local again = assert(armdb.open(dir))
        defer(function() again:close() end)
        assert(again:collection("users"))
    end)
end)

describe("collection:put() and get()", function()
    it("stores and decodes values; a missing key is nil", function()
        local db = fresh()
        local users = assert(db:collection("users", USERS))
        assert.is_true(users:put(1, { name = "ada", langs = { "lua", "c" } }))
        assert.are.same({ name = "ada", langs = { "lua", "c" } }, users:get(1))
        assert.is_nil(users:get(2))
        assert.are.equal(0, select("#", users:get(2)) - 1) -- exactly one nil
        local big = assert(db:collection("big", { key = "i64", value = "raw" }))
        local v = string.rep("x", 100000)
        assert.is_true(big:put(-5, v))
        assert.are.equal(v, big:get(-5))
        local nums = assert(db:collection("nums", { key = "uuid", value = "number" }))
        local id = "00000000-0000-0000-0000-00000000000A"
        assert.is_true(nums:put(id, 0.1))
        assert.are.equal(0.1, nums:get(id:lower()))
    end)

    it("raises on keys and values the codecs refuse", function()
        local db = fresh()
        local users = assert(db:collection("users", USERS))
        assert.are.equal("armdb: codec u64: -1 is out of range 0..2^64-1", raised(users.put, users, -1, {}))
        assert.are.equal('armdb: codec u64: "1" is not an integer', raised(users.get, users, "1"))
        assert.are.equal("armdb: collection users: value is nil (use delete to remove a key)",
            raised(users.put, users, 1, nil))
        assert.are.equal("armdb: codec json: a function cannot be encoded: Cannot serialise function: type not"
            .. " supported", raised(users.put, users, 1, print))
        local ok, err = pcall(function()
            users:put(0.5, "x") -- the error points here
        end)
        assert.is_false(ok)
        assert.matches("04%-collection_spec%.lua:%d+: armdb: codec u64: 0.5 is not an integer$", err)
    end)

    it("returns CORRUPT for stored bytes the codec cannot decode", function()
        local db, dir = fresh()
        local users = assert(db:collection("users", USERS))
        assert(users:put(1, { ok = true }))
        db:close()
        local raw = assert(armdb.store(dir .. "/users", { sync = "none" }))
        assert(raw:put("\0\0\0\0\0\0\0\2", "{not json"))
        raw:close()
        local again = assert(armdb.open(dir, { sync = "none" }))
        defer(function() again:close() end)
        users = assert(again:collection("users"))
        local v, msg, code = users:get(2)
        assert.is_nil(v)
        assert.matches("^collection users: value of key 2 is not JSON: ", msg)
        assert.are.equal(codes.CORRUPT, code)
        v, msg, code = users:get_many({ 1, 2 })
        assert.is_nil(v)
        assert.matches("^collection users: value of key 2 is not JSON: ", msg)
        assert.are.equal(codes.CORRUPT, code)
        assert.has_error(function()
            for _ in users:pairs() do -- luacheck: ignore
            end
        end)
        assert.are.same({ ok = true }, users:get(1))
    end)
end)

describe("collection:delete()", function()
    it("deletes a key: true, then false", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "string(10)", value = "raw" }))
        assert(c:put("k", "v"))
        assert.is_true(c:delete("k"))
        assert.is_false(c:delete("k"))
        assert.is_nil(c:get("k"))
        assert.are.equal('armdb: codec string(10): "elevenbytes" is 11 bytes, more than 10',
            raised(c.delete, c, "elevenbytes"))
    end)
end)

describe("collection:cas()", function()
    it("sets only when the current value is the old one", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "u32", value = "number" }))
        assert.is_true(c:cas(1, nil, 10))     -- absent -> set
        assert.is_false(c:cas(1, nil, 11))    -- present: refused
        assert.is_false(c:cas(1, 9, 11))      -- wrong old
        assert.are.equal(10, c:get(1))
        assert.is_true(c:cas(1, 10, 12))
        assert.are.equal(12, c:get(1))
        assert.are.equal("armdb: collection c: value is nil (use delete to remove a key)",
            raised(c.cas, c, 1, 12, nil))
        assert.are.equal('armdb: codec number: "9" is not a number', raised(c.cas, c, 1, "9", 1))
    end)
end)

describe("collection:update()", function()
    it("applies fn to the current value; nil writes nothing", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "u64", value = "lua" }))
        local seen = "unset"
        local ok, new = c:update(1, function(v)
            seen = v
            return { n = 1 }
        end)
        assert.is_nil(seen) -- absent
        assert.is_true(ok)
        assert.are.same({ n = 1 }, new)
        assert.is_true(c:update(1, function(v)
            v.n = v.n + 1
            return v
        end))
        assert.are.same({ n = 2 }, c:get(1))
        assert.is_false(c:update(1, function() return nil end))
        assert.are.same({ n = 2 }, c:get(1))
        assert.are.equal("armdb: collection c: update needs a function, got string", raised(c.update, c, 1, "f"))
    end)

    it("retries when another write lands between its read and its write", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "u32", value = "number" }))
        assert(c:put(1, 100))
        local calls = 0
        assert.is_true(c:update(1, function(v)
            calls = calls + 1
            if calls == 1 then
                assert(c:put(1, 500)) -- a concurrent writer
            end
            return v + 1
        end))
        assert.are.equal(2, calls)
        assert.are.equal(501, c:get(1)) -- the second call saw 500
    end)

    it("retries after a coroutine's write while fn was suspended", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "string(4)", value = "json" }))
        assert(c:put("k", { n = 0 }))
        local seen = {}
        local co = coroutine.wrap(function()
            return c:update("k", function(v)
                seen[#seen + 1] = v.n
                coroutine.yield("paused")
                v.n = v.n + 1
                return v
            end)
        end)
        assert.are.equal("paused", co())
        assert(c:put("k", { n = 10 })) -- lands while update waits
        assert.are.equal("paused", co()) -- conflict: fn called again, pauses again
        assert.is_true(co())
        assert.are.same({ 0, 10 }, seen)
        assert.are.same({ n = 11 }, c:get("k"))
    end)

    it("gives up after 100 conflicts", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "u32", value = "number" }))
        assert(c:put(7, 0))
        local calls = 0
        local ok, msg, code = c:update(7, function(v)
            calls = calls + 1
            assert(c:put(7, v + 1)) -- always beaten
            return -1
        end)
        assert.is_nil(ok)
        assert.are.equal("update of 7 in collection c: gave up after 100 conflicts", msg)
        assert.are.equal(codes.CONFLICT, code)
        assert.are.equal(100, calls)
        assert.are.equal(100, c:get(7))
    end)
end)

describe("collection:count(), pairs() and get_many()", function()
    it("counts, scans decoded pairs and reads many keys", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "uuid", value = "struct armdb_spec04_pt" }))
        local ids = {}
        for i = 1, 20 do
            ids[i] = string.format("%08x-0000-4000-8000-%012x", i, i * 7)
            assert(c:put(ids[i], { i, -i }))
        end
        assert.are.equal(20, c:count())
        local seen = 0
        for k, v in c:pairs() do
            local i = tonumber(k:sub(1, 8), 16)
            assert.are.equal(ids[i], k)
            assert.are.equal(i, v.x)
            assert.are.equal(-i, v.y)
            seen = seen + 1
        end
        assert.are.equal(20, seen)
        local many = c:get_many({ ids[3], "ffffffff-0000-4000-8000-000000000000", ids[20] })
        assert.are.equal(3, many.n)
        assert.are.equal(3, many[1].x)
        assert.is_nil(many[2])
        assert.are.equal(20, many[3].x)
        assert.are.same({ n = 0 }, c:get_many({}))
        assert.are.equal("armdb: collection c: get_many needs an array of keys, got string",
            raised(c.get_many, c, "k"))
        assert.are.equal('armdb: codec uuid: "nope" is not a uuid (8-4-4-4-12 hex digits)',
            raised(c.get_many, c, { ids[1], "nope" }))
    end)
end)

describe("collection:stats()", function()
    it("reports the store's stats", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "u64", value = "json" }))
        assert(c:put(1, "x"))
        local st = c:stats()
        assert.are.equal(1, st.keys)
        assert.are.equal("c", st.name)
        assert.are.equal("u64", st.key)
        assert.are.equal("json", st.value)
        assert.are.equal(8, st.key_len)
        db:close()
        assert.are.equal("armdb: collection c is closed", raised(c.stats, c))
    end)
end)

describe("ordered collections: pairs(), range() and prefix()", function()
    local function collect(it)
        local ks, vs = {}, {}
        for k, v in it do
            ks[#ks + 1] = k
            vs[#vs + 1] = v
        end
        return ks, vs
    end

    it("scans u64 keys in numeric order, ranges and reverse with a limit", function()
        local db = fresh()
        local c = assert(db:collection("n", { key = "u64", value = "json", ordered = true }))
        for _, i in ipairs({ 300, 2, 70000, 1, 256, 65536, 0 }) do
            assert(c:put(i, { i = i }))
        end
        local ks, vs = collect(c:pairs())
        assert.are.same({ 0, 1, 2, 256, 300, 65536, 70000 }, ks)
        assert.are.equal(256, vs[4].i)
        assert.are.same({ 2, 256, 300 }, (collect(c:range(2, 301))))
        assert.are.same({ 70000, 65536 }, (collect(c:range(257, nil, { reverse = true, limit = 2 }))))
        assert.are.same({ 300, 256 }, (collect(c:range(nil, 301, { reverse = true, limit = 2 }))))
        assert.are.same({ 70000, 65536 }, (collect(c:pairs({ reverse = true, limit = 2 }))))
        assert.are.same({}, (collect(c:range(300, 300))))
        -- A snapshot is the collection as of the call.
        local it = c:range(1, 300, { snapshot = true })
        assert(c:put(255, { i = 255 }))
        assert(c:delete(2))
        assert.are.same({ 1, 2, 256 }, (collect(it)))
        assert.are.same({ 1, 255, 256 }, (collect(c:range(1, 300, { snapshot = true }))))
    end)

    it("orders i64 keys with negatives first", function()
        local db = fresh()
        local c = assert(db:collection("i", { key = "i64", value = "number", ordered = true }))
        for _, i in ipairs({ 5, -1, 0, -1000, 1000 }) do
            assert(c:put(i, i))
        end
        assert.are.same({ -1000, -1, 0, 5, 1000 }, (collect(c:pairs())))
        assert.are.same({ -1, 0 }, (collect(c:range(-1, 5))))
    end)

    it("takes string prefixes, and keys shorter than the width sort first", function()
        local db = fresh()
        local c = assert(db:collection("s", { key = "string(12)", value = "raw", ordered = true }))
        for _, n in ipairs({ "user:10", "user:1", "user:2", "usa", "group:1" }) do
            assert(c:put(n, n:upper()))
        end
        local ks, vs = collect(c:prefix("user:"))
        assert.are.same({ "user:1", "user:10", "user:2" }, ks)
        assert.are.same({ "USER:1", "USER:10", "USER:2" }, vs)
        assert.are.same({ "user:2", "user:10", "user:1" }, (collect(c:prefix("user:", { reverse = true }))))
        assert.are.same({ "group:1", "usa", "user:1", "user:10", "user:2" }, (collect(c:pairs())))
        assert.matches("prefix of 13 bytes is longer than its 12%-byte keys",
            raised(c.prefix, c, "0123456789abc"))
    end)

    it("refuses ordered scans on an unordered collection and bad arguments", function()
        local db = fresh()
        local c = assert(db:collection("c", { key = "u64", value = "json" }))
        local o = assert(db:collection("o", { key = "u64", value = "json", ordered = true }))
        assert(c:put(1, "x"))
        assert.are.equal("armdb: collection c is not ordered: range needs a collection created with ordered = true",
            raised(c.range, c, 1, 2))
        assert.matches("prefix needs a collection created with ordered", raised(c.prefix, c, "a"))
        assert.matches("a reverse scan needs a collection", raised(c.pairs, c, { reverse = true }))
        assert.are.equal(1, #(collect(c:pairs({ limit = 5 })))) -- limit alone works anywhere
        assert.matches("prefix needs string%(N%) or bytes%(N%) keys, not u64", raised(o.prefix, o, "a"))
        assert.matches("codec u64: %-1 is out of range", raised(o.range, o, -1, 5))
        assert.matches("unknown scan option lo", raised(o.pairs, o, { lo = 1 }))
        db:close()
        assert.are.equal("armdb: collection o is closed", raised(o.range, o, 1, 2))
    end)
end)
