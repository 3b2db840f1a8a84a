-- armdb.policy.ttl: values that expire.
--
-- A collection created with `ttl` in its spec stores every value behind
-- an 8-byte expiry (the CATALOG says so: "expiry": true):
--
--   offset 0, 8 bytes   expiry, milliseconds since the epoch, little-endian
--                       (0: never expires)
--   offset 8            the value as its codec encodes it
--
-- Fixed-length values (number, FFI structs) stay fixed-length and inline:
-- the store's value_len is the codec's plus 8, so a struct with a ttl has
-- at most 4088 bytes. An expired value is absent to every read (get,
-- get_many, pairs, range, prefix, cas, update, delete, batch checks) from
-- the moment policy.now() passes its expiry; count() and the store's
-- stats still include it until it is purged. Purging is done by the
-- "ttl:<name>" task (a sweep, resumable: it keeps its scan between steps
-- and deletes each expired key only if it is still the same value, so a
-- key written meanwhile stays), and by a quota that needs room.
--
-- Each write sets the expiry again: opts.ttl of the write, else the
-- collection's default ttl, else none.
local ffi = require("ffi")

local floor, huge = math.floor, math.huge
local ffi_cast = ffi.cast

local M = {}

M.SWEEP_EVERY = 60 -- seconds between sweep rounds, by default
M.STEP_KEYS = 2000 -- most keys one sweep step looks at
M.PURGE_EVERY = 1 -- seconds: the least time between two purges for a quota
M.PREFIX = 8
local MAX_EXPIRY = 2 ^ 53 -- ms: a ttl longer than the year 287396 is taken as that

local function now()
    return require("armdb.policy").now()
end

function M.now_ms()
    return floor(now() * 1000)
end

local stamp_buf = ffi.new("uint8_t[8]")

-- The 8-byte stamp of expiry e (ms; 0 never), as a string.
function M.stamp(e)
    local lo, hi = e % 4294967296, floor(e / 4294967296)
    for i = 0, 3 do
        stamp_buf[i] = floor(lo / 2 ^ (8 * i)) % 256
        stamp_buf[4 + i] = floor(hi / 2 ^ (8 * i)) % 256
    end
    return ffi.string(stamp_buf, 8)
end

-- The expiry (ms) at p (a pointer or a string of at least 8 bytes).
function M.expiry_p(p)
    local b = ffi_cast("const uint8_t *", p)
    local lo = b[0] + b[1] * 256 + b[2] * 65536 + b[3] * 16777216
    local hi = b[4] + b[5] * 256 + b[6] * 65536 + b[7] * 16777216
    return hi * 4294967296 + lo
end

-- The expiry for a write with ttl seconds (nil: P's default) at now_ms;
-- noted as the earliest expiry the collection may hold.
function M.expiry_for(P, ttl, now_ms)
    if ttl == nil then
        ttl = P.ttl
    end
    if not ttl or ttl <= 0 then
        return 0
    end
    local e = math.min(now_ms + floor(ttl * 1000 + 0.5), MAX_EXPIRY)
    if e < P.min_exp then
        P.min_exp = e
    end
    local sw = P.sweep
    if sw and e < sw.writes_min then
        sw.writes_min = e
    end
    return e
end

-- Is raw (a stored value, with its stamp) expired at now_ms?
function M.expired(raw, now_ms)
    if #raw < 8 then
        return false -- not ours to judge: reads report it as damaged
    end
    local e = M.expiry_p(raw)
    return e ~= 0 and e <= now_ms
end

-- Delete kb if its stored value is still raw (one atomic check and
-- delete), calling the write hooks as a delete would. true if deleted.
local function purge(coll, raw_store, kb, raw)
    local ok, _, code = raw_store:batch({ { "check", kb, raw }, { "delete", kb } })
    if not ok then
        return nil, code
    end
    if coll._hooks then
        local k = coll._kc.decode(kb)
        coll:_fire(k, nil, nil)
    end
    return true
end

-- One step of a sweep of coll (guard G): looks at up to max keys, until
-- clock() (a scheduler's; without one policy.now()) passes deadline (nil:
-- no deadline). Returns true when the round is complete (the next step
-- starts another), false if not.
function M.sweep_step(G, deadline, max, clock)
    local P, raw_store, coll = G._p, G._raw, G._coll
    if not raw_store:is_open() then
        return true
    end
    local sw = P.sweep
    if sw == nil then
        sw = { it = raw_store:pairs({ errors = true }), round_min = huge, writes_min = huge, purged = 0 }
        P.sweep = sw
    end
    local now_ms = M.now_ms()
    if clock == nil then
        deadline, clock = require("armdb.policy").step_end(deadline), now
    end
    local n = 0
    while true do
        if n >= (max or M.STEP_KEYS) or (deadline and n % 64 == 63 and clock() >= deadline) then
            return false
        end
        n = n + 1
        local ok, kb, raw = pcall(sw.it)
        if not ok then -- the store closed under the scan
            P.sweep = nil
            return true
        end
        if kb == nil then
            P.sweep = nil
            P.min_exp = math.min(sw.round_min, sw.writes_min)
            P.last_sweep = { purged = sw.purged }
            return true
        end
        if raw ~= nil and #raw >= 8 then
            local e = M.expiry_p(raw)
            if e ~= 0 and e <= now_ms then
                if purge(coll, raw_store, kb, raw) then
                    sw.purged = sw.purged + 1
                end
            elseif e ~= 0 and e < sw.round_min then
                sw.round_min = e
            end
        end
    end
end

-- Purge every expired key now (a quota needs room), unless none can be
-- there (the earliest expiry written or seen is still ahead) or it ran
-- less than PURGE_EVERY seconds ago. The whole collection is read: a
-- collection under a quota is bounded by it, and with writes that keep
-- expiring (a default ttl) the next expiry is never far, so a full read
-- on every write that needs room would make each write cost the whole
-- collection. (Between two purges, a key that expired meanwhile counts
-- until the next; eviction meets it in its turn.) true if it ran.
function M.purge_all(G)
    local P = G._p
    local now_ms = M.now_ms()
    if not P.expiry or P.min_exp > now_ms or (P.last_purge and now_ms - P.last_purge < M.PURGE_EVERY * 1000) then
        return false
    end
    P.last_purge = now_ms
    local saved = P.sweep
    P.sweep = nil
    while not M.sweep_step(G, nil, huge) do
    end
    -- A sweep that was under way goes on where it was.
    P.sweep = saved
    return true
end

-- The sweep task of coll.
function M.task(coll, P)
    return {
        name = "ttl:" .. coll.name,
        every = P.sweep_every or M.SWEEP_EVERY,
        step = function(deadline, clock)
            local G = coll._store
            if G == nil or G._p ~= P then -- closed
                return true
            end
            return M.sweep_step(G, deadline, nil, clock)
        end,
    }
end

return M
