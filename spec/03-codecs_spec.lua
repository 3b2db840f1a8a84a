-- armdb.codecs: every key and value codec round-trips, the ordered key
-- codecs keep value order in byte order, and every refusal names the codec
-- and the value.
local ffi = require("ffi")
local codecs = require("armdb.codecs")

ffi.cdef([[
struct armdb_spec03_point { double x, y; int32_t tag; };
]])

local raised = require("helpers").raised

-- Assert that encoding values in the order given gives strictly
-- increasing bytes (byte order = value order).
local function assert_ordered(c, values)
    for i = 2, #values do
        local a, b = c.encode(values[i - 1]), c.encode(values[i])
        assert.is_true(a < b, string.format("%s: %s should encode below %s",
            c.name, codecs.show(values[i - 1]), codecs.show(values[i])))
    end
end

local function round_trip(c, values)
    for _, v in ipairs(values) do
        local s = c.encode(v)
        assert.are.equal(c.len, #s)
        assert.are.equal(v, c.decode(s))
    end
end

describe("codecs.key()", function()
    it("names and sizes every key codec", function()
        local want = { u32 = 4, u64 = 8, i64 = 8, uuid = 16, ["bytes(3)"] = 3, ["string(24)"] = 24,
            ["bytes(512)"] = 512 }
        for name, len in pairs(want) do
            local c = codecs.key(name)
            assert.are.equal(name, c.name)
            assert.are.equal(len, c.len)
        end
    end)

    it("refuses unknown codecs and bad sizes", function()
        assert.are.equal('armdb: unknown key codec "u16" (bytes(N), string(N), u32, u64, i64 or uuid)',
            raised(codecs.key, "u16"))
        assert.are.equal("armdb: key codec bytes(0): length must be 1..512", raised(codecs.key, "bytes(0)"))
        assert.are.equal("armdb: key codec string(513): length must be 1..512", raised(codecs.key, "string(513)"))
        assert.are.equal("armdb: key codec must be a string, got number", raised(codecs.key, 8))
    end)
end)

describe("u32 key codec", function()
    local c = codecs.key("u32")

    it("round-trips and keeps order", function()
        local values = { 0, 1, 255, 256, 65535, 65536, 2 ^ 31 - 1, 2 ^ 31, 2 ^ 32 - 1 }
        round_trip(c, values)
        assert_ordered(c, values)
        assert.are.equal("\0\0\1\2", c.encode(258)) -- big-endian
    end)

    it("refuses non-integers and out-of-range values", function()
        assert.are.equal("armdb: codec u32: 3.5 is not an integer", raised(c.encode, 3.5))
        assert.are.equal('armdb: codec u32: "7" is not an integer', raised(c.encode, "7"))
        assert.are.equal("armdb: codec u32: -1 is out of range 0..2^32-1", raised(c.encode, -1))
        assert.are.equal("armdb: codec u32: 4294967296 is out of range 0..2^32-1", raised(c.encode, 2 ^ 32))
        assert.are.equal("armdb: codec u32: nan is not an integer", raised(c.encode, 0 / 0):gsub("%-nan", "nan"))
    end)
end)

describe("u64 key codec", function()
    local c = codecs.key("u64")

    it("round-trips numbers up to 2^53 as numbers", function()
        local values = { 0, 1, 2 ^ 32 - 1, 2 ^ 32, 2 ^ 53 - 1, 2 ^ 53 }
        round_trip(c, values)
        assert_ordered(c, values)
        assert.are.equal("number", type(c.decode(c.encode(2 ^ 53))))
    end)

    it("round-trips the rest of the range as uint64_t cdata", function()
        local big = { 2 ^ 53 + 1ULL, 0x123456789abcdef0ULL, 0xffffffffffffffffULL }
        for _, v in ipairs(big) do
            local d = c.decode(c.encode(v))
            assert.is_true(ffi.istype("uint64_t", d))
            assert.is_true(d == v)
        end
        assert_ordered(c, { 0, 2 ^ 53, 2 ^ 53 + 1ULL, 0x8000000000000000ULL, 0xffffffffffffffffULL })
        assert.are.equal("\255\255\255\255\255\255\255\255", c.encode(0xffffffffffffffffULL))
        -- a small cdata comes back as a number, and a non-negative int64_t is accepted
        assert.are.equal(42, c.decode(c.encode(42ULL)))
        assert.are.equal(42, c.decode(c.encode(42LL)))
    end)

    it("refuses negatives, fractions, inexact numbers and other types", function()
        assert.are.equal("armdb: codec u64: -1 is out of range 0..2^64-1", raised(c.encode, -1))
        assert.are.equal("armdb: codec u64: -1LL is out of range 0..2^64-1", raised(c.encode, -1LL))
        assert.are.equal("armdb: codec u64: 0.5 is not an integer", raised(c.encode, 0.5))
        assert.are.equal("armdb: codec u64: 9007199254740994 is above 2^53, where numbers are not exact"
            .. " (pass a uint64_t cdata)", raised(c.encode, 2 ^ 53 + 2))
        assert.are.equal("armdb: codec u64: a table is not an integer", raised(c.encode, {}))
        assert.are.equal("armdb: codec u64: nil is not an integer", raised(c.encode, nil))
        assert.are.equal("armdb: codec u64: cdata<int> is not an integer",
            raised(c.encode, ffi.new("int32_t", 1)))
    end)
end)

describe("i64 key codec", function()
    local c = codecs.key("i64")

    it("round-trips and keeps order across the sign", function()
        local values = { -2 ^ 53, -2 ^ 32 - 1, -2 ^ 32, -256, -1, 0, 1, 255, 2 ^ 31, 2 ^ 53 }
        round_trip(c, values)
        assert_ordered(c, values)
        assert.are.equal("\128\0\0\0\0\0\0\0", c.encode(0))
    end)

    it("round-trips the full range as int64_t cdata", function()
        local lo, hi = -0x8000000000000000LL, 0x7fffffffffffffffLL
        assert_ordered(c, { lo, -2 ^ 53 - 1LL, -2 ^ 53, 0, 2 ^ 53, 2 ^ 53 + 1LL, hi })
        for _, v in ipairs({ lo, -2 ^ 53 - 1LL, 2 ^ 53 + 1LL, hi }) do
            local d = c.decode(c.encode(v))
            assert.is_true(ffi.istype("int64_t", d))
            assert.is_true(d == v)
        end
        assert.are.equal(string.rep("\0", 8), c.encode(lo))
        assert.are.equal(-5, c.decode(c.encode(-5LL)))
        assert.are.equal(7, c.decode(c.encode(7ULL)))
    end)

    it("refuses fractions, inexact numbers and too-large uint64_t", function()
        assert.are.equal("armdb: codec i64: -0.25 is not an integer", raised(c.encode, -0.25))
        assert.are.equal("armdb: codec i64: -9007199254740994 is beyond +-2^53, where numbers are not exact"
            .. " (pass an int64_t cdata)", raised(c.encode, -2 ^ 53 - 2))
        assert.are.equal("armdb: codec i64: 9223372036854775808ULL is out of range -2^63..2^63-1",
            raised(c.encode, 0x8000000000000000ULL))
        assert.are.equal("armdb: codec i64: true is not an integer", raised(c.encode, true))
    end)
end)

describe("bytes(N) key codec", function()
    local c = codecs.key("bytes(4)")

    it("round-trips any bytes of exactly N, in byte order", function()
        round_trip(c, { "\0\0\0\0", "abcd", "\255\0\1\2" })
        assert_ordered(c, { "\0\0\0\0", "\0\0\0\1", "abcd", "abce", "\255\255\255\255" })
    end)

    it("refuses other lengths and non-strings", function()
        assert.are.equal('armdb: codec bytes(4): "abc" is 3 bytes, not 4', raised(c.encode, "abc"))
        assert.are.equal('armdb: codec bytes(4): "abcde" is 5 bytes, not 4', raised(c.encode, "abcde"))
        assert.are.equal("armdb: codec bytes(4): 1234 is not a string", raised(c.encode, 1234))
    end)
end)

describe("string(N) key codec", function()
    local c = codecs.key("string(6)")

    it("pads with zero bytes and strips them again", function()
        assert.are.equal("ab\0\0\0\0", c.encode("ab"))
        assert.are.equal(string.rep("\0", 6), c.encode(""))
        for _, v in ipairs({ "", "a", "a\0b", "abcdef", "\255" }) do
            assert.are.equal(6, #c.encode(v))
            assert.are.equal(v, c.decode(c.encode(v)))
        end
    end)

    it("keeps Lua string order", function()
        local values = { "", "\0a", "a", "a\0b", "aa", "ab", "abcdef", "b", "\255" }
        local sorted = { unpack(values) }
        table.sort(sorted)
        assert.are.same(values, sorted) -- the list is in Lua order...
        assert_ordered(c, values)        -- ...and so are its encodings
    end)

    it("refuses strings that could not round-trip", function()
        assert.are.equal('armdb: codec string(6): "abcdefg" is 7 bytes, more than 6', raised(c.encode, "abcdefg"))
        assert.are.equal('armdb: codec string(6): "ab\\x00" ends in a zero byte (it could not round-trip)',
            raised(c.encode, "ab\0"))
        assert.are.equal("armdb: codec string(6): false is not a string", raised(c.encode, false))
    end)
end)

describe("uuid key codec", function()
    local c = codecs.key("uuid")
    local text = "123e4567-e89b-12d3-a456-426614174000"

    it("turns canonical text into 16 bytes and back, lowercase", function()
        local b = c.encode(text)
        assert.are.equal("\18\62\69\103\232\155\18\211\164\86\66\102\20\23\64\0", b)
        assert.are.equal(text, c.decode(b))
        assert.are.equal(text, c.decode(c.encode(text:upper())))
        assert.are.equal(text, c.decode(c.encode("123E4567-e89B-12d3-A456-426614174000")))
        assert_ordered(c, { "00000000-0000-0000-0000-000000000000", text, "ffffffff-ffff-ffff-ffff-fffffffffffe",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF" })
    end)

    it("refuses anything but canonical text", function()
        local why = " is not a uuid (8-4-4-4-12 hex digits)"
        for _, bad in ipairs({ "123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g",
            "{123e4567-e89b-12d3-a456-426614174000}", "123e4567-e89b-12d3-a456-4266141740000", "",
            "123e4567xe89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-42661417400-",
            "123e4567-e89b-12d3-a4566426614174000-", " 23e4567-e89b-12d3-a456-426614174000" }) do
            assert.are.equal("armdb: codec uuid: " .. codecs.show(bad) .. why, raised(c.encode, bad))
        end
        assert.are.equal("armdb: codec uuid: 5" .. why, raised(c.encode, 5))
    end)
end)

describe("codecs.value()", function()
    it("names and sizes the built-in value codecs", function()
        for name, len in pairs({ raw = 0, number = 8, json = 0, lua = 0 }) do
            local c = codecs.value(name)
            assert.are.equal(name, c.name)
            assert.are.equal(len, c.len)
        end
    end)

    it("refuses unknown codecs, VLAs, pointers, oversize and anonymous types", function()
        assert.matches('^armdb: unknown value codec "jsn" %(raw, number, json, lua, or an FFI type%): ',
            raised(codecs.value, "jsn"))
        assert.are.equal("armdb: value codec must be a string or an FFI ctype, got table", raised(codecs.value, {}))
        assert.are.equal("armdb: value codec char[4097]: an FFI type must have a fixed size of 1..4096 bytes,"
            .. " this one has 4097", raised(codecs.value, "char[4097]"))
        assert.are.equal("armdb: value codec int *: a pointer cannot be stored", raised(codecs.value, "int *"))
        assert.matches("^armdb: value codec struct %d+ is an anonymous FFI type",
            raised(codecs.value, ffi.typeof("struct { int a; }")))
    end)
end)

describe("raw value codec", function()
    local c = codecs.value("raw")
    it("passes strings through and refuses the rest", function()
        for _, v in ipairs({ "", "x", "\0\255", string.rep("z", 100000) }) do
            assert.are.equal(v, c.decode(c.encode(v)))
        end
        assert.are.equal("armdb: codec raw: 12 is not a string", raised(c.encode, 12))
    end)
end)

describe("number value codec", function()
    local c = codecs.value("number")
    it("stores 8-byte little-endian doubles exactly", function()
        for _, v in ipairs({ 0, -0.5, 0.1, 1 / 3, 2 ^ 53 + 2, -1e308, math.huge, -math.huge }) do
            local s = c.encode(v)
            assert.are.equal(8, #s)
            assert.are.equal(v, c.decode(s))
        end
        assert.are.equal("\0\0\0\0\0\0\240\63", c.encode(1))
        local n = c.decode(c.encode(0 / 0))
        assert.is_true(n ~= n)
    end)
    it("refuses non-numbers and reports bad stored lengths", function()
        assert.are.equal('armdb: codec number: "1" is not a number', raised(c.encode, "1"))
        assert.are.same({ nil, "is 3 bytes, not 8" }, { c.decode("abc") })
    end)
end)

describe("json value codec", function()
    local c = codecs.value("json")
    it("round-trips JSON values", function()
        local v = { name = "ada", tags = { "a", "b" }, n = 42, ok = true, nested = { x = -1.5 } }
        assert.are.same(v, c.decode(c.encode(v)))
        assert.are.equal("hi", c.decode(c.encode("hi")))
        assert.are.equal(12, c.decode(c.encode(12)))
    end)
    it("does not share settings with other cjson users", function()
        local global = require("cjson")
        local before = global.encode_number_precision()
        assert.are.equal(before, global.encode_number_precision())
        assert.are_not.equal(global.encode, c.encode)
    end)
    it("refuses what JSON cannot hold and reports bad stored bytes", function()
        assert.are.equal("armdb: codec json: a table cannot be encoded: Cannot serialise function: type not supported",
            raised(c.encode, { f = print }))
        assert.matches("^armdb: codec json: a table cannot be encoded: Cannot serialise table: excessively sparse",
            raised(c.encode, { [1] = 1, [1000] = 2 }))
        local v, why = c.decode("{nope")
        assert.is_nil(v)
        assert.matches("^is not JSON: ", why)
    end)
end)

describe("lua value codec", function()
    local c = codecs.value("lua")
    it("round-trips Lua values exactly", function()
        local v = { 1, 2, "three", { deep = true }, n = 2 ^ 53 + 2, f = 0.1, [5] = false }
        assert.are.same(v, c.decode(c.encode(v)))
        assert.are.equal(0.1 + 0.2, c.decode(c.encode(0.1 + 0.2)))
        assert.are.equal("s", c.decode(c.encode("s")))
    end)
    it("refuses functions and reports bad stored bytes", function()
        assert.matches("^armdb: codec lua: a function cannot be encoded: ", raised(c.encode, print))
        assert.are.equal("x", c.decode(c.encode("x"))) -- the shared buffer recovered
        local v, why = c.decode("\255\255")
        assert.is_nil(v)
        assert.matches("^is not a string.buffer encoding: ", why)
    end)
end)

describe("FFI value codec", function()
    local name = "struct armdb_spec03_point"

    it("stores a struct inline and decodes a fresh cdata", function()
        for _, spec in ipairs({ name, ffi.typeof(name) }) do
            local c = codecs.value(spec)
            assert.are.equal(name, c.name)
            assert.are.equal(ffi.sizeof(name), c.len)
            local p = ffi.new(name, 1.5, -2, 7)
            local s = c.encode(p)
            assert.are.equal(c.len, #s)
            local q = c.decode(s)
            assert.is_true(ffi.istype(name, q))
            assert.are.equal(1.5, q.x)
            assert.are.equal(-2, q.y)
            assert.are.equal(7, q.tag)
            q.x = 9
            assert.are.equal(1.5, p.x) -- a copy, not the original
            assert.are.equal(3, c.decode(c.encode({ 3, 4, 5 })).x) -- a table initializes one
        end
    end)

    it("names anonymous declarations by their text", function()
        local c = codecs.value("  struct {  double a; }  ")
        assert.are.equal("struct { double a; }", c.name)
        assert.are.equal(8, c.len)
        assert.are.equal(2.5, c.decode(c.encode({ 2.5 })).a)
    end)

    it("refuses other types and reports bad stored lengths", function()
        local c = codecs.value(name)
        assert.are.equal("armdb: codec " .. name .. ": 5 is not a cdata<" .. name .. "> (or a table to initialize one)",
            raised(c.encode, 5))
        assert.are.equal("armdb: codec " .. name .. ": cdata<double> is not a cdata<" .. name
            .. "> (or a table to initialize one)", raised(c.encode, ffi.new("double", 1)))
        assert.matches("^armdb: codec " .. name .. ": a table cannot initialize a " .. name,
            raised(c.encode, { "x" }))
        assert.are.same({ nil, "is 3 bytes, not " .. c.len }, { c.decode("abc") })
    end)
end)

describe("codec errors", function()
    it("point at the caller given by level", function()
        local c = codecs.key("u64")
        local function put(k)
            c.encode(k, 2) -- blame put's caller
        end
        local ok, err = pcall(function()
            put(-1) -- this line
        end)
        assert.is_false(ok)
        local line = debug.getinfo(1, "l").currentline - 3
        assert.matches("03%-codecs_spec%.lua:" .. line .. ": armdb: codec u64: %-1 is out of range", err)
    end)
end)
