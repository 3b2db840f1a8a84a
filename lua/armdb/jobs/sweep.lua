-- armdb.jobs.sweep: purge the expired values (ttl) of a database now: the
-- TTL sweep of every collection that keeps expiries, each run to its end
-- (the scheduler runs the same sweep in slices).
--
--   jobs.sweep(db, opts) -> { purged, collections = { NAME = purged } }
--
-- Every collection of the catalog is opened (a collection created with a
-- ttl keeps its expiries whatever the spec of this open). opts.yield, if
-- given, is called between steps; opts.progress draws a bar.
local progress = require("armdb.jobs.progress")
local target = require("armdb.jobs.target")

local M = {}

function M.sweep(db, opts)
    opts = opts or {}
    if target.kind(db) ~= "database" then
        error("armdb.jobs.sweep: needs a database (armdb.open), got " .. tostring(db), 2)
    end
    if db.read_only then
        return nil, "sweep: database " .. db.dir .. " is open read-only", require("armdb.lib").C.ARMDB_READONLY
    end
    local names, msg, code = db:collections()
    if names == nil then
        return nil, msg, code
    end
    for _, name in ipairs(names) do
        local coll, m, c = db:collection(name)
        if coll == nil then
            return nil, m, c
        end
    end
    local policy = require("armdb.policy")
    local r = { purged = 0, collections = {} }
    local bar = progress.of(opts.progress, "sweep", #names)
    for i, task in ipairs(policy.tasks(db)) do
        local name = task.name:match("^ttl:(.*)$")
        if name then
            repeat
                local ok, done = pcall(task.step, nil)
                if not ok then
                    bar:done()
                    return nil, "sweep of " .. name .. ": " .. tostring(done), require("armdb.lib").C.ARMDB_INVAL
                end
                if not done and opts.yield then
                    opts.yield()
                end
            until done
            local P = db._colls[name]._policy
            local n = P.last_sweep and P.last_sweep.purged or 0
            r.collections[name] = n
            r.purged = r.purged + n
        end
        bar:step(i)
    end
    bar:done()
    return r
end

return M
