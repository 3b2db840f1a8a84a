-- armdb.jobs.backup: online backups of a store or a database, their
-- restore, and the check that a restored copy equals its source.
--
--   backup(source, dest, opts)   -> { gsn, kind, collections, bytes, changes, incremental }
--   restore(backup, target, opts) -> { gsn, kind, bytes, collections }
--   check(copy, source, opts)     -> { ok, compared, changed_since, mismatched, samples, ... }
--
-- source is an open raw store (armdb.store) or database (armdb.open),
-- opened for writing: a backup is taken while writes go on, at one GSN.
--
-- A full backup (dest must not exist) is built in dest .. ".partial": the
-- cut is taken for every collection in one go (checkpoints, see CHECKPOINTS
-- in armdb.h; nothing of this Lua state writes between them, and a store
-- has one writer process), then the files are copied a few MiB at a time
-- (opts.step_bytes; opts.yield(), if given, is called between steps, so a
-- caller on an event loop can let requests through), the CATALOG with
-- them, and a manifest, BACKUP (JSON: kind, the GSN of each collection,
-- state), is written last; then the directory is renamed to dest. An
-- interrupted backup leaves only the .partial directory, which the next
-- run removes before it starts again.
--
-- opts.incremental brings an existing backup at dest up to date from the
-- change feed: BACKUP is marked "updating", every collection's feed since
-- its GSN is opened in one go (the cut), each change is applied to the
-- backup with its GSN (armdb_apply), the stores are synced, and BACKUP is
-- marked complete with the new GSNs. Applying a change twice is harmless,
-- so an interrupted incremental backup is simply run again (a backup
-- marked "updating" is refused by restore until then). When the source no
-- longer keeps the changes since the backup (compaction dropped a delete
-- after it: armdb.codes.COMPACTED), it says so; take a full backup.
--
-- A backup of a database is a database directory (CATALOG, one store per
-- collection) plus BACKUP; of a store, a store directory plus BACKUP. An
-- encrypted source's backup stays encrypted with the same key, which
-- opts.encryption_key gives where the source's own options do not (raw
-- stores). Restore it in place of its source (see CHECKPOINTS in armdb.h
-- on nonces before writing to a copy that lives beside its source).
--
-- restore copies a complete backup to target (which must not exist)
-- through target .. ".partial", fsynced and renamed at the end, then opens
-- every store of it read-only to see that it opens whole.
--
-- check compares a copy (a restored directory, or a backup) with its
-- source: every key the source has not written since the copy's GSN (its
-- change feed from that GSN says which it has) must have the same value in
-- both, and be in both or in neither. The GSNs come from opts.gsn, or the
-- BACKUP manifest of opts.manifest (a backup's directory) or of the copy.
local armdb_store = require("armdb.store")
local fs = require("armdb.fs")
local lib = require("armdb.lib")
local target = require("armdb.jobs.target")
local progress = require("armdb.jobs.progress")

local C = lib.C
local EXISTS, INVAL, COMPACTED = C.ARMDB_EXISTS, C.ARMDB_INVAL, C.ARMDB_COMPACTED

local M = {}

local STEP_BYTES = 4194304
local MANIFEST = "BACKUP"

local function cjson()
    return require("cjson").new()
end

local dirname = fs.dirname

-- The raw store under a collection's policies, if any.
local function raw_of(s)
    return rawget(s, "_raw") or s
end

-- The stores of source: { { name = collection name or nil, store = raw } },
-- kind, the key (for opening copies), or nil, message, code.
local function sources(job, source, level)
    local kind = target.kind(source)
    if kind == "store" then
        if not source:is_open() then
            error("armdb.jobs." .. job .. ": " .. tostring(source) .. " is closed", level)
        end
        return { { store = source } }, kind
    elseif kind == "database" then
        local names, msg, code = source:collections()
        if names == nil then
            return nil, msg, code
        end
        local out = {}
        for _, name in ipairs(names) do
            local coll, m, c = source:collection(name)
            if coll == nil then
                return nil, m, c
            end
            out[#out + 1] = { name = name, store = raw_of(coll._store) }
        end
        return out, kind
    elseif kind == "collection" then
        error("armdb.jobs." .. job .. ": back up the database of collection " .. source.name
            .. ", not the collection alone (its CATALOG entry goes with it)", level)
    end
    error("armdb.jobs." .. job .. ": needs a store or a database, got " .. tostring(source), level)
end

local function read_manifest(dir)
    local f = io.open(dir .. "/" .. MANIFEST, "rb")
    if f == nil then
        return nil, "no backup at " .. dir .. " (no " .. MANIFEST .. " file)", -fs.ENOENT
    end
    local text = f:read("*a")
    f:close()
    local ok, m = pcall(cjson().decode, text)
    if not ok or type(m) ~= "table" or m.format ~= 1 or (m.kind ~= "store" and m.kind ~= "database")
        or type(m.collections) ~= "table" or type(m.gsn) ~= "number" then
        return nil, dir .. "/" .. MANIFEST .. " is damaged or of another version", C.ARMDB_CORRUPT
    end
    return m
end

local function write_manifest(dir, m)
    local j = cjson()
    if j.encode_sort_keys then
        j.encode_sort_keys(true)
    end
    return fs.replace(dir, MANIFEST, j.encode(m) .. "\n")
end

-- The GSNs of a backup's collections: a table keyed by name ("" for a
-- store), and the largest.
local function manifest_of(kind, list, gsns)
    local cols, top = {}, 0
    for i, s in ipairs(list) do
        cols[s.name or ""] = gsns[i]
        if gsns[i] > top then
            top = gsns[i]
        end
    end
    return { format = 1, kind = kind, state = "complete", gsn = top, collections = cols, time = os.time() }
end

local function check_opts(job, opts, known, level)
    if opts == nil then
        return {}
    end
    if type(opts) ~= "table" then
        error("armdb.jobs." .. job .. ": options must be a table, got " .. type(opts), level)
    end
    for k in pairs(opts) do
        if not known[k] then
            error("armdb.jobs." .. job .. ": unknown option " .. tostring(k), level)
        end
    end
    return opts
end

local BACKUP_OPTS = { incremental = true, link = true, step_bytes = true, yield = true, progress = true,
    encryption_key = true }

-- ---- full backups ----

local function full_backup(list, kind, source, dest, opts)
    local tmp = dest .. ".partial"
    local report = { kind = kind, incremental = false, bytes = 0, changes = 0 }
    if fs.is_dir(tmp) then
        local ok, msg, code = fs.remove_tree(tmp)
        if not ok then
            return nil, msg, code
        end
        report.removed_partial = true
    end
    local cps = {}
    local function close_all()
        for _, cp in pairs(cps) do
            cp:close()
        end
    end
    local ok, msg, code
    if kind == "database" then
        ok, msg, code = fs.mkdir(tmp)
        if ok == nil then
            return nil, msg, code
        end
    end
    -- The cut, for every store in one go.
    for i, s in ipairs(list) do
        local cp, m, c = s.store:checkpoint(kind == "database" and (tmp .. "/" .. s.name) or tmp,
            { link = opts.link == true })
        if cp == nil then
            close_all()
            return nil, m, c
        end
        cps[i] = cp
    end
    if kind == "database" then
        ok, msg, code = fs.copy_file(source.dir .. "/CATALOG", tmp .. "/CATALOG")
        if ok and fs.exists(source.dir .. "/BATCH") == true then
            ok, msg, code = fs.copy_file(source.dir .. "/BATCH", tmp .. "/BATCH")
        end
        if not ok then
            close_all()
            return nil, msg, code
        end
    end
    local total = 0
    for i = 1, #cps do
        local _, _, t = cps[i]:step(0) -- sizes only: the first step copies at least one chunk
        total = total + (t or 0)
    end
    local bar = progress.of(opts.progress, "backup", total)
    local before, gsns = 0, {}
    for i, cp in ipairs(cps) do
        local done
        while true do
            local more, d, c = cp:step(opts.step_bytes or STEP_BYTES)
            if more == nil then
                bar:done()
                close_all()
                return nil, d, c
            end
            done = d
            bar:step(before + done, before + done)
            if not more then
                break
            end
            if opts.yield then
                opts.yield()
            end
        end
        before = before + done
        gsns[i] = cp.gsn
    end
    bar:done()
    close_all()
    report.bytes = before
    local m = manifest_of(kind, list, gsns)
    ok, msg, code = write_manifest(tmp, m)
    if ok then
        ok, msg, code = fs.rename(tmp, dest, dirname(dest))
    end
    if not ok then
        return nil, msg, code
    end
    report.gsn, report.collections = m.gsn, m.collections
    return report
end

-- ---- incremental backups ----

local function store_opts(opts, source)
    local key = opts.encryption_key
    if key == nil and target.kind(source) == "database" then
        key = source._opts.encryption_key
    end
    return { sync = "none", encryption_key = key }
end

local function incremental_backup(list, kind, source, dest, opts)
    local m, msg, code = read_manifest(dest)
    if m == nil then
        return nil, msg, code
    end
    if m.kind ~= kind then
        return nil, "the backup at " .. dest .. " is of a " .. m.kind .. ", not of a " .. kind, INVAL
    end
    for _, s in ipairs(list) do
        if m.collections[s.name or ""] == nil then
            return nil, "collection " .. tostring(s.name) .. " is newer than the backup at " .. dest
                .. ": take a full backup", INVAL
        end
    end
    -- The cut: every feed opened in one go.
    local feeds, ends = {}, {}
    for i, s in ipairs(list) do
        local nxt, last, c = s.store:changes(m.collections[s.name or ""])
        if nxt == nil then
            if c == COMPACTED then
                last = last .. "; the backup at " .. dest .. " cannot be brought up to date: take a full backup"
            end
            return nil, last, c
        end
        feeds[i], ends[i] = nxt, last
    end
    local state = m.state
    m.state = "updating"
    local ok
    ok, msg, code = write_manifest(dest, m)
    if not ok then
        return nil, msg, code
    end
    local sopts = store_opts(opts, source)
    local bar = progress.of(opts.progress, "backup", nil)
    local n = 0
    for i, s in ipairs(list) do
        local dir = kind == "database" and (dest .. "/" .. s.name) or dest
        local b, bmsg, bcode = armdb_store.open(dir, sopts)
        if b == nil then
            bar:done()
            return nil, bmsg, bcode
        end
        for k, v, gsn, deleted in feeds[i] do
            ok, msg, code = b:apply(k, v, gsn, deleted)
            if not ok then
                b:close()
                bar:done()
                return nil, msg, code
            end
            n = n + 1
            bar:step(n)
            if opts.yield and n % 1000 == 0 then
                opts.yield()
            end
        end
        ok, msg, code = b:sync()
        if ok then
            ok, msg, code = b:close()
        else
            b:close()
        end
        if not ok then
            bar:done()
            return nil, msg, code
        end
        m.collections[s.name or ""] = ends[i]
    end
    bar:done()
    local top = 0
    for _, g in pairs(m.collections) do
        top = g > top and g or top
    end
    m.gsn, m.state, m.time = top, "complete", os.time()
    ok, msg, code = write_manifest(dest, m)
    if not ok then
        return nil, msg, code
    end
    return { kind = kind, incremental = true, changes = n, bytes = 0, gsn = m.gsn, collections = m.collections,
        resumed = state == "updating" or nil }
end

function M.backup(source, dest, opts)
    if type(dest) ~= "string" or dest == "" then
        error("armdb.jobs.backup: dest must be a path, got " .. tostring(dest), 2)
    end
    opts = check_opts("backup", opts, BACKUP_OPTS, 3)
    local list, kind, code = sources("backup", source, 3)
    if list == nil then
        return nil, kind, code
    end
    dest = dest:gsub("/+$", "")
    if opts.incremental then
        return incremental_backup(list, kind, source, dest, opts)
    end
    if fs.exists(dest) == true then
        return nil, "backup: " .. dest .. " exists (an earlier backup? --incremental brings it up to date)", EXISTS
    end
    return full_backup(list, kind, source, dest, opts)
end

-- ---- restore ----

-- Every file under dir (relative paths), skipping the manifest and what
-- belongs to a live store (LOCK, temporary files).
local function walk(dir, rel, out)
    local names, msg, code = fs.list(dir .. (rel ~= "" and ("/" .. rel) or ""))
    if names == nil then
        return nil, msg, code
    end
    for _, name in ipairs(names) do
        local r = rel ~= "" and (rel .. "/" .. name) or name
        if fs.is_dir(dir .. "/" .. r) then
            out[#out + 1] = { path = r, dir = true }
            local ok, m, c = walk(dir, r, out)
            if not ok then
                return nil, m, c
            end
        elseif not (rel == "" and name == MANIFEST) and name ~= "LOCK" and not name:match("%.tmp$") then
            out[#out + 1] = { path = r }
        end
    end
    return out
end

local RESTORE_OPTS = { progress = true, encryption_key = true }

function M.restore(backup, dest, opts)
    if type(backup) ~= "string" or type(dest) ~= "string" then
        error("armdb.jobs.restore: needs the backup's directory and a target directory", 2)
    end
    opts = check_opts("restore", opts, RESTORE_OPTS, 3)
    backup, dest = backup:gsub("/+$", ""), dest:gsub("/+$", "")
    local m, msg, code = read_manifest(backup)
    if m == nil then
        return nil, msg, code
    end
    if m.state ~= "complete" then
        return nil, "the backup at " .. backup .. " is incomplete (an incremental backup was cut short): run it"
            .. " again first", INVAL
    end
    if fs.exists(dest) == true then
        return nil, "restore: " .. dest .. " exists", EXISTS
    end
    local tmp = dest .. ".partial"
    if fs.is_dir(tmp) then
        local ok, rmsg, rcode = fs.remove_tree(tmp)
        if not ok then
            return nil, rmsg, rcode
        end
    end
    local files, wmsg, wcode = walk(backup, "", {})
    if files == nil then
        return nil, wmsg, wcode
    end
    local total = 0
    for _, f in ipairs(files) do
        if not f.dir then
            local h = io.open(backup .. "/" .. f.path, "rb")
            total = total + (h and h:seek("end") or 0)
            if h then
                h:close()
            end
        end
    end
    local bar = progress.of(opts.progress, "restore", total)
    local done = 0
    local ok
    ok, msg, code = fs.mkdir(tmp)
    local dirs = { tmp }
    for _, f in ipairs(files) do
        if ok == nil then
            break
        end
        if f.dir then
            ok, msg, code = fs.mkdir(tmp .. "/" .. f.path)
            dirs[#dirs + 1] = tmp .. "/" .. f.path
        else
            ok, msg, code = fs.copy_file(backup .. "/" .. f.path, tmp .. "/" .. f.path, function(n)
                done = done + n
                bar:step(done, done)
            end)
        end
    end
    bar:done()
    for i = #dirs, 1, -1 do
        if ok == nil then
            break
        end
        ok, msg, code = fs.fsync_path(dirs[i])
    end
    if ok == nil then
        return nil, msg, code
    end
    ok, msg, code = fs.rename(tmp, dest, dirname(dest))
    if not ok then
        return nil, msg, code
    end
    -- It opens, whole.
    local report = { kind = m.kind, gsn = m.gsn, bytes = done, collections = {} }
    for name in pairs(m.collections) do
        local dir = m.kind == "database" and (dest .. "/" .. name) or dest
        local s, smsg, scode = armdb_store.open(dir, { read_only = true, encryption_key = opts.encryption_key })
        if s == nil then
            return nil, smsg, scode
        end
        local st = s:stats()
        s:close()
        if st.corrupt_entries > 0 or st.torn_bytes > 0 then
            return nil, "restored store " .. dir .. " has damage (" .. st.corrupt_entries .. " entries, "
                .. st.torn_bytes .. " torn bytes)", C.ARMDB_CORRUPT
        end
        report.collections[name] = { gsn = m.collections[name], keys = st.keys }
    end
    return report
end

-- ---- check ----

local CHECK_OPTS = { gsn = true, encryption_key = true, samples = true, manifest = true }

-- Compare raw stores copy and src at GSN gsn into r.
local function compare(copy, src, gsn, r, max_samples, label)
    local changed, unknown = {}, false
    local nxt, last, code = src:changes(gsn)
    if nxt == nil then
        if code ~= COMPACTED then
            return nil, last, code
        end
        unknown = true
    else
        for k in nxt do
            changed[k] = true
        end
    end
    local function note(k, why)
        r.mismatched = r.mismatched + 1
        if #r.samples < max_samples then
            r.samples[#r.samples + 1] = (label and (label .. ": ") or "") .. why .. " at key "
                .. (k:gsub("[^%w%-_.:]", function(ch) return string.format("\\x%02x", ch:byte()) end))
        end
    end
    for k, v in src:pairs() do
        if changed[k] then
            r.changed_since = r.changed_since + 1
        else
            r.compared = r.compared + 1
            local cv = copy:get(k)
            if cv == nil then
                note(k, "missing from the copy")
            elseif cv ~= v then
                note(k, "a different value")
            end
        end
    end
    for k in copy:pairs() do
        if not changed[k] and src:get(k) == nil then
            note(k, "only in the copy")
        end
    end
    r.unknown = r.unknown or unknown
    return true
end

function M.check(copy, source, opts)
    if type(copy) ~= "string" then
        error("armdb.jobs.check: copy must be a directory, got " .. tostring(copy), 2)
    end
    opts = check_opts("check", opts, CHECK_OPTS, 3)
    local list, kind, code = sources("check", source, 3)
    if list == nil then
        return nil, kind, code
    end
    local gsns = {}
    if opts.gsn == nil then
        local m, msg, mcode = read_manifest(opts.manifest or copy)
        if m == nil then
            return nil, msg .. " (give opts.gsn for a copy without one)", mcode
        end
        gsns = m.collections
    end
    local key = opts.encryption_key
    if key == nil and kind == "database" then
        key = source._opts.encryption_key
    end
    local r = { compared = 0, changed_since = 0, mismatched = 0, samples = {}, unknown = false }
    for _, s in ipairs(list) do
        local dir = kind == "database" and (copy .. "/" .. s.name) or copy
        local c, msg, ccode = armdb_store.open(dir, { read_only = true, encryption_key = key })
        if c == nil then
            return nil, msg, ccode
        end
        local ok, m2, c2 = compare(c, s.store, opts.gsn or gsns[s.name or ""] or 0, r, opts.samples or 10, s.name)
        c:close()
        if not ok then
            return nil, m2, c2
        end
    end
    r.ok = r.mismatched == 0
    return r
end

return M
