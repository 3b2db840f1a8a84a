-- armdb.jobs.import: put the pairs of JSON lines (as export writes them,
-- armdb.jobs.jsonl) into a store or collection, what `armdb import`
-- (alias `load`) does.
--
--   local r, msg, code = jobs.import(target, input, opts)
--
-- target  a raw store, a collection, or a database with opts.collection
-- input   a path, a file handle (read to its end, left open), a function
--         returning the next line (nil at the end), or an array of lines
-- opts    name: what messages call the input (default: the path, or
--           "input"); progress: true (a bar on a terminal) or a bar object;
--         on_reject(line_no, reason, text): called for each bad record;
--         max_rejects: stop after that many (default: no limit);
--         sync = false: do not sync the store at the end (default: the
--           pairs are durable when import returns);
--         collection = NAME for a database
--
-- Each record is checked against the target before anything is written:
-- well-formed JSON, a key and a value, hex that is hex, a key and value
-- the collection's codecs take (type, range, fixed lengths), or for a raw
-- store a key of key_len bytes and (fixed-value stores) a value of
-- value_len bytes. A bad record is rejected with its line number and the
-- reason, and the lines after it go on; empty lines are skipped. A put the
-- store refuses for the record's sake (ARMDB_KEYLEN, ARMDB_TOOBIG) is a
-- rejection too; any other failure of the store (read-only, a full or
-- failing disk) stops the import: nil, "NAME:LINE: message", code, and the
-- report so far as a fourth value.
--
-- Idempotent by key: a record sets its key to its value, whatever was
-- there, so an import cut short (a crash, kill -9) and run again over the
-- same input ends with the store as one uninterrupted run leaves it: the
-- records are applied again in the same order, the last record of a key
-- winning. Keys the input does not name are never touched.
--
-- Returns { name, lines, imported, rejected, empty, rejects = the first
-- 1000 { line, reason }, ok = (rejected == 0), stopped = max_rejects hit }.
local lib = require("armdb.lib")
local jsonl = require("armdb.jobs.jsonl")
local progress = require("armdb.jobs.progress")
local target = require("armdb.jobs.target")

local C = lib.C
local REJECTED_BY_STORE = { [C.ARMDB_KEYLEN] = true, [C.ARMDB_TOOBIG] = true, [C.ARMDB_INVAL] = true }
local KEEP_REJECTS = 1000

-- A function returning the lines of input, its name, its size (or nil),
-- and a closer.
local function lines_of(input, name, level)
    local it = type(input)
    if it == "string" then
        local f, err = io.open(input, "rb")
        if not f then
            return nil, "cannot read " .. tostring(err)
        end
        local size = f:seek("end")
        f:seek("set", 0)
        return f:lines(), name or input, size ~= 0 and size or nil, function() f:close() end
    elseif it == "function" then
        return input, name or "input"
    elseif (it == "userdata" or it == "table") and type(input.lines) == "function" then
        return input:lines(), name or "input"
    elseif it == "table" then
        local i = 0
        return function()
            i = i + 1
            return input[i]
        end, name or "input"
    end
    error("armdb.jobs.import: input must be a path, a file, a function or an array of lines, got " .. it, level)
end

return function(x, input, opts)
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb.jobs.import: opts must be a table, got " .. type(opts), 2)
    end
    opts = opts or {}
    if opts.on_reject ~= nil and type(opts.on_reject) ~= "function" then
        error("armdb.jobs.import: opts.on_reject must be a function, got " .. type(opts.on_reject), 2)
    end
    if opts.max_rejects ~= nil and (type(opts.max_rejects) ~= "number" or opts.max_rejects < 1) then
        error("armdb.jobs.import: opts.max_rejects must be a number >= 1, got " .. tostring(opts.max_rejects), 2)
    end
    local nxt, name, size, closer = lines_of(input, opts.name, 3)
    if nxt == nil then
        return nil, name, -2
    end
    local t, msg, code = target.pairs_of("import", x, opts, 2)
    if t == nil then
        if closer then
            closer()
        end
        return nil, msg, code
    end
    local r = { name = name, lines = 0, imported = 0, rejected = 0, empty = 0, rejects = {}, ok = true,
        stopped = false }
    local bar = progress.of(opts.progress, "import", size)
    local bytes = 0
    local function reject(reason, text)
        r.rejected = r.rejected + 1
        if #r.rejects < KEEP_REJECTS then
            r.rejects[#r.rejects + 1] = { line = r.lines, reason = reason }
        end
        if opts.on_reject then
            opts.on_reject(r.lines, reason, text)
        end
        if opts.max_rejects and r.rejected >= opts.max_rejects then
            r.stopped = true
        end
    end
    local failed
    local handle = t.handle
    for line in nxt do
        r.lines = r.lines + 1
        bytes = bytes + #line + 1
        if line:find("%S") then
            local k, v = jsonl.decode(t, line)
            if k == nil then
                reject(v, line)
            else
                local ok, perr, pcode = handle:put(k, v)
                if ok then
                    r.imported = r.imported + 1
                elseif REJECTED_BY_STORE[pcode] then
                    reject(perr, line)
                else
                    failed = { name .. ":" .. r.lines .. ": " .. tostring(perr), pcode }
                end
            end
            bar:step(r.imported, size and bytes)
        else
            r.empty = r.empty + 1
        end
        if failed or r.stopped then
            break
        end
    end
    bar:done()
    if closer then
        closer()
    end
    r.ok = r.rejected == 0 and not failed
    if opts.sync ~= false then
        local ok, serr, scode = t.store:sync()
        if not ok and not failed then
            failed = { name .. ": sync of " .. t.name .. " failed: " .. tostring(serr), scode }
        end
    end
    if failed then
        return nil, failed[1], failed[2], r
    end
    return r
end
