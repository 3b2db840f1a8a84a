-- armdb.codecs: how a collection turns Lua keys and values into the bytes
-- of its store, and back.
--
-- A codec is a table { name, len, encode, decode }:
--   name    as stored in the CATALOG ("u64", "string(24)", "json", "struct point")
--   len     its fixed byte length (keys: always; values: 0 = variable)
--   encode(v, level) -> string; raises on a wrong Lua type or an out-of-range
--           value, naming the codec and the value. `level` is where the error
--           points, counted from the function that called encode (1 = that
--           function, 2 = its caller, as for error()).
--   decode(s) -> value, or nil, why (bytes that came from disk are never
--           trusted: a bad length or bad JSON is reported, not raised)
--   encode_p(v, level) -> pointer, length: the same bytes as encode, where
--           the codec can give them without making a Lua string (a buffer
--           of its own, valid until its next call, or the argument itself)
--   decode_p(pointer, length) -> as decode, from bytes in memory
-- The collections call the _p forms on get and put: at a million live
-- keys, making (interning) a short Lua string costs more than the C call.
--
-- Key codecs are order-preserving where the contract says so: for u32, u64,
-- i64 and string(N), the byte order of the encodings is the order of the
-- values, so an ordered store can scan them in value order.
--
-- Limits: json numbers go through lua-cjson, which keeps 14 significant
-- digits (its maximum here), so a number such as 2^53 or 0.1+0.2 does not
-- survive a json round trip exactly; use the "lua" codec for exact numbers.
-- cas() compares encoded bytes, and json/lua encodings of a table depend on
-- its iteration order: compare-and-set with a table as `old` is reliable
-- only for a value read back unchanged, and update() avoids the problem by
-- comparing the raw bytes it read.
local ffi = require("ffi")
local bit = require("bit")

local type, error, tostring, tonumber, pcall = type, error, tostring, tonumber, pcall
local floor, huge = math.floor, math.huge
local byte, format, sub = string.byte, string.format, string.sub
local band, rshift, bxor = bit.band, bit.rshift, bit.bxor
local ffi_string, ffi_istype, ffi_new, ffi_copy, ffi_cast, ffi_fill =
    ffi.string, ffi.istype, ffi.new, ffi.copy, ffi.cast, ffi.fill

local M = {}

local KEY_MAX = 512      -- ARMDB_KEY_MAX
local INLINE_MAX = 4096  -- ARMDB_INLINE_MAX: largest fixed-length value
local TWO32 = 4294967296
local TWO53 = 9007199254740992
local u64_t = ffi.typeof("uint64_t")
local i64_t = ffi.typeof("int64_t")

-- ---- messages ----

-- A value as it appears in a message: strings quoted (at most 40 bytes,
-- control bytes escaped), integers in full, cdata by its type.
local function show(v)
    local t = type(v)
    if t == "string" then
        local s = #v > 40 and sub(v, 1, 40) or v
        s = s:gsub('[%c"\\\128-\255]', function(c)
            return format("\\x%02x", byte(c))
        end)
        return '"' .. s .. (#v > 40 and '"...' or '"')
    elseif t == "number" then
        if v == floor(v) and v > -1e18 and v < 1e18 then
            return format("%.0f", v)
        end
        return format("%.17g", v)
    elseif t == "cdata" then
        if ffi_istype(u64_t, v) or ffi_istype(i64_t, v) then
            return tostring(v)
        end
        return "cdata<" .. tostring(ffi.typeof(v)):match("^ctype<(.*)>$") .. ">"
    elseif t == "nil" or t == "boolean" then
        return tostring(v)
    end
    return "a " .. t
end
M.show = show

-- Bytes as hex digits, and back (nil if h is not two hex digits a byte).
function M.to_hex(s)
    return (s:gsub(".", function(c)
        return string.format("%02x", c:byte())
    end))
end

function M.from_hex(h)
    if #h % 2 ~= 0 or h:find("[^%x]") then
        return nil
    end
    return (h:gsub("%x%x", function(x)
        return string.char(tonumber(x, 16))
    end))
end

-- Raise "armdb: codec NAME: VALUE WHY" at `level` counted from the caller
-- of encode (bad is called from encode, never as a tail call).
local function bad(name, v, why, level)
    error("armdb: codec " .. name .. ": " .. show(v) .. " " .. why, (level or 1) + 2)
end

-- Fill in what a codec does not do itself: encode from encode_p (or
-- encode_p from encode), decode_p from decode.
local function complete(c)
    local encode, encode_p, decode = c.encode, c.encode_p, c.decode
    if encode_p and not encode then
        c.encode = function(v, level)
            local p, n = encode_p(v, (level or 1) + 1)
            return ffi_string(p, n)
        end
    elseif encode and not encode_p then
        c.encode_p = function(v, level)
            local str = encode(v, (level or 1) + 1)
            return str, #str
        end
    end
    if not c.decode_p then
        c.decode_p = function(p, n)
            return decode(ffi_string(p, n))
        end
    end
    return c
end

-- ---- key codecs ----

local function bytes_codec(n)
    local name = "bytes(" .. n .. ")"
    return complete({
        name = name,
        len = n,
        encode = function(v, level)
            if type(v) ~= "string" then
                bad(name, v, "is not a string", level)
            end
            if #v ~= n then
                bad(name, v, "is " .. #v .. " bytes, not " .. n, level)
            end
            return v
        end,
        decode = function(s)
            return s
        end,
    })
end

-- Up to n bytes, padded with zero bytes: zero is the smallest byte, so a
-- shorter string sorts before every longer one it is a prefix of, as in
-- Lua. A string ending in a zero byte is refused: its padding could not be
-- told from its text when decoding.
local pad_buf = ffi_new("uint8_t[?]", KEY_MAX)

local function string_codec(n)
    local name = "string(" .. n .. ")"
    return complete({
        name = name,
        len = n,
        encode_p = function(v, level)
            if type(v) ~= "string" then
                bad(name, v, "is not a string", level)
            end
            local l = #v
            if l > n then
                bad(name, v, "is " .. l .. " bytes, more than " .. n, level)
            end
            if l > 0 and byte(v, l) == 0 then
                bad(name, v, "ends in a zero byte (it could not round-trip)", level)
            end
            if l == n then
                return v, n
            end
            ffi_copy(pad_buf, v, l)
            ffi_fill(pad_buf + l, n - l)
            return pad_buf, n
        end,
        decode = function(s)
            local l = #s
            while l > 0 and byte(s, l) == 0 do
                l = l - 1
            end
            return sub(s, 1, l)
        end,
    })
end

-- x (0..2^32-1) as 4 big-endian bytes at b[o].
local function put_be32(b, o, x)
    b[o] = band(rshift(x, 24), 255)
    b[o + 1] = band(rshift(x, 16), 255)
    b[o + 2] = band(rshift(x, 8), 255)
    b[o + 3] = band(x, 255)
end

-- Each integer codec encodes into a buffer of its own.
local u32_buf, u64_buf, i64_buf = ffi_new("uint8_t[4]"), ffi_new("uint8_t[8]"), ffi_new("uint8_t[8]")

-- `level` as for encode; one frame deeper.
local function int_check(name, v, level)
    if v ~= floor(v) or v ~= v or v == huge or v == -huge then
        bad(name, v, "is not an integer", level + 1)
    end
end

local u32 = complete({
    name = "u32",
    len = 4,
    encode_p = function(v, level)
        level = level or 1
        if type(v) ~= "number" then
            bad("u32", v, "is not an integer", level)
        end
        int_check("u32", v, level)
        if v < 0 or v >= TWO32 then
            bad("u32", v, "is out of range 0..2^32-1", level)
        end
        put_be32(u32_buf, 0, v)
        return u32_buf, 4
    end,
    decode = function(s)
        local b1, b2, b3, b4 = byte(s, 1, 4)
        return ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    end,
})

-- 64-bit integers travel as two 32-bit halves (hi, lo), both numbers.
local function split64(x) -- x: uint64_t cdata
    return tonumber(rshift(x, 32)), tonumber(band(x, 0xffffffffULL))
end

local function u32_pair(s)
    local b1, b2, b3, b4, b5, b6, b7, b8 = byte(s, 1, 8)
    return ((b1 * 256 + b2) * 256 + b3) * 256 + b4, ((b5 * 256 + b6) * 256 + b7) * 256 + b8
end

local u64 = complete({
    name = "u64",
    len = 8,
    encode_p = function(v, level)
        level = level or 1
        local hi, lo
        if type(v) == "number" then
            int_check("u64", v, level)
            if v < 0 then
                bad("u64", v, "is out of range 0..2^64-1", level)
            end
            if v > TWO53 then
                bad("u64", v, "is above 2^53, where numbers are not exact (pass a uint64_t cdata)", level)
            end
            hi = floor(v / TWO32)
            lo = v - hi * TWO32
        elseif ffi_istype(u64_t, v) then
            hi, lo = split64(v)
        elseif ffi_istype(i64_t, v) then
            if v < 0 then
                bad("u64", v, "is out of range 0..2^64-1", level)
            end
            hi, lo = split64(ffi_cast(u64_t, v))
        else
            bad("u64", v, "is not an integer", level)
        end
        put_be32(u64_buf, 0, hi)
        put_be32(u64_buf, 4, lo)
        return u64_buf, 8
    end,
    decode = function(s)
        local hi, lo = u32_pair(s)
        if hi < 0x200000 or (hi == 0x200000 and lo == 0) then
            return hi * TWO32 + lo
        end
        return ffi_cast(u64_t, hi) * TWO32 + lo
    end,
})

-- Signed: the sign bit is flipped, so that -2^63 encodes as all zeros and
-- byte order is value order.
local i64 = complete({
    name = "i64",
    len = 8,
    encode_p = function(v, level)
        level = level or 1
        local hi, lo
        if type(v) == "number" then
            int_check("i64", v, level)
            if v < -TWO53 or v > TWO53 then
                bad("i64", v, "is beyond +-2^53, where numbers are not exact (pass an int64_t cdata)", level)
            end
            hi = floor(v / TWO32)
            lo = v - hi * TWO32
            hi = hi + 0x80000000
        elseif ffi_istype(i64_t, v) or ffi_istype(u64_t, v) then
            if ffi_istype(u64_t, v) and v > 0x7fffffffffffffffULL then
                bad("i64", v, "is out of range -2^63..2^63-1", level)
            end
            hi, lo = split64(bxor(ffi_cast(u64_t, v), 0x8000000000000000ULL))
        else
            bad("i64", v, "is not an integer", level)
        end
        put_be32(i64_buf, 0, hi)
        put_be32(i64_buf, 4, lo)
        return i64_buf, 8
    end,
    decode = function(s)
        local hi, lo = u32_pair(s)
        hi = hi - 0x80000000
        if hi >= -0x200000 and (hi < 0x200000 or (hi == 0x200000 and lo == 0)) then
            return hi * TWO32 + lo -- -2^53..2^53: exact as a number
        end
        return ffi_cast(i64_t, hi) * TWO32 + lo
    end,
})

-- uuid: canonical text, any case in, lowercase out. Parsed and printed
-- byte by byte through scratch buffers made once (gsub costs a closure
-- or a table walk per call, and this is on every get and put).
local HEX_VAL = {}
for i = 0, 15 do
    local h = format("%x", i)
    HEX_VAL[byte(h)] = i
    HEX_VAL[byte(h:upper())] = i
end
local HEX_DIGITS = ffi_new("const char[17]", "0123456789abcdef")
local uuid_bin = ffi_new("uint8_t[16]")
local uuid_text = ffi_new("char[36]")
local DASH = 45 -- "-"
local IS_DASH = { [9] = true, [14] = true, [19] = true, [24] = true }

local uuid = complete({
    name = "uuid",
    len = 16,
    encode_p = function(v, level)
        if type(v) ~= "string" or #v ~= 36 then
            bad("uuid", v, "is not a uuid (8-4-4-4-12 hex digits)", level)
        end
        local i, j = 1, 0
        while i <= 36 do
            if IS_DASH[i] then
                if byte(v, i) ~= DASH then
                    bad("uuid", v, "is not a uuid (8-4-4-4-12 hex digits)", level)
                end
                i = i + 1
            else
                local hi, lo = HEX_VAL[byte(v, i)], HEX_VAL[byte(v, i + 1)]
                if hi == nil or lo == nil then
                    bad("uuid", v, "is not a uuid (8-4-4-4-12 hex digits)", level)
                end
                uuid_bin[j] = hi * 16 + lo
                i, j = i + 2, j + 1
            end
        end
        return uuid_bin, 16
    end,
    decode = function(s)
        local o = 0
        for j = 1, 16 do
            if o == 8 or o == 13 or o == 18 or o == 23 then
                uuid_text[o] = DASH
                o = o + 1
            end
            local b = byte(s, j)
            uuid_text[o] = HEX_DIGITS[rshift(b, 4)]
            uuid_text[o + 1] = HEX_DIGITS[band(b, 15)]
            o = o + 2
        end
        return ffi_string(uuid_text, 36)
    end,
})

local KEYS = { u32 = u32, u64 = u64, i64 = i64, uuid = uuid }
local sized_cache = {}

-- The key codec named `spec` ("u64", "bytes(16)", ...); raises on an
-- unknown name (misuse), at `level` counted as for error().
function M.key(spec, level)
    level = (level or 1) + 1
    if type(spec) ~= "string" then
        error("armdb: key codec must be a string, got " .. type(spec), level)
    end
    local c = KEYS[spec] or sized_cache[spec]
    if c then
        return c
    end
    local kind, n = spec:match("^(%l+)%((%d+)%)$")
    n = tonumber(n)
    if (kind == "bytes" or kind == "string") and n then
        if n < 1 or n > KEY_MAX then
            error("armdb: key codec " .. spec .. ": length must be 1.." .. KEY_MAX, level)
        end
        c = kind == "bytes" and bytes_codec(n) or string_codec(n)
        sized_cache[spec] = c
        return c
    end
    error("armdb: unknown key codec " .. show(spec)
        .. " (bytes(N), string(N), u32, u64, i64 or uuid)", level)
end

-- ---- value codecs ----

local raw = complete({
    name = "raw",
    len = 0,
    encode = function(v, level)
        if type(v) ~= "string" then
            bad("raw", v, "is not a string", level)
        end
        return v
    end,
    decode = function(s)
        return s
    end,
})

-- 8-byte IEEE double, little-endian on disk whatever the host.
local dbl = ffi_new("union { double d; uint8_t b[8]; }")
local big_endian = ffi.abi("be")

local number_buf = ffi_new("uint8_t[8]")

local function number_decode_p(p, n)
    if n ~= 8 then
        return nil, "is " .. n .. " bytes, not 8"
    end
    local b = ffi_cast("const uint8_t *", p)
    if big_endian then
        for i = 0, 7 do
            dbl.b[i] = b[7 - i]
        end
    else
        ffi_copy(dbl.b, b, 8)
    end
    return dbl.d
end

local number = complete({
    name = "number",
    len = 8,
    encode_p = function(v, level)
        if type(v) ~= "number" then
            bad("number", v, "is not a number", level)
        end
        dbl.d = v
        if not big_endian then
            return dbl.b, 8
        end
        for i = 0, 7 do
            number_buf[i] = dbl.b[7 - i]
        end
        return number_buf, 8
    end,
    decode_p = number_decode_p,
    decode = function(s)
        return number_decode_p(s, #s)
    end,
})

local cjson = require("cjson").new()
cjson.encode_number_precision(14) -- the most this lua-cjson keeps
local json_encode, json_decode = cjson.encode, cjson.decode

local json = complete({
    name = "json",
    len = 0,
    encode = function(v, level)
        local ok, s = pcall(json_encode, v)
        if not ok then
            bad("json", v, "cannot be encoded: " .. tostring(s), level)
        end
        return s
    end,
    decode = function(s)
        local ok, v = pcall(json_decode, s)
        if not ok then
            return nil, "is not JSON: " .. tostring(v)
        end
        return v
    end,
})

local sbuf = require("string.buffer")
local enc_buf = sbuf.new()
local buf_decode = sbuf.decode

local function buf_encode(v)
    enc_buf:reset()
    enc_buf:encode(v)
    return enc_buf:tostring()
end

local lua = complete({
    name = "lua",
    len = 0,
    encode = function(v, level)
        local ok, s = pcall(buf_encode, v)
        if not ok then
            enc_buf:reset()
            bad("lua", v, "cannot be encoded: " .. tostring(s), level)
        end
        return s
    end,
    decode = function(s)
        local ok, v = pcall(buf_decode, s)
        if not ok then
            return nil, "is not a string.buffer encoding: " .. tostring(v)
        end
        return v
    end,
})

-- An FFI type of fixed size, kept inline: encode takes a cdata of the type
-- (or a table to initialize one), decode returns a fresh cdata.
local function ffi_codec(name, ct)
    local size = ffi.sizeof(ct)
    local function decode_p(p, n)
        if n ~= size then
            return nil, "is " .. n .. " bytes, not " .. size
        end
        local out = ffi_new(ct)
        ffi_copy(out, p, size)
        return out
    end
    return complete({
        name = name,
        len = size,
        ctype = ct,
        encode_p = function(v, level)
            if type(v) == "table" then
                local ok, c = pcall(ffi_new, ct, v)
                if not ok then
                    bad(name, v, "cannot initialize a " .. name .. ": " .. tostring(c), level)
                end
                v = c
            elseif not ffi_istype(ct, v) then
                bad(name, v, "is not a cdata<" .. name .. "> (or a table to initialize one)", level)
            end
            return v, size
        end,
        decode_p = decode_p,
        decode = function(s)
            return decode_p(s, #s)
        end,
    })
end

local VALUES = { raw = raw, number = number, json = json, lua = lua }
local ffi_cache = setmetatable({}, { __mode = "k" })

-- The value codec for `spec`: a codec name, an FFI ctype, or a C type
-- declaration ("struct point", "struct { double x, y; }"). The catalog
-- name of a ctype is the type as LuaJIT names it; an anonymous struct has
-- no name that another process could rebuild, so it is refused: declare
-- it (ffi.cdef "struct point {...}") or pass its declaration as text.
-- Raises on a bad spec (misuse), at `level` counted as for error().
function M.value(spec, level)
    level = (level or 1) + 1
    local t = type(spec)
    if t == "string" then
        local c = VALUES[spec] or ffi_cache[spec]
        if c then
            return c
        end
        local ok, ct = pcall(ffi.typeof, spec)
        if not ok then
            error("armdb: unknown value codec " .. show(spec)
                .. " (raw, number, json, lua, or an FFI type): " .. tostring(ct), level)
        end
        local name = spec:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
        c = M.ffi_value(name, ct, level)
        ffi_cache[spec] = c
        return c
    elseif t == "cdata" then
        local ct = ffi.typeof(spec)
        local name = tostring(ct):match("^ctype<(.*)>$")
        if name:find("^%a+ %d+$") then
            error("armdb: value codec " .. name .. " is an anonymous FFI type, which no catalog"
                .. " can name; declare it with ffi.cdef or pass its declaration as text", level)
        end
        local c = ffi_cache[ct]
        if c == nil then
            c = M.ffi_value(name, ct, level)
            ffi_cache[ct] = c
        end
        return c
    end
    error("armdb: value codec must be a string or an FFI ctype, got " .. t, level)
end

function M.ffi_value(name, ct, level)
    local size = ffi.sizeof(ct)
    if size == nil or size < 1 or size > INLINE_MAX then
        error("armdb: value codec " .. name .. ": an FFI type must have a fixed size of 1.."
            .. INLINE_MAX .. " bytes, this one has " .. tostring(size), level + 1)
    end
    if tostring(ct):find("%*") then
        error("armdb: value codec " .. name .. ": a pointer cannot be stored", level + 1)
    end
    return ffi_codec(name, ct)
end

return M
