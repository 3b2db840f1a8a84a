-- armdb.jobs.stats: the counters and state of a store, a collection, or
-- every collection of a database, as a table, as NAME VALUE lines or as
-- JSON (what `armdb stats` prints).
--
--   jobs.stats(target)        -> store:stats()'s table, or for a database
--                                { NAME = that table } over its catalog
--   jobs.stats_text(t)        -> "NAME VALUE\n" lines, sorted by name
--   jobs.stats_json(t)        -> one JSON object, keys sorted (a database's:
--                                an object of the collections' objects)
local jsonl = require("armdb.jobs.jsonl")
local target = require("armdb.jobs.target")

local M = {}

function M.stats(x)
    local list, msg, code = target.stores_of("stats", x, 2)
    if list == nil then
        return nil, msg, code
    end
    if target.kind(x) ~= "database" then
        if target.kind(x) == "collection" then
            return x:stats()
        end
        return list[1].store:stats()
    end
    local out = {}
    for _, e in ipairs(list) do
        local st
        st, msg, code = e.store:stats()
        if st == nil then
            return nil, "collection " .. e.name .. ": " .. msg, code
        end
        out[e.name] = st
    end
    return out
end

local sorted_keys = require("armdb.util").sorted_keys

local function value_json(v)
    local tv = type(v)
    if tv == "table" then
        return M.stats_json(v)
    elseif tv == "string" then
        return jsonl.json_string(v)
    elseif tv == "number" then
        if v ~= v or v == math.huge or v == -math.huge then
            return jsonl.json_number(v)
        end
        return v == math.floor(v) and string.format("%d", v) or string.format("%.17g", v)
    end
    return tostring(v)
end

function M.stats_json(t)
    local parts = {}
    for _, k in ipairs(sorted_keys(t)) do
        parts[#parts + 1] = jsonl.json_string(tostring(k)) .. ":" .. value_json(t[k])
    end
    return "{" .. table.concat(parts, ",") .. "}"
end

function M.stats_text(t, prefix)
    prefix = prefix or ""
    local lines = {}
    for _, k in ipairs(sorted_keys(t)) do
        local v = t[k]
        if type(v) == "table" then
            lines[#lines + 1] = prefix .. "[" .. tostring(k) .. "]\n" .. M.stats_text(v, prefix)
        else
            lines[#lines + 1] = prefix .. tostring(k) .. " " .. tostring(v) .. "\n"
        end
    end
    return table.concat(lines)
end

return M
