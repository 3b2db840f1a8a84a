-- armdb.jobs: batch jobs over stores, collections and databases, callable
-- from Lua and behind the `armdb` command (export, import, verify, stats,
-- compact), and a scheduler that runs periodic work in short slices.
--
--   local jobs = require("armdb.jobs")
--   jobs.export(target, out, opts)     -> { exported, bytes, name }
--   jobs.import(target, input, opts)   -> { lines, imported, rejected, rejects, ok, ... }
--   jobs.verify(target, opts)          -> { entries, damage, damages, ok, ... }
--   jobs.stats(target)                 -> a table of counters
--   jobs.compact(target)               -> { files_compacted, bytes_reclaimed, ... }
--   jobs.sweep(db, opts)               -> { purged, collections = { NAME = purged } }
--   jobs.backup(source, dest, opts)    -> { gsn, bytes, changes, collections, ... }
--   jobs.restore(backup, dir, opts)    -> { gsn, bytes, collections }
--   jobs.check(copy, source, opts)     -> { ok, compared, changed_since, mismatched, samples }
--   jobs.scheduler.new(opts)           -> a scheduler (armdb.jobs.scheduler)
--
-- target is a raw store (armdb.store), a collection (db:collection), or a
-- database (armdb.open; export and import need opts.collection). Each job
-- returns its report, or nil, message, code when it could not do its work;
-- misuse raises at the caller. With opts.progress = true a job draws a
-- progress bar on stderr when stderr is a terminal (armdb.jobs.progress).
-- Each module's header says the rest.
local M = {}

M.export = require("armdb.jobs.export")
M.import = require("armdb.jobs.import")
M.verify = require("armdb.jobs.verify")
local stats = require("armdb.jobs.stats")
M.stats, M.stats_text, M.stats_json = stats.stats, stats.stats_text, stats.stats_json
local compact = require("armdb.jobs.compact")
M.compact, M.compact_step = compact.compact, compact.compact_step
M.progress = require("armdb.jobs.progress")
M.sweep = require("armdb.jobs.sweep").sweep
local backup = require("armdb.jobs.backup")
M.backup, M.restore, M.check = backup.backup, backup.restore, backup.check

setmetatable(M, { __index = function(_, k)
    if k == "scheduler" then
        return require("armdb.jobs.scheduler")
    end
end })

return M
