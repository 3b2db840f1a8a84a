-- armdb.jobs.export: every live pair of a store or collection as JSON
-- lines (armdb.jobs.jsonl), what `armdb export` (alias `dump`) writes.
--
--   local r, msg, code = jobs.export(target, out, opts)
--
-- target  a raw store, a collection, or a database with opts.collection
-- out     a path (written, then closed), a file handle (written, flushed,
--         left open), or a function called with each line
-- opts    hex = true: raw stores' keys and values always as hex;
--         progress = true (a bar on a terminal) or a bar object;
--         collection = NAME for a database
-- Returns { exported = pairs written, bytes = bytes written, name }, or
-- nil, message, code: a damaged entry stops the export (armdb verify
-- says where), as does a failed write. Pairs are read through the
-- target's scan: a store being written meanwhile gives each key once,
-- with the value current when it is reached (not a point-in-time copy).
local jsonl = require("armdb.jobs.jsonl")
local progress = require("armdb.jobs.progress")
local target = require("armdb.jobs.target")

local CORRUPT = require("armdb.lib").C.ARMDB_CORRUPT

local function clean(e)
    local msg = tostring(e):match("^[^\n]*")
    msg = msg:gsub("^[^:]*%.lua:%d+: ", "")
    return (msg:gsub("^armdb: ", ""))
end

return function(x, out, opts)
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb.jobs.export: opts must be a table, got " .. type(opts), 2)
    end
    opts = opts or {}
    local ot = type(out)
    if ot ~= "string" and ot ~= "function" and not ((ot == "userdata" or ot == "table") and out.write) then
        error("armdb.jobs.export: out must be a path, a file or a function, got " .. ot, 2)
    end
    local t, msg, code = target.pairs_of("export", x, opts, 2)
    if t == nil then
        return nil, msg, code
    end
    local f, where = out, "the output"
    if ot == "string" then
        local err
        f, err = io.open(out, "wb")
        if not f then
            return nil, "cannot write " .. tostring(err), -5
        end
        where = out
    end
    local write
    if ot == "function" then
        write = function(line)
            out(line)
            return true
        end
    else
        if f.setvbuf then
            f:setvbuf("full")
        end
        write = function(line)
            return f:write(line)
        end
    end
    local bar = progress.of(opts.progress, "export", t.handle:count())
    local n, bytes = 0, 0
    local hex = opts.hex == true
    local failure
    local ok, err = pcall(function()
        for k, v in t.handle:pairs() do
            local line = jsonl.encode(t, k, v, hex) .. "\n"
            local w, werr = write(line)
            if not w then
                failure = { "cannot write " .. where .. ": " .. tostring(werr), -5 }
                return
            end
            n = n + 1
            bytes = bytes + #line
            bar:step(n)
        end
    end)
    bar:done()
    if ot == "string" then
        local c, cerr = f:close()
        if not c and not failure then
            failure = { "cannot write " .. where .. ": " .. tostring(cerr), -5 }
        end
    elseif ot ~= "function" and f.flush then
        f:flush()
    end
    if not ok then
        return nil, "export of " .. t.name .. " stopped after " .. n .. " pairs: " .. clean(err), CORRUPT
    end
    if failure then
        return nil, failure[1], failure[2]
    end
    return { exported = n, bytes = bytes, name = t.name }
end
