-- armdb.jobs.verify: every data file of a store, a collection or each
-- collection of a database checked, live entries and dead ones: the
-- checksum of every entry, the tag of every sealed page, every hint, each
-- file's length (armdb_verify, through store:verify).
--
--   local r, msg, code = jobs.verify(target, opts)
--
-- opts: progress = true (a bar on a terminal) or a bar object;
--       on_damage(ev, name): called for each damage as it is found (name:
--         the collection, for a database).
-- Returns, for a store or collection, store:verify's report (files,
-- entries, bytes, pages, hints, damage, damaged_entries, damaged_pages,
-- damaged_hints, short_files, unread_files, damages = { {what, shard,
-- file, path, offset, length, code, message} }, ok) with what the open
-- counted besides: corrupt_entries (entries of immutable files that failed
-- their checksum when scanned at open) and torn_bytes (a torn tail cut at
-- open). For a database: { collections = { NAME = report }, names (sorted),
-- damage (the sum), ok (every one ok) }. ok says only that nothing is
-- damaged now; what the open counted is for the caller to weigh (the
-- command counts it as damage). nil, message, code if it could not run.
local progress = require("armdb.jobs.progress")
local target = require("armdb.jobs.target")

local function one(s, name, opts, bar, done)
    local st, msg, code = s:stats()
    if st == nil then
        return nil, msg, code
    end
    local files = 0
    local r
    r, msg, code = s:verify(function(ev)
        if ev.what == "file" then
            files = files + 1
            done.bytes = done.bytes + ev.length
            bar:step(done.files + files, done.bytes)
        elseif opts.on_damage then
            opts.on_damage(ev, name)
        end
    end)
    if r == nil then
        return nil, msg, code
    end
    done.files = done.files + files
    r.corrupt_entries = st.corrupt_entries
    r.torn_bytes = st.torn_bytes
    return r
end

return function(x, opts)
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb.jobs.verify: opts must be a table, got " .. type(opts), 2)
    end
    opts = opts or {}
    if opts.on_damage ~= nil and type(opts.on_damage) ~= "function" then
        error("armdb.jobs.verify: opts.on_damage must be a function, got " .. type(opts.on_damage), 2)
    end
    local list, msg, code = target.stores_of("verify", x, 2)
    if list == nil then
        return nil, msg, code
    end
    local total = 0
    for _, e in ipairs(list) do
        local st = e.store:stats()
        total = total + (st and st.live_bytes + st.dead_bytes or 0)
    end
    local bar = progress.of(opts.progress, "verify", total)
    local done = { files = 0, bytes = 0 }
    if target.kind(x) ~= "database" then
        local r
        r, msg, code = one(list[1].store, nil, opts, bar, done)
        bar:done()
        return r, msg, code
    end
    local out = { collections = {}, names = {}, damage = 0, ok = true }
    for _, e in ipairs(list) do
        local r
        r, msg, code = one(e.store, e.name, opts, bar, done)
        if r == nil then
            bar:done()
            return nil, "collection " .. e.name .. ": " .. msg, code
        end
        out.collections[e.name] = r
        out.names[#out.names + 1] = e.name
        out.damage = out.damage + r.damage
        out.ok = out.ok and r.ok
    end
    bar:done()
    return out
end
