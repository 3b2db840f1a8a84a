-- Encrypted stores and databases from Lua: the key's two forms, wrong and
-- missing keys, the cipher option, rotation (also one cut short), and no
-- plaintext in any file, batch intents included.
local armdb = require("armdb")
local store = require("armdb.store")
local codecs = require("armdb.codecs")

local codes = armdb.codes
local helpers = require("helpers")
local defer, tmpdir, q, write, exists = helpers.defer, helpers.tmpdir, helpers.q, helpers.write_file, helpers.exists
local raised = helpers.raised

local KEY_A = string.rep("\x11", 16) .. string.rep("\x22", 16)
local KEY_B_HEX = string.rep("0123456789abcdef", 4)
local KEY_B = codecs.from_hex(KEY_B_HEX)

-- Files under dir holding the bytes of s.
local function files_with(dir, s)
    local found = {}
    local p = assert(io.popen("find " .. q(dir) .. " -type f"))
    for path in p:lines() do
        if helpers.read_file(path):find(s, 1, true) then
            found[#found + 1] = path
        end
    end
    p:close()
    return found
end

describe("an encrypted store", function()
    it("takes its key as 32 bytes or as 64 hex digits, and no other way", function()
        local dir = tmpdir() .. "/s"
        local s = assert(armdb.store(dir, { key_len = 4, encryption_key = KEY_B, sync = "none" }))
        assert.is_true(s:put("abcd", "value one"))
        assert.is_true(s:close())
        s = assert(armdb.store(dir, { encryption_key = KEY_B_HEX }))
        defer(function() s:close() end)
        assert.are.equal("value one", s:get("abcd"))
        for _, bad in ipairs({ "short", string.rep("x", 33), string.rep("g", 64), 42 }) do
            local msg = raised(armdb.store, tmpdir() .. "/t", { key_len = 4, encryption_key = bad })
            assert.matches("encryption_key must be 32 bytes or 64 hexadecimal digits", msg)
            if type(bad) == "string" then
                assert.is_nil(msg:find(bad, 1, true)) -- the key is never shown
            end
        end
    end)

    it("fails to open with a wrong key or none, and a plain store refuses a key", function()
        local dir = tmpdir() .. "/s"
        local s = assert(armdb.store(dir, { key_len = 4, encryption_key = KEY_A }))
        assert.is_true(s:put("abcd", "v"))
        assert.is_true(s:close())
        local ok, msg, code = armdb.store(dir, { encryption_key = KEY_B })
        assert.is_nil(ok)
        assert.are.equal(codes.BADKEY, code)
        assert.matches("not the key of store", msg)
        ok, msg, code = armdb.store(dir, {})
        assert.is_nil(ok)
        assert.are.equal(codes.BADKEY, code)
        assert.matches("is encrypted, and no key was given", msg)
        local plain = tmpdir() .. "/p"
        assert(armdb.store(plain, { key_len = 4 })):close()
        ok, msg, code = armdb.store(plain, { encryption_key = KEY_A })
        assert.is_nil(ok)
        assert.are.equal(codes.MISMATCH, code)
        assert.matches("is not encrypted", msg)
    end)

    it("uses AES-256-GCM when asked, where the CPU has it", function()
        local dir = tmpdir() .. "/s"
        local s, msg, code = armdb.store(dir, { key_len = 4, encryption_key = KEY_A, cipher = "aes-256-gcm" })
        if s == nil then
            assert.are.equal(codes.INVAL, code)
            assert.matches("AES", msg)
            return
        end
        assert.is_true(s:put("abcd", "aes"))
        assert.is_true(s:close())
        s = assert(armdb.store(dir, { encryption_key = KEY_A })) -- the cipher is the store's
        assert.are.equal("aes", s:get("abcd"))
        assert.is_true(s:close())
        -- (Naming the default cipher demands nothing: the store's stands.)
        assert(armdb.store(dir, { encryption_key = KEY_A, cipher = "xchacha20-poly1305" })):close()
        assert.matches('option cipher must be "xchacha20%-poly1305" or "aes%-256%-gcm"',
            raised(armdb.store, dir, { encryption_key = KEY_A, cipher = "rot13" }))
    end)

    it("rotates its key with store:rekey", function()
        local dir = tmpdir() .. "/s"
        local s = assert(armdb.store(dir, { key_len = 8, shards = 2, encryption_key = KEY_A, sync = "none" }))
        for i = 1, 2000 do
            assert.is_true(s:put(string.format("k%07d", i), "value " .. i))
        end
        assert.is_true(s:rekey(KEY_B_HEX))
        assert.are.equal("value 7", s:get("k0000007"))
        assert.matches("new_key must be 32 bytes", raised(s.rekey, s, "nope"))
        assert.is_true(s:close())
        local ok, _, code = armdb.store(dir, { encryption_key = KEY_A })
        assert.is_nil(ok)
        assert.are.equal(codes.BADKEY, code)
        s = assert(armdb.store(dir, { encryption_key = KEY_B }))
        defer(function() s:close() end)
        for i = 1, 2000, 97 do
            assert.are.equal("value " .. i, s:get(string.format("k%07d", i)))
        end
        local plain = assert(armdb.store(tmpdir() .. "/p", { key_len = 8 }))
        defer(function() plain:close() end)
        local rok, msg, rcode = plain:rekey(KEY_A)
        assert.is_nil(rok)
        assert.are.equal(codes.INVAL, rcode)
        assert.matches("not encrypted", msg)
    end)
end)

describe("an encrypted database", function()
    local MARK = "MARKER-in-a-value-7f3a"

    local function fill(db)
        local users = assert(db:collection("users", { key = "string(12)", value = "json" }))
        local notes = assert(db:collection("notes", { key = "u64", value = "raw", ordered = true }))
        for i = 1, 500 do
            assert(users:put(string.format("user%08d", i), { name = MARK, n = i }))
            assert(notes:put(i, MARK .. i))
        end
        -- Batches within one collection and across two (the latter through
        -- the intent file).
        assert(db:batch(function(b)
            b:put(users, "user00000001", { name = MARK, n = -1 })
            b:put(users, "user00000002", { name = MARK, n = -2 })
        end))
        assert(db:batch(function(b)
            b:put(users, "user00000003", { name = MARK, n = -3 })
            b:put(notes, 4, MARK .. "batch")
        end))
        for i = 1, 500, 2 do
            assert(notes:delete(i))
        end
        assert(db:compact())
    end

    it("leaves no plaintext in any file, where a plain one does", function()
        local db, dir = helpers.fresh_db({ encryption_key = KEY_A })
        fill(db)
        assert(db:close())
        assert.are.same({}, files_with(dir, MARK))
        assert.are.same({}, files_with(dir, "user0000"))
        local pdb, pdir = helpers.fresh_db()
        fill(pdb)
        assert(pdb:close())
        assert.is_true(#files_with(pdir, MARK) > 0) -- the search can fail
        -- And it reads back.
        db = assert(armdb.open(dir, { encryption_key = KEY_A }))
        defer(function() db:close() end)
        local users = assert(db:collection("users"))
        assert.are.same({ name = MARK, n = -3 }, users:get("user00000003"))
        assert.are.equal(MARK .. "batch", assert(db:collection("notes")):get(4))
    end)

    it("seals its batch intent, and completes a sealed one at open", function()
        local db, dir = helpers.fresh_db({ encryption_key = KEY_A })
        local c = assert(db:collection("c", { key = "string(8)", value = "raw" }))
        assert(c:put("keyAAAAA", "old"))
        assert(db:close())
        -- What a batch across collections cut short by a crash leaves.
        local intent = require("cjson").encode({ format = 1, parts = { { collection = "c",
            ops = { { "put", codecs.to_hex("keyAAAAA"), codecs.to_hex(MARK) } } } } })
        write(dir .. "/BATCH", assert(store.seal(KEY_A, intent)))
        assert.are.same({}, files_with(dir, MARK))
        local ok, msg, code = armdb.open(dir, {})
        assert.is_nil(ok)
        assert.are.equal(codes.BADKEY, code)
        assert.matches("BATCH of .* is sealed", msg)
        ok, msg, code = armdb.open(dir, { encryption_key = KEY_B })
        assert.is_nil(ok)
        assert.are.equal(codes.CORRUPT, code)
        assert.matches("another key", msg)
        db = assert(armdb.open(dir, { encryption_key = KEY_A }))
        defer(function() db:close() end)
        assert.is_false(exists(dir .. "/BATCH"))
        assert.are.equal(MARK, assert(db:collection("c")):get("keyAAAAA"))
    end)

    it("rotates every collection with db:rekey", function()
        local db, dir = helpers.fresh_db({ encryption_key = KEY_A })
        fill(db)
        assert.is_true(db:rekey(KEY_B))
        assert.is_false(exists(dir .. "/REKEY"))
        assert(db:close())
        db = assert(armdb.open(dir, { encryption_key = KEY_A }))
        local c, _, code = db:collection("users")
        assert.is_nil(c)
        assert.are.equal(codes.BADKEY, code)
        db:close()
        db = assert(armdb.open(dir, { encryption_key = KEY_B_HEX }))
        defer(function() db:close() end)
        assert.are.same({ name = MARK, n = 42 }, assert(db:collection("users")):get("user00000042"))
        assert.are.equal(MARK .. "42", assert(db:collection("notes")):get(42))
        local plain = helpers.fresh_db()
        local ok, msg, pcode = plain:rekey(KEY_A)
        assert.is_nil(ok)
        assert.are.equal(codes.INVAL, pcode)
        assert.matches("not encrypted", msg)
    end)

    it("completes a rotation cut short when given the previous key", function()
        local db, dir = helpers.fresh_db({ encryption_key = KEY_A })
        fill(db)
        assert(db:close())
        -- Cut short: one collection rotated, the REKEY file still there.
        local s = assert(armdb.store(dir .. "/users", { encryption_key = KEY_A }))
        assert.is_true(s:rekey(KEY_B))
        assert.is_true(s:close())
        write(dir .. "/REKEY", '{"format":1}')
        db = assert(armdb.open(dir, { encryption_key = KEY_B }))
        assert.is_truthy(db:collection("users"))
        local c, msg, code = db:collection("notes")
        assert.is_nil(c)
        assert.are.equal(codes.BADKEY, code)
        assert.matches("previous_key = the old one", msg)
        db:close()
        assert.matches("previous_key needs encryption_key", raised(armdb.open, dir, { previous_key = KEY_A }))
        db = assert(armdb.open(dir, { encryption_key = KEY_B, previous_key = KEY_A }))
        assert.is_false(exists(dir .. "/REKEY"))
        assert(db:close())
        -- Now the new key alone opens every collection.
        db = assert(armdb.open(dir, { encryption_key = KEY_B }))
        defer(function() db:close() end)
        assert.are.same({ name = MARK, n = 10 }, assert(db:collection("users")):get("user00000010"))
        assert.are.equal(MARK .. "10", assert(db:collection("notes")):get(10))
    end)
end)
