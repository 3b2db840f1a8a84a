-- armdb.jobs.jsonl: the JSON lines that export writes and import reads,
-- one pair a line:
--
--   {"key":KEY,"value":VALUE}
--
-- Bytes are a JSON string when they are valid UTF-8 (and not asked for as
-- hex), else the field is "key_hex" / "value_hex": the bytes in hex. In a
-- collection, integer keys (u32, u64, i64) are JSON numbers (a string of
-- decimal digits beyond 2^53, so nothing is rounded), uuid keys their
-- text; json values are embedded as JSON, number values are numbers (inf
-- and nan as the strings "inf", "-inf", "nan"), raw values strings or
-- value_hex; lua values and FFI struct values are "value_hex", the bytes
-- the codec stores.
--
-- M.encode(target, k, v, hex) makes a line (without its newline) of a pair
-- as the target's pairs() gives it; M.decode(target, line) reads one back
-- into a key and value the target's put takes, checked against the
-- target's spec (key and value codec, fixed lengths), or nil and why.
-- A target is { kind = "store" | "collection", key_len, value_len (raw
-- stores), key_codec, value_codec (collections: armdb.codecs codecs) }.
local ffi = require("ffi")
local codecs = require("armdb.codecs")

local M = {}

local to_hex = codecs.to_hex
local INT_KEYS = { u32 = true, u64 = true, i64 = true }

local function cjson()
    return require("cjson")
end

function M.valid_utf8(s)
    if not s:find("[\128-\255]") then
        return true
    end
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        local len, min
        if c < 0x80 then
            len = 1
        elseif c >= 0xc2 and c <= 0xdf then
            len, min = 2, 0x80
        elseif c >= 0xe0 and c <= 0xef then
            len, min = 3, 0x800
        elseif c >= 0xf0 and c <= 0xf4 then
            len, min = 4, 0x10000
        else
            return false
        end
        if len > 1 then
            if i + len - 1 > n then
                return false
            end
            local cp = bit.band(c, bit.rshift(0x7f, len))
            for j = i + 1, i + len - 1 do
                local b = s:byte(j)
                if b < 0x80 or b > 0xbf then
                    return false
                end
                cp = cp * 64 + (b - 0x80)
            end
            if cp < min or cp > 0x10ffff or (cp >= 0xd800 and cp <= 0xdfff) then
                return false
            end
        end
        i = i + len
    end
    return true
end

local JSON_ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
    ["\t"] = "\\t" }

-- A JSON string literal of s (bytes as they are: valid UTF-8 is the
-- caller's to check).
function M.json_string(s)
    return '"' .. s:gsub('[%z\1-\31"\\\127]', function(c)
        return JSON_ESC[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
end

function M.json_number(x)
    if x ~= x then
        return '"nan"'
    elseif x == math.huge then
        return '"inf"'
    elseif x == -math.huge then
        return '"-inf"'
    elseif x == math.floor(x) and math.abs(x) < 2 ^ 53 then
        return string.format("%d", x)
    end
    return string.format("%.17g", x)
end

-- Decimal text -> a Lua number, or an int64/uint64 cdata beyond 2^53.
function M.parse_int(text, codec)
    local neg, digits = text:match("^(%-?)(%d+)$")
    if not digits then
        return nil
    end
    local n = tonumber(text)
    if math.abs(n) < 2 ^ 53 then
        return n
    end
    local acc = codec == "u64" and ffi.new("uint64_t", 0) or ffi.new("int64_t", 0)
    for d in digits:gmatch("%d") do
        acc = acc * 10 + tonumber(d)
    end
    return neg == "-" and -acc or acc
end

function M.int_text(k)
    if type(k) == "number" then
        return string.format("%d", k)
    end
    return (tostring(k):gsub("U?LL$", ""))
end

local function bytes_field(name, s, hex)
    if hex or not M.valid_utf8(s) then
        return '"' .. name .. '_hex":"' .. to_hex(s) .. '"'
    end
    return '"' .. name .. '":' .. M.json_string(s)
end

local function coll_key(t, k)
    if INT_KEYS[t.key_codec.name] then
        if type(k) == "number" then
            return '"key":' .. string.format("%d", k)
        end
        return '"key":"' .. M.int_text(k) .. '"'
    end
    return bytes_field("key", k, false)
end

local function coll_value(t, v)
    local codec = t.value_codec.name
    if codec == "raw" then
        return bytes_field("value", v, false)
    elseif codec == "number" then
        return '"value":' .. M.json_number(v)
    elseif codec == "json" then
        return '"value":' .. cjson().encode(v)
    elseif codec == "lua" then
        return '"value_hex":"' .. to_hex(require("string.buffer").encode(v)) .. '"'
    elseif type(v) == "cdata" then
        return '"value_hex":"' .. to_hex(ffi.string(v, ffi.sizeof(v))) .. '"'
    end
    return '"value":' .. cjson().encode(v)
end

function M.encode(t, k, v, hex)
    if t.kind == "store" then
        return "{" .. bytes_field("key", k, hex) .. "," .. bytes_field("value", v, hex) .. "}"
    end
    return "{" .. coll_key(t, k) .. "," .. coll_value(t, v) .. "}"
end

-- ---- reading ----

-- The bytes of the hex text in obj[name], or nil, reason.
local function hex_field(obj, name)
    if type(obj[name]) ~= "string" then
        return nil, name .. " is not a string"
    end
    local b = codecs.from_hex(obj[name])
    if b == nil then
        return nil, name .. " is not hexadecimal (two digits a byte): " .. obj[name]
    end
    return b
end

-- A codec's complaint, without the position and the "armdb: " prefix.
local function clean(e)
    local msg = tostring(e):match("^[^\n]*")
    msg = msg:gsub("^[^:]*%.lua:%d+: ", "")
    return (msg:gsub("^armdb: ", ""))
end

local function check_store_pair(t, k, v)
    if type(k) ~= "string" then
        return nil, "key is not a string"
    end
    if type(v) ~= "string" then
        return nil, "value is not a string"
    end
    if #k ~= t.key_len then
        return nil, string.format("key of %d bytes, the store has key_len %d", #k, t.key_len)
    end
    if t.value_len and t.value_len > 0 and #v ~= t.value_len then
        return nil, string.format("value of %d bytes, the store has value_len %d", #v, t.value_len)
    end
    return k, v
end

local function check_coll_pair(t, k, v, from_hex, null)
    local kc, vc = t.key_codec, t.value_codec
    if from_hex then
        if vc.name == "lua" then
            local ok, dv = pcall(require("string.buffer").decode, v)
            if not ok then
                return nil, "value_hex is not a string.buffer encoding: " .. clean(dv)
            end
            v = dv
        elseif vc.name ~= "raw" then
            if vc.len == 0 or #v ~= vc.len then
                return nil, string.format("value_hex of %d bytes is not a %s value", #v, vc.name)
            end
            local dv, why = vc.decode(v)
            if dv == nil then
                return nil, "value_hex is not a " .. vc.name .. " value: " .. tostring(why)
            end
            v = dv
        end
    end
    if INT_KEYS[kc.name] then
        if type(k) == "string" then
            k = M.parse_int(k, kc.name)
            if k == nil then
                return nil, "key is not an integer"
            end
        elseif type(k) ~= "number" then
            return nil, "key is not an integer"
        end
    elseif type(k) ~= "string" then
        return nil, "key is not a string"
    end
    if vc.name == "number" and type(v) == "string" then
        v = ({ inf = math.huge, ["-inf"] = -math.huge, nan = 0 / 0 })[v] or tonumber(v)
        if v == nil then
            return nil, "value is not a number"
        end
    elseif vc.name == "raw" and type(v) ~= "string" then
        return nil, "value is not a string"
    end
    if v == null then
        return nil, "value is null"
    end
    -- What the codecs refuse (a key out of range or too long, a value of
    -- the wrong type or length) is refused here, before anything is put.
    local ok, err = pcall(kc.encode, k, 1)
    if not ok then
        return nil, clean(err)
    end
    ok, err = pcall(vc.encode, v, 1)
    if not ok then
        return nil, clean(err)
    end
    return k, v
end

function M.decode(t, line)
    local json = cjson()
    local ok, obj = pcall(json.decode, line)
    if not ok then
        return nil, "malformed JSON: " .. clean(obj)
    end
    if type(obj) ~= "table" then
        return nil, "not a JSON object"
    end
    local k, v, err
    if obj.key_hex ~= nil then
        k, err = hex_field(obj, "key_hex")
        if not k then
            return nil, err
        end
    elseif obj.key ~= nil then
        k = obj.key
    else
        return nil, 'no "key" or "key_hex"'
    end
    local from_hex = obj.value_hex ~= nil
    if from_hex then
        v, err = hex_field(obj, "value_hex")
        if not v then
            return nil, err
        end
    elseif obj.value ~= nil then
        v = obj.value
    else
        return nil, 'no "value" or "value_hex"'
    end
    if t.kind == "store" then
        return check_store_pair(t, k, v)
    end
    return check_coll_pair(t, k, v, from_hex, json.null)
end

return M
