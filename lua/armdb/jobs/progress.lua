-- armdb.jobs.progress: the progress bar of the batch jobs, drawn on stderr
-- and only when stderr is a terminal (so logs and pipes stay clean).
--
--   local bar = progress.new("export", total)   -- total: a count, bytes, or nil
--   bar:step(n)            -- n things done (drawn as n, and as n / total)
--   bar:step(n, done)      -- n things done, `done` of total (bytes, say)
--   bar:done()             -- clear the line
--
-- The line is redrawn only when the percentage (or, without a total,
-- n / 10000) changes, so a step costs a comparison. progress.silent is a
-- bar that draws nothing; progress.new returns it off a terminal, and
-- progress.of(opts.progress, label, total) turns a job's option into a
-- bar: true for a terminal bar, a bar object as is, nil/false silent.
local ffi = require("ffi")

pcall(ffi.cdef, "int isatty(int fd);")

local M = {}

local Progress = {}
Progress.__index = Progress

local SILENT = { step = function() end, done = function() end }
M.silent = SILENT

-- Replaceable, for tests: is stderr a terminal?
function M.is_tty()
    return ffi.C.isatty(2) == 1
end

function M.new(label, total, out)
    if out == nil and not M.is_tty() then
        return SILENT
    end
    return setmetatable({ label = label, total = total, n = 0, shown = -1, out = out or io.stderr }, Progress)
end

function M.of(opt, label, total)
    if opt == true then
        return M.new(label, total)
    elseif type(opt) == "table" and type(opt.step) == "function" then
        return opt
    end
    return SILENT
end

function Progress:step(n, done)
    self.n = n
    local pos = done or n
    local pct = (self.total and self.total > 0) and math.floor(pos * 100 / self.total) or nil
    local key = pct or math.floor(n / 10000)
    if key == self.shown then
        return
    end
    self.shown = key
    if pct then
        pct = math.min(pct, 100)
        local w = math.floor(pct * 30 / 100)
        self.out:write(string.format("\r%s [%s%s] %3d%% %d", self.label, string.rep("#", w),
            string.rep(".", 30 - w), pct, n))
    else
        self.out:write(string.format("\r%s %d", self.label, n))
    end
end

function Progress:done()
    self.out:write("\r\27[K")
end

return M
