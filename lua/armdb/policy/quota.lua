-- armdb.policy.quota: max_keys and max_bytes, and what a write does when
-- the collection is full.
--
--   max_keys   live keys (the store's count)
--   max_bytes  bytes of the live entries as stored (the store's
--              live_bytes: a 16-byte header, the key, the value with its
--              expiry if it has one, padded to 8 bytes)
--   on_full    "refuse" (default): the write fails with nil,
--              "<collection>: quota max_keys 1000 reached", FULL and
--              nothing is written; "evict": the least recently written
--              keys (lowest GSN, read from the change feed) are deleted
--              until the write fits.
--
-- Before either, expired values (ttl) are purged: they do not count
-- against a quota that needs room, and they go before any live key is
-- evicted (a purge reads the whole collection, so it runs at most once
-- a second: see armdb.policy.ttl, purge_all). The keys being written are never evicted to make room for
-- themselves. A batch is admitted as a whole before anything of it is
-- written (db:batch): refused whole, or room made for all of it.
--
-- Checks cost a count (and, for max_bytes, the store's stats) per write,
-- and a read of the key only when the collection is at its limit. The
-- limit is kept by the writes of this handle: it is a check and then a
-- write, so writes from other threads in between can pass it by a few.
-- Eviction keeps a cursor (the GSN of the last key it evicted) and its
-- change feed open between evictions, so that the next one goes on where
-- the last stopped rather than at the oldest entry; it starts again from
-- the beginning when the feed cannot serve the cursor. (An open feed
-- holds on to the data files it reads: files compacted meanwhile give
-- their space back once it is read to its end or dropped.)
local ffi = require("ffi")
local lib = require("armdb.lib")
local ttl = require("armdb.policy.ttl")

local C = lib.C
local FULL = C.ARMDB_FULL
local ENTRY_HDR = 16

local M = {}

local stat = ffi.new("armdb_stat")

local function entry_size(klen, vlen)
    local n = ENTRY_HDR + klen + vlen
    return n + (8 - n % 8) % 8
end

local function live_bytes(raw)
    local rc = C.armdb_stats(raw._h, stat)
    if rc ~= 0 then
        return nil, rc
    end
    return tonumber(stat.live_bytes)
end

-- How far over the quota the writes `adds` would take the store: keys
-- and bytes over (<= 0: fits). adds = { n = new keys, bytes = net bytes }.
local function over(P, raw, adds)
    local ko, bo = 0, 0
    if P.max_keys then
        ko = raw:count() + adds.n - P.max_keys
    end
    if P.max_bytes then
        local live, rc = live_bytes(raw)
        if not live then
            return nil, rc
        end
        bo = live + adds.bytes - P.max_bytes
    end
    return ko, bo
end

local function full_msg(P, ko)
    if ko > 0 then
        return P.name .. ": quota max_keys " .. P.max_keys .. " reached"
    end
    return P.name .. ": quota max_bytes " .. P.max_bytes .. " reached"
end

-- What writes ws (an array of { kb, vlen } with vlen nil for a delete)
-- add: new keys and net bytes, reading each key's current entry.
local function additions(raw, ws, klen)
    local adds = { n = 0, bytes = 0 }
    for _, w in ipairs(ws) do
        local cur, msg, code = raw:get(w[1])
        if cur == nil and msg ~= nil then
            return nil, msg, code
        end
        if cur ~= nil then
            adds.bytes = adds.bytes - entry_size(klen, #cur)
        end
        if w[2] then
            adds.bytes = adds.bytes + entry_size(klen, w[2])
            if cur == nil then
                adds.n = adds.n + 1
            end
        elseif cur ~= nil then
            adds.n = adds.n - 1
        end
    end
    return adds
end

-- Evict least recently written keys of G's collection, not in `keep`
-- (a set of key bytes), until the writes fit. true, or nil, msg, code.
--
-- The live feed is kept open between evictions (P.feed): it hands out
-- each key only if that entry is still the key's current one, so keys
-- written since it opened are simply met in a later feed, from the
-- cursor. A feed run dry is dropped; one from the cursor that evicted
-- nothing gives way to one from the start, and one from the start that
-- evicted nothing means there is nothing left to evict.
local FEED_AGE = 1 -- seconds an eviction feed is kept open

local function evict(G, adds, keep)
    local P, raw, coll = G._p, G._raw, G._coll
    while true do
        local feed = P.feed
        if feed and require("armdb.policy").now() - feed.opened > FEED_AGE then
            -- An open feed holds the data files it reads: not for long.
            feed.it(true)
            feed, P.feed = nil, nil
        end
        if feed == nil then
            local ok, it, msg = pcall(G.changes, G, P.cursor, { live = true })
            if not ok or it == nil then
                if P.cursor == 0 then
                    return nil, P.name .. ": eviction: " .. tostring(ok and msg or it), FULL
                end
                P.cursor = 0 -- (the feed no longer has all since the cursor)
            else
                feed = { it = it, from = P.cursor, opened = require("armdb.policy").now() }
                P.feed = feed
            end
        end
        if feed then
            local fits = false
            local ok, err = pcall(function()
                while true do
                    local kb, vb, gsn, deleted = feed.it()
                    if kb == nil then
                        return
                    end
                    if not deleted and not keep[kb] then
                        local done, msg, code = raw:delete(kb)
                        if done == nil then
                            error({ msg = msg, code = code })
                        end
                        P.cursor, feed.evicted = gsn, true
                        P.evicted = (P.evicted or 0) + 1
                        if coll._hooks then
                            coll:_fire(coll._kc.decode(kb), nil, coll._vc.decode(vb))
                        end
                        local ko, bo = over(P, raw, adds)
                        if ko == nil then
                            error({ msg = "the store's stats failed", code = bo })
                        end
                        if ko <= 0 and bo <= 0 then
                            fits = true
                            return
                        end
                    end
                end
            end)
            if not ok then
                P.feed = nil
                feed.it(true)
                local e = type(err) == "table" and err or { msg = tostring(err), code = FULL }
                return nil, P.name .. ": eviction: " .. tostring(e.msg), e.code
            end
            if fits then
                return true -- (the feed stays open for the next eviction)
            end
            P.feed = nil
            if not feed.evicted then
                if feed.from == 0 then
                    local ko = over(P, raw, adds)
                    return nil, full_msg(P, ko or 1), FULL
                end
                P.cursor = 0
            end
        end
    end
end

-- Admit writes ws to G's collection: true, or nil, message, FULL (nothing
-- written). ws: array of { kb, stored vlen or nil (delete) }.
function M.admit(G, ws)
    local P, raw = G._p, G._raw
    if not (P.max_keys or P.max_bytes) then
        return true
    end
    local klen = G._coll._kc.len
    -- Fast path: as if every write added a key and its whole entry.
    local worst = { n = 0, bytes = 0 }
    for _, w in ipairs(ws) do
        if w[2] then
            worst.n = worst.n + 1
            worst.bytes = worst.bytes + entry_size(klen, w[2])
        end
    end
    local ko, bo = over(P, raw, worst)
    if ko == nil then
        return nil, "stats failed", bo
    end
    if ko <= 0 and bo <= 0 then
        return true
    end
    local adds, msg, code = additions(raw, ws, klen)
    if not adds then
        return nil, msg, code
    end
    ko, bo = over(P, raw, adds)
    if ko <= 0 and bo <= 0 then
        return true
    end
    if P.max_bytes and adds.bytes > P.max_bytes then
        return nil, P.name .. ": quota max_bytes " .. P.max_bytes .. " is smaller than the write (" .. adds.bytes
            .. " bytes)", FULL
    end
    if P.max_keys and adds.n > P.max_keys then
        return nil, full_msg(P, 1), FULL
    end
    -- Expired values first: they do not count (one of them may be a key
    -- being written: what the writes add is counted again).
    if ttl.purge_all(G) then
        adds, msg, code = additions(raw, ws, klen)
        if not adds then
            return nil, msg, code
        end
    end
    ko, bo = over(P, raw, adds)
    if ko <= 0 and bo <= 0 then
        return true
    end
    if P.on_full ~= "evict" then
        return nil, full_msg(P, ko), FULL
    end
    local keep = {}
    for _, w in ipairs(ws) do
        keep[w[1]] = true
    end
    return evict(G, adds, keep)
end

M.entry_size = entry_size
return M
