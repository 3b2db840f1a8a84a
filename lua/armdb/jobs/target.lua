-- armdb.jobs.target: what a job was given, told apart: a raw store
-- (armdb.store), a collection (db:collection), or a database (armdb.open;
-- for the jobs that read or write pairs, with opts.collection naming one
-- of its collections). Misuse raises at the caller of the job.
local store = require("armdb.store")
local Collection = require("armdb.collection")

local M = {}

local function db_class()
    local mod = package.loaded["armdb.db"]
    return mod and mod.Db
end

-- "store", "collection", "database" or nil.
function M.kind(x)
    local mt = type(x) == "table" and getmetatable(x) or nil
    if mt == nil then
        return nil
    elseif mt == store.Store then
        return "store"
    elseif mt == Collection then
        return "collection"
    elseif mt == db_class() then
        return "database"
    end
    return nil
end

-- The store or collection a pair job works on: { kind, name, handle,
-- store (the raw store), key_len, value_len, key_codec, value_codec }.
-- level: where a misuse error points, counted from the caller of pairs_of.
function M.pairs_of(job, x, opts, level)
    level = level + 1
    local kind = M.kind(x)
    if kind == "database" then
        local name = opts and opts.collection
        if type(name) ~= "string" then
            error("armdb.jobs." .. job .. ": " .. tostring(x) .. " is a database: name a collection with"
                .. " opts.collection", level)
        end
        local coll, msg, code = x:collection(name)
        if coll == nil then
            return nil, msg, code
        end
        x, kind = coll, "collection"
    end
    if kind == "store" then
        if not x:is_open() then
            error("armdb.jobs." .. job .. ": " .. tostring(x) .. " is closed", level)
        end
        local st, msg, code = x:stats()
        if st == nil then
            return nil, msg, code
        end
        return { kind = "store", name = x.dir, handle = x, store = x, key_len = st.key_len,
            value_len = st.value_len }
    elseif kind == "collection" then
        if x._store == nil then
            error("armdb.jobs." .. job .. ": " .. tostring(x) .. " is closed", level)
        end
        return { kind = "collection", name = x.name, handle = x, store = x._store, key_codec = x._kc,
            value_codec = x._vc }
    end
    error("armdb.jobs." .. job .. ": needs a store, a collection or a database, got " .. tostring(x), level)
end

-- The raw stores a whole-store job (verify, stats, compact) works on:
-- an array of { name (nil for a lone store or collection), store }, or
-- nil, msg, code. A database gives each collection of its catalog, in
-- name order (opening those not open yet).
function M.stores_of(job, x, level)
    level = level + 1
    local kind = M.kind(x)
    if kind == "store" then
        if not x:is_open() then
            error("armdb.jobs." .. job .. ": " .. tostring(x) .. " is closed", level)
        end
        return { { store = x } }
    elseif kind == "collection" then
        if x._store == nil then
            error("armdb.jobs." .. job .. ": " .. tostring(x) .. " is closed", level)
        end
        return { { store = x._store } }
    elseif kind == "database" then
        if not x:is_open() then
            error("armdb.jobs." .. job .. ": " .. tostring(x) .. " is closed", level)
        end
        local names, msg, code = x:collections()
        if names == nil then
            return nil, msg, code
        end
        local list = {}
        for i, name in ipairs(names) do
            local coll
            coll, msg, code = x:collection(name)
            if coll == nil then
                return nil, msg, code
            end
            list[i] = { name = name, store = coll._store }
        end
        return list
    end
    error("armdb.jobs." .. job .. ": needs a store, a collection or a database, got " .. tostring(x), level)
end

return M
