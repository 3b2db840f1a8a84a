-- make_events.lua: writes events.jsonl, the web events that
-- examples/import_events.lua imports. Deterministic: the same file on
-- every run and every machine (a fixed seed, integer arithmetic only, and
-- keys written in a fixed order), so the committed file can be made anew
-- and compared.
--
--   luajit examples/data/make_events.lua > examples/data/events.jsonl
--
-- One line per event, as `armdb export` writes pairs:
--
--   {"key":EVENT_ID,"value":{"ts":...,"type":...,"user":...,...}}
--
-- plus a few deliberately bad lines (BAD below) that an import must
-- reject with their line numbers: broken JSON, a missing key, a key of the
-- wrong type, a negative key, and a missing value.
local N = 3000
local FIRST_ID = 100000
local START = 1764576000 -- 2025-12-01 08:00:00 UTC

-- Park-Miller's minimal standard generator: exact in doubles.
local seed = 20251201
local function rand(n)
    seed = seed * 16807 % 2147483647
    return seed % n + 1
end
local function pick(t)
    return t[rand(#t)]
end

local TYPES = { -- weights: most events are page views
    "page_view", "page_view", "page_view", "page_view", "page_view", "page_view",
    "click", "click", "click", "search", "search", "add_to_cart", "purchase", "signup", "login",
}
local PATHS = { "/", "/products", "/products/1017", "/products/2044", "/products/3120", "/products/4401",
    "/cart", "/checkout", "/blog/launch", "/blog/how-we-store-sessions", "/pricing", "/docs", "/docs/install",
    "/account", "/search" }
local REFERRERS = { "", "", "", "https://www.google.com/", "https://duckduckgo.com/", "https://news.ycombinator.com/",
    "https://twitter.com/", "https://www.bing.com/" }
local COUNTRIES = { "DE", "DE", "FR", "US", "US", "US", "GB", "NL", "SE", "PL", "ES", "IT", "JP", "BR", "IN" }
local DEVICES = { "desktop", "desktop", "mobile", "mobile", "mobile", "tablet" }
local BROWSERS = { "Firefox/133.0", "Chrome/131.0", "Chrome/131.0", "Safari/605.1", "Edg/131.0" }
local QUERIES = { "bitcask", "session store", "lua ffi", "backup", "ttl", "openresty", "pricing", "json lines" }
local BUTTONS = { "buy-now", "signup-cta", "docs-link", "nav-pricing", "add-to-cart", "newsletter" }

local function iso(t)
    return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end

-- A JSON string (the generated text has no characters to escape but these).
local function str(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return string.format("\\u%04x", c:byte())
    end) .. '"'
end

-- The fields of an event, in a fixed order: name, JSON text.
local function event(i, t)
    local user = 1000 + rand(400)
    local kind = pick(TYPES)
    local f = {
        { "ts", str(iso(t)) },
        { "type", str(kind) },
        { "user", tostring(user) },
        { "session", str(string.format("s-%06x", (user * 7919 + math.floor(t / 1800)) % 16777216)) },
        { "country", str(pick(COUNTRIES)) },
        { "device", str(pick(DEVICES)) },
        { "browser", str(pick(BROWSERS)) },
    }
    local path = pick(PATHS)
    if kind == "search" then
        path = "/search"
        f[#f + 1] = { "query", str(pick(QUERIES)) }
        f[#f + 1] = { "results", tostring(rand(40) - 1) }
    elseif kind == "click" then
        f[#f + 1] = { "button", str(pick(BUTTONS)) }
    elseif kind == "add_to_cart" or kind == "purchase" then
        path = kind == "purchase" and "/checkout" or "/products/" .. (1000 + rand(4000))
        local cents = 499 + rand(200) * 100 - 1
        local cur = ({ "EUR", "USD", "GBP" })[rand(3)]
        f[#f + 1] = { "amount", string.format("%d.%02d", math.floor(cents / 100), cents % 100) }
        f[#f + 1] = { "currency", str(cur) }
        f[#f + 1] = { "items", tostring(rand(3)) }
    elseif kind == "page_view" then
        f[#f + 1] = { "duration_ms", tostring(200 + rand(30000)) }
    end
    table.insert(f, 3, { "path", str(path) })
    local ref = pick(REFERRERS)
    if ref ~= "" then
        f[#f + 1] = { "referrer", str(ref) }
    end
    local parts = {}
    for j, kv in ipairs(f) do
        parts[j] = str(kv[1]) .. ":" .. kv[2]
    end
    return string.format('{"key":%d,"value":{%s}}', FIRST_ID + i, table.concat(parts, ","))
end

-- Bad lines, after the event of the given index (at its time t).
local BAD = {
    [412] = function(t) -- cut short
        return string.format('{"key":%d,"value":{"ts":"%s","type":"page_view","path":"/pricing"', FIRST_ID + 413,
            iso(t))
    end,
    [977] = function(t) -- no key
        return string.format('{"value":{"ts":"%s","type":"click","user":1188,"button":"buy-now"}}', iso(t))
    end,
    [1503] = function(t) -- a key that is not a number
        return string.format('{"key":"100x1503","value":{"ts":"%s","type":"login","user":1020}}', iso(t))
    end,
    [2210] = function(t) -- a key out of the u64 range
        return string.format('{"key":-2210,"value":{"ts":"%s","type":"signup","user":1377}}', iso(t))
    end,
    [2788] = function() -- no value
        return '{"key":102788}'
    end,
}

local out = {}
local t = START
for i = 1, N do
    t = t + rand(12) - 1 -- 0 to 11 seconds apart
    out[#out + 1] = event(i, t)
    if BAD[i] then
        out[#out + 1] = BAD[i](t)
    end
end
io.write(table.concat(out, "\n"), "\n")
