-- armdb.policy.guard: the store of a collection with policies, seen
-- through its ttl and quota.
--
-- A guard stands in for the raw store (armdb.store) in coll._store, with
-- the same methods, so the collection's code and db:batch are unchanged:
-- values go in and out without their expiry stamp (armdb.policy.ttl),
-- expired values read as absent, and writes pass the quota
-- (armdb.policy.quota) first. Methods it does not define are the raw
-- store's. With neither an expiry nor a quota (a policy removed at run
-- time), each call goes straight through.
--
-- Reads of a value that carries an expiry cost nothing more than a
-- compare; a cas, update or delete in such a collection reads the stored
-- bytes first and then compares and sets against them, so a value that
-- expired or changed meanwhile is never overwritten by mistake.
local ffi = require("ffi")
local lib = require("armdb.lib")
local ttl = require("armdb.policy.ttl")
local quota = require("armdb.policy.quota")

local C = lib.C
local ffi_string, type = ffi.string, type
local CORRUPT = C.ARMDB_CORRUPT

local M = {}

local Guard = {}

-- Methods not defined here: the raw store's, called on it.
local function index(self, k)
    local v = Guard[k]
    if v ~= nil then
        return v
    end
    local raw = rawget(self, "_raw")
    v = raw[k]
    if type(v) ~= "function" then
        return v
    end
    local per = rawget(self, "_bound")
    local f = per[k]
    if f == nil then
        f = function(s, ...)
            if s == self then
                s = raw
            end
            return v(s, ...)
        end
        per[k] = f
    end
    return f
end

local Meta = { __index = index, __tostring = function(self)
    return tostring(rawget(self, "_raw"))
end }
M.Guard = Meta

function M.new(raw, coll, P)
    return setmetatable({ _raw = raw, _coll = coll, _p = P, _bound = {} }, Meta)
end

local function quota_on(P)
    return P.max_keys or P.max_bytes
end

local function short(P, n)
    return nil, "collection " .. P.name .. ": stored value of " .. n .. " bytes is shorter than its 8-byte expiry",
        CORRUPT
end

-- Stored bytes -> value bytes, or nil if expired.
local function strip(raw, now_ms)
    if ttl.expired(raw, now_ms) then
        return nil
    end
    return raw:sub(9)
end

-- ---- reads ----

function Guard:_get_p(kp, kl)
    local P = self._p
    local p, n, code = self._raw:_get_p(kp, kl)
    if p == nil or not P.expiry then
        return p, n, code
    end
    if n < 8 then
        return short(P, n)
    end
    local e = ttl.expiry_p(p)
    if e ~= 0 and e <= ttl.now_ms() then
        return nil
    end
    return p + 8, n - 8
end

function Guard:get(kb)
    local P = self._p
    local v, msg, code = self._raw:get(kb)
    if v == nil or not P.expiry then
        return v, msg, code
    end
    if #v < 8 then
        return short(P, #v)
    end
    return strip(v, ttl.now_ms())
end

function Guard:get_many(kbs)
    local out, msg, code = self._raw:get_many(kbs)
    local P = self._p
    if out == nil or not P.expiry then
        return out, msg, code
    end
    local now_ms = ttl.now_ms()
    for i = 1, out.n do
        local v = out[i]
        if v ~= nil then
            if #v < 8 then
                return short(P, #v)
            end
            out[i] = strip(v, now_ms)
        end
    end
    return out
end

-- Scans: expired values skipped, stamps removed; the limit counts what
-- is returned.
function Guard:pairs(opts)
    local P = self._p
    if not P.expiry then
        local nxt = self._raw:pairs(opts)
        return nxt
    end
    local o, left = {}, -1
    for k, v in pairs(opts or {}) do
        if k == "limit" then
            left = v
        else
            o[k] = v
        end
    end
    local nxt = self._raw:pairs(o)
    return function()
        if left == 0 then
            return nil
        end
        while true do
            local k, v, msg, code = nxt()
            if k == nil or v == nil then
                return k, v, msg, code
            end
            if not ttl.expired(v, ttl.now_ms()) then
                left = left - 1
                return k, v:sub(9)
            end
        end
    end
end

-- The change feed, values without their stamps (expired ones included:
-- a feed is the history of the writes).
function Guard:changes(since, opts)
    local P = self._p
    local nxt, last, code = self._raw:changes(since, opts)
    if nxt == nil or not P.expiry then
        return nxt, last, code
    end
    return function(close)
        if close == true then
            return nxt(true)
        end
        local k, v, gsn, deleted = nxt()
        if v ~= nil then
            v = v:sub(9)
        end
        return k, v, gsn, deleted
    end, last
end

-- ---- writes ----

-- The stored form of value bytes vb written with ttl (nil: default).
local function stored(P, vb, ttl_s)
    if not P.expiry then
        return vb
    end
    return ttl.stamp(ttl.expiry_for(P, ttl_s, ttl.now_ms())) .. vb
end

function Guard:_put_p(kp, kl, vp, vl, ttl_s)
    local P = self._p
    if not P.expiry and not quota_on(P) then
        return self._raw:_put_p(kp, kl, vp, vl)
    end
    -- Strings first: codec buffers may be reused by what the quota reads.
    return self:put(ffi_string(kp, kl), ffi_string(vp, vl), ttl_s)
end

function Guard:put(kb, vb, ttl_s)
    local P = self._p
    local sb = stored(P, vb, ttl_s)
    if quota_on(P) then
        local ok, msg, code = quota.admit(self, { { kb, #sb } })
        if not ok then
            return nil, msg, code
        end
    end
    return self._raw:put(kb, sb)
end

-- true if deleted, false if absent (an expired value is purged, and was
-- absent).
function Guard:delete(kb)
    local P = self._p
    if not P.expiry then
        return self._raw:delete(kb)
    end
    local cur, msg, code = self._raw:get(kb)
    if cur == nil then
        if msg ~= nil then
            return nil, msg, code
        end
        return false
    end
    local gone
    gone, msg, code = self._raw:delete(kb)
    if gone and ttl.expired(cur, ttl.now_ms()) then
        return false
    end
    return gone, msg, code
end

-- cas on value bytes: ob nil = kb must be absent (or expired).
function Guard:cas(kb, ob, nb, ttl_s)
    local P = self._p
    local raw = self._raw
    if not P.expiry and not quota_on(P) then
        return raw:cas(kb, ob, nb)
    end
    local expect = ob
    if P.expiry then
        local cur, msg, code = raw:get(kb)
        if cur == nil and msg ~= nil then
            return nil, msg, code
        end
        local live = cur ~= nil and not ttl.expired(cur, ttl.now_ms())
        if ob == nil and live or ob ~= nil and (not live or cur:sub(9) ~= ob) then
            return false
        end
        expect = cur
    elseif ob ~= nil then
        -- Quota alone: no eviction for a cas bound to fail.
        local cur, msg, code = raw:get(kb)
        if cur == nil and msg ~= nil then
            return nil, msg, code
        end
        if cur ~= ob then
            return false
        end
    elseif raw:get(kb) ~= nil then
        return false
    end
    local sb = stored(P, nb, ttl_s)
    if quota_on(P) then
        local ok, msg, code = quota.admit(self, { { kb, #sb } })
        if not ok then
            return nil, msg, code
        end
    end
    return raw:cas(kb, expect, sb)
end

-- A stamp no write makes (expiry 2^64 - 1): a check against it fails.
local NEVER = string.rep("\255", 8)

-- Batches: puts stamped, checks made against the stored bytes (read now:
-- the check then also fails if they change before the batch applies).
-- The quota is admitted by db:batch before anything is written (_admit).
function Guard:batch(ops)
    local P = self._p
    if not P.expiry then
        return self._raw:batch(ops)
    end
    local out = {}
    local now_ms = ttl.now_ms()
    for i, op in ipairs(ops) do
        local kind, kb, vb = op[1], op[2], op[3]
        if kind == "put" then
            out[i] = { "put", kb, stored(P, vb) }
        elseif kind == "check" then
            local cur, msg, code = self._raw:get(kb)
            if cur == nil and msg ~= nil then
                return nil, msg, code
            end
            local live = cur ~= nil and not ttl.expired(cur, now_ms)
            if vb == nil then
                out[i] = { "check", kb, (not live) and cur or nil }
            elseif live and cur:sub(9) == vb then
                out[i] = { "check", kb, cur }
            else
                out[i] = { "check", kb, cur and NEVER .. vb or vb } -- fails: differs, or absent
            end
        else
            out[i] = op
        end
    end
    return self._raw:batch(out)
end

-- db:batch's admission of a collection's ops before anything is written.
function Guard:_admit(ops)
    local P = self._p
    if not quota_on(P) then
        return true
    end
    local ws = {}
    for _, op in ipairs(ops) do
        if op[1] == "put" then
            ws[#ws + 1] = { op[2], #op[3] + (P.expiry and 8 or 0) }
        elseif op[1] == "delete" then
            ws[#ws + 1] = { op[2] }
        end
    end
    return quota.admit(self, ws)
end

return M
