-- armdb.jobs.compact: compaction now (armdb_compact) of a store, a
-- collection or every collection of a database, with what it did; and
-- the step the scheduler runs to compact a database's collections in turn.
--
--   jobs.compact(target) -> report | nil, message, code
--     report, for a store or collection: files_compacted, bytes_read,
--     bytes_written, bytes_reclaimed (this run's, from the counters
--     before and after), disk_before, disk_after (bytes of data files);
--     for a database: { collections = { NAME = report }, names, and the
--     sums of those fields }.
--
--   jobs.compact_step(db, opts) -> step(deadline), stats: one round visits
--     every collection open in the database handle (it opens none), at
--     most one compaction a call; a collection whose reclaimable share of
--     disk (dead / (live + dead) bytes) is at least opts.ratio (default
--     0.3) and whose dead bytes are at least opts.min_bytes (default 1 MiB)
--     is compacted, unless its policy (armdb.policy, where there is one)
--     keeps compaction to a window that is closed now. A compaction cannot be
--     cut short, so one call may run past its deadline by one store's
--     compaction (the C call holds each shard's lock only briefly: other
--     work in the process goes on meanwhile only in other threads).
--     Returns true when the round is done.
local target = require("armdb.jobs.target")

local M = {}

local FIELDS = { files_compacted = "compactions", bytes_read = "compact_bytes_read",
    bytes_written = "compact_bytes_written", bytes_reclaimed = "bytes_reclaimed" }

local function one(s)
    local before, msg, code = s:stats()
    if before == nil then
        return nil, msg, code
    end
    local ok
    ok, msg, code = s:compact()
    if not ok then
        return nil, msg, code
    end
    local after
    after, msg, code = s:stats()
    if after == nil then
        return nil, msg, code
    end
    local r = { disk_before = before.live_bytes + before.dead_bytes, disk_after = after.live_bytes + after.dead_bytes }
    for name, field in pairs(FIELDS) do
        r[name] = after[field] - before[field]
    end
    return r
end

function M.compact(x)
    local list, msg, code = target.stores_of("compact", x, 2)
    if list == nil then
        return nil, msg, code
    end
    if target.kind(x) ~= "database" then
        return one(list[1].store)
    end
    local out = { collections = {}, names = {}, disk_before = 0, disk_after = 0 }
    for name in pairs(FIELDS) do
        out[name] = 0
    end
    for _, e in ipairs(list) do
        local r
        r, msg, code = one(e.store)
        if r == nil then
            return nil, "collection " .. e.name .. ": " .. msg, code
        end
        out.collections[e.name] = r
        out.names[#out.names + 1] = e.name
        for k, v in pairs(r) do
            out[k] = out[k] + v
        end
    end
    return out
end

function M.compact_step(db, opts)
    if target.kind(db) ~= "database" then
        error("armdb.jobs.compact_step: needs a database, got " .. tostring(db), 2)
    end
    opts = opts or {}
    local ratio = opts.ratio or 0.3
    local min_bytes = opts.min_bytes or 1048576
    local clock = opts.clock
    local queue -- the names left in this round
    local have, policy = pcall(require, "armdb.policy")
    local function allowed(coll)
        return not (have and type(policy) == "table" and policy.compaction_allowed)
            or policy.compaction_allowed(coll)
    end
    local stats = { compactions = 0, checked = 0, last_error = nil }
    local function step(deadline)
        if queue == nil then
            queue = {}
            for name in pairs(db:is_open() and db._colls or {}) do
                queue[#queue + 1] = name
            end
            table.sort(queue)
        end
        while #queue > 0 do
            local name = table.remove(queue, 1)
            local coll = db:is_open() and db._colls[name]
            local st = coll and allowed(coll) and coll:stats()
            stats.checked = stats.checked + 1
            if st then
                local disk = st.live_bytes + st.dead_bytes
                if disk > 0 and st.dead_bytes >= min_bytes and st.dead_bytes / disk >= ratio then
                    local ok, msg = coll:compact()
                    if ok then
                        stats.compactions = stats.compactions + 1
                    else
                        stats.last_error = "collection " .. name .. ": " .. tostring(msg)
                    end
                    break -- one compaction a call
                end
            end
            if clock and deadline and clock() >= deadline then
                break
            end
        end
        if #queue == 0 then
            queue = nil
            return true
        end
        return false
    end
    return step, stats
end

return M
