-- armdb.db: a database, a directory of named, typed collections.
--
--   DIR/CATALOG   JSON, the collections and their codecs:
--                 {"format":1,"collections":{"users":{"key":"u64","value":"json",
--                  "key_len":8,"value_len":0}}}
--                 ("expiry":true: its values carry an expiry, armdb.policy.ttl)
--   DIR/<name>/   one ordinary armdb store per collection
--
-- The CATALOG is replaced atomically (CATALOG.tmp, fsync, rename, fsync of
-- DIR) under a short flock on DIR, re-read inside that lock, so that two
-- processes adding collections at once both land. It is read once at open
-- and again when a collection is asked for that this handle has not seen.
-- Bytes read from it are checked field by field: a damaged CATALOG is
-- nil, "CATALOG of DIR: ...", CORRUPT, never a raise.
--
-- Collections are opened on first use and cached; each holds its store's
-- writer lock, so a second handle (or process) asking for a collection
-- already open for writing gets the store's LOCKED failure. A read-only
-- database (opts.read_only) takes no lock and works beside a writer.
--
-- Replication (armdb.replication): db:serve_replication(addr, opts) serves
-- every collection's store under the collection's name, with the catalog
-- as the leader's meta bytes (each collection with its "shards" added, so
-- that a replica creates its stores in the same shape); collections this
-- handle opens later (created here, or by another process and asked for
-- here) are served from then on. armdb.open(dir, { follow = addr, ... })
-- opens a replica: it fetches the leader's catalog, writes it as its own,
-- and opens and follows every collection's store (ARMDB_REPLICA: reads
-- work, writes fail with READONLY). If the leader cannot be reached, a
-- replica opened before goes on with the catalog it has (its followers
-- keep trying to connect). A collection the leader creates later is
-- followed when this handle asks for it (db:collection(name)), or at
-- db:follow_catalog().
local lib = require("armdb.lib")
local codecs = require("armdb.codecs")
local fs = require("armdb.fs")
local store = require("armdb.store")
local repl = require("armdb.replication")
local Collection = require("armdb.collection")
local policy = require("armdb.policy")

local C = lib.C
local type, error, pairs, tostring = type, error, pairs, tostring

local CORRUPT = C.ARMDB_CORRUPT
local BADKEY = C.ARMDB_BADKEY
local REKEY = "REKEY" -- the file that says a key rotation is under way (db:rekey)
local MISMATCH = C.ARMDB_MISMATCH
local INVAL = C.ARMDB_INVAL
local NOTFOUND = C.ARMDB_NOTFOUND
local READONLY = C.ARMDB_READONLY
local CONFLICT = C.ARMDB_CONFLICT
local EXISTS = C.ARMDB_EXISTS
local ETIMEDOUT = -110
local FORMAT = 1
local NAME_MAX = 64
local INLINE_MAX = C.ARMDB_INLINE_MAX

local cjson = require("cjson").new()
local quote = cjson.encode -- JSON string literal of a Lua string

local M = {}

-- ---- options ----

-- The store options a database passes on to every collection's store.
local OPTS = {
    shards = "number", write_buffer_size = "number", sync_interval_ms = "number",
    max_file_size = "number", cache_size = "number", compaction_threshold = "number",
    create = "boolean", read_only = "boolean", no_uring = "boolean", no_direct = "boolean",
    no_auto_compact = "boolean", shared = "boolean",
    sync = "string", sync_mode = "string", encryption_key = "string", previous_key = "string", cipher = "string",
    on_rekey = "function",
    follow = "string", -- a replica of the database served at that address; and its options:
    secret = "string", timeout_ms = "number", retry_min_ms = "number", retry_max_ms = "number",
    ack_interval_ms = "number",
}
local SYNC = { interval = true, none = true, always = true }

-- A checked copy of opts (raises at the caller of open on misuse, so the
-- store never raises later at a confusing place).
local function check_opts(opts)
    local out = {}
    for name, v in pairs(opts or {}) do
        local want = OPTS[name]
        if name == "key_len" or name == "value_len" then
            error("armdb.open: option " .. name .. " is set per collection, by its codec", 3)
        elseif name == "ordered" then
            error("armdb.open: option ordered is set per collection, in its spec", 3)
        elseif want == nil then
            error("armdb.open: unknown option " .. tostring(name), 3)
        elseif type(v) ~= want then
            error("armdb.open: option " .. name .. " must be a " .. want .. ", got " .. type(v), 3)
        elseif want == "number" and (v < 0 or v ~= v) then
            error("armdb.open: option " .. name .. " must be a non-negative number, got " .. tostring(v), 3)
        elseif (name == "sync" or name == "sync_mode") and not SYNC[v] then
            error("armdb.open: option " .. name .. ' must be "interval", "none" or "always", got '
                .. codecs.show(v), 3)
        end
        if name == "encryption_key" or name == "previous_key" then
            v = store.key_bytes(v, "armdb.open: option " .. name, 4)
        end
        out[name] = v
    end
    if out.previous_key and not out.encryption_key then
        error("armdb.open: option previous_key needs encryption_key (the key it is being replaced with)", 3)
    end
    for name in pairs(repl.FOLLOWER_OPTS) do
        if out[name] ~= nil then
            if not out.follow then
                error("armdb.open: option " .. name .. " is for a replica (give follow = \"HOST:PORT\")", 3)
            end
            repl.check_opt("armdb.open", name, out[name], 3)
        end
    end
    if out.follow and out.read_only then
        error("armdb.open: option follow cannot go with read_only (a replica takes its leader's writes)", 3)
    end
    return out
end

-- ---- names ----

local function check_name(name, level)
    if type(name) ~= "string" then
        error("armdb: collection name must be a string, got " .. type(name), level + 1)
    end
    if #name == 0 or #name > NAME_MAX or name == "." or name == ".."
        or not name:find("^[A-Za-z0-9_][A-Za-z0-9_.-]*$") then
        error("armdb: collection name " .. codecs.show(name) .. " is not valid (1.." .. NAME_MAX
            .. " bytes of A-Z a-z 0-9 _ . -, not starting with . or -)", level + 1)
    end
end

-- ---- the catalog ----

local function valid_name(name)
    return type(name) == "string" and #name >= 1 and #name <= NAME_MAX
        and name:find("^[A-Za-z0-9_][A-Za-z0-9_.-]*$") ~= nil
end

local function is_len(v, lo, hi)
    return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi
end

-- Check one entry read from disk: nil if good, else what is wrong.
local function entry_problem(name, e)
    if not valid_name(name) then
        return "collection name " .. codecs.show(name) .. " is not valid"
    end
    local where = "collection " .. name .. ": "
    if type(e) ~= "table" then
        return where .. "entry is not an object"
    end
    if type(e.key) ~= "string" then
        return where .. "key is not a string"
    end
    local ok, kc = pcall(codecs.key, e.key)
    if not ok then
        return where .. "unknown key codec " .. codecs.show(e.key)
    end
    if e.key_len ~= kc.len then
        return where .. "key_len is " .. tostring(e.key_len) .. ", codec " .. e.key .. " has " .. kc.len
    end
    if type(e.value) ~= "string" or e.value == "" then
        return where .. "value is not a codec name"
    end
    if not is_len(e.value_len, 0, INLINE_MAX) then
        return where .. "value_len " .. tostring(e.value_len) .. " is not 0.." .. INLINE_MAX
    end
    local vc = ({ raw = true, number = true, json = true, lua = true })[e.value] and codecs.value(e.value)
    if vc and vc.len ~= e.value_len then
        return where .. "value_len is " .. e.value_len .. ", codec " .. e.value .. " has " .. vc.len
    end
    if e.ordered ~= nil and type(e.ordered) ~= "boolean" then
        return where .. "ordered is not true or false"
    end
    if e.expiry ~= nil and type(e.expiry) ~= "boolean" then
        return where .. "expiry is not true or false"
    end
    return nil
end

local function parse_catalog(dir, text)
    local ok, cat = pcall(cjson.decode, text)
    local why
    if not ok then
        why = "not JSON: " .. tostring(cat)
    elseif type(cat) ~= "table" then
        why = "not a JSON object"
    elseif cat.format ~= FORMAT then
        why = "format is " .. codecs.show(cat.format) .. ", this armdb reads format " .. FORMAT
    elseif type(cat.collections) ~= "table" then
        why = "collections is not an object"
    else
        for name, e in pairs(cat.collections) do
            why = entry_problem(name, e)
            if why then
                break
            end
        end
    end
    if why then
        return nil, "CATALOG of " .. dir .. ": " .. why, CORRUPT
    end
    local colls = {}
    for name, e in pairs(cat.collections) do
        colls[name] = { key = e.key, value = e.value, key_len = e.key_len, value_len = e.value_len,
            ordered = e.ordered == true or nil, expiry = e.expiry == true or nil }
    end
    return { format = FORMAT, collections = colls }
end

-- The catalog of dir; false if there is none; nil, msg, code on failure.
local function read_catalog(dir)
    local path = dir .. "/CATALOG"
    local f, msg, errno = io.open(path, "rb")
    if f == nil then
        if errno == fs.ENOENT then
            return false
        end
        return nil, "CATALOG of " .. dir .. ": " .. tostring(msg), -(errno or 5)
    end
    local text = f:read("*a")
    f:close()
    if text == nil then
        return nil, "CATALOG of " .. dir .. ": read failed", -5
    end
    return parse_catalog(dir, text)
end

-- Sorted names of a collections table.
local names_of = require("armdb.util").sorted_keys

-- The catalog as JSON, collections in name order, one per line; with
-- shards (name -> count), each collection's "shards" too (what a leader
-- serves as its meta bytes).
local function catalog_json(cat, shards)
    local parts = {}
    for _, name in ipairs(names_of(cat.collections)) do
        local e = cat.collections[name]
        parts[#parts + 1] = string.format('  %s:{"key":%s,"value":%s,"key_len":%d,"value_len":%d%s%s%s}',
            quote(name), quote(e.key), quote(e.value), e.key_len, e.value_len, e.ordered and ',"ordered":true' or "",
            e.expiry and ',"expiry":true' or "", shards and shards[name] and ',"shards":' .. shards[name] or "")
    end
    if #parts == 0 then
        return '{"format":' .. FORMAT .. ',"collections":{}}\n'
    end
    return '{"format":' .. FORMAT .. ',"collections":{\n' .. table.concat(parts, ",\n") .. "\n}}\n"
end

-- Under the catalog lock: re-read the catalog, let change(cat) edit it
-- (it returns true to write it, false to leave it, or nil, msg, code),
-- write it if asked. Returns the catalog as now on disk, or nil, msg, code.
local function catalog_update(dir, change)
    return fs.with_lock(dir, function()
        local cat, msg, code = read_catalog(dir)
        if cat == nil then
            return nil, msg, code
        end
        if cat == false then
            cat = { format = FORMAT, collections = {} }
        end
        local write
        write, msg, code = change(cat)
        if write == nil then
            return nil, msg, code
        end
        if write then
            local ok
            ok, msg, code = fs.replace(dir, "CATALOG", catalog_json(cat))
            if not ok then
                return nil, "CATALOG of " .. dir .. ": " .. msg, code
            end
        end
        return cat
    end)
end

-- nil if entry e (of the catalog) agrees with codecs kc, vc; else the
-- MISMATCH message.
local function contradiction(name, e, kc, vc, ordered, ttl)
    local function differ(what, have, have_len, want, want_len)
        if have ~= want then
            return "collection " .. name .. ": " .. what .. " is " .. have .. " in the catalog, the spec asks for "
                .. want
        end
        if have_len ~= want_len then
            return "collection " .. name .. ": " .. what .. " is " .. have .. " of " .. have_len
                .. " bytes in the catalog, the spec asks for " .. want .. " of " .. want_len .. " bytes"
        end
    end
    local why = differ("key", e.key, e.key_len, kc.name, kc.len)
        or differ("value", e.value, e.value_len, vc.name, vc.len)
    if why == nil and (e.ordered == true) ~= ordered then
        why = "collection " .. name .. " is " .. (e.ordered and "" or "not ") .. "ordered in the catalog, the"
            .. " spec asks for ordered = " .. tostring(ordered)
    end
    -- (Values with an expiry are a format: the spec's ttl must agree.)
    if why == nil and (e.expiry == true) ~= (ttl ~= nil) then
        why = "collection " .. name .. (e.expiry and " has values with an expiry in the catalog, the spec has no ttl"
            or " has values without an expiry in the catalog, the spec asks for ttl = " .. tostring(ttl))
    end
    return why
end

-- ---- the database ----

local Db = {}
Db.__index = Db

local function check_open(self)
    if self._closed then
        error("armdb: database " .. self.dir .. " is closed", 3)
    end
end

-- Completes a batch a crash cut short (db:batch, below).
local settle_intent

-- Completes a key rotation a crash cut short (db:rekey, below): every
-- collection opened, which rotates those still on previous_key.
local function finish_rekey(db)
    local names, msg, code = db:collections()
    if not names then
        return nil, msg, code
    end
    for _, name in ipairs(names) do
        local coll
        coll, msg, code = db:collection(name)
        if coll == nil then
            return nil, msg, code
        end
    end
    return fs.remove(db.dir, REKEY)
end

function M.open(dir, opts)
    if type(dir) ~= "string" or dir == "" then
        error("armdb.open: dir must be a non-empty string, got " .. codecs.show(dir), 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb.open: opts must be a table, got " .. type(opts), 2)
    end
    local sopts = check_opts(opts)
    if #dir > 1 then
        dir = dir:gsub("/+$", "")
    end
    if sopts.follow then
        return M.open_replica(dir, sopts)
    end
    local read_only = sopts.read_only == true
    local create = sopts.create ~= false and not read_only
    if create then
        local ok, msg, code = fs.mkdir(dir)
        if ok == nil then
            return nil, msg, code
        end
    end
    local cat, msg, code = read_catalog(dir)
    if cat == nil then
        return nil, msg, code
    end
    if cat == false then
        if not create then
            return nil, "no database at " .. dir .. " (no CATALOG)", -fs.ENOENT
        end
        cat, msg, code = catalog_update(dir, function(c)
            return next(c.collections) == nil -- still new: write the empty catalog
        end)
        if cat == nil then
            return nil, msg, code
        end
    end
    local db = setmetatable({
        dir = dir,
        read_only = read_only,
        _create = create,
        _opts = sopts,
        _catalog = cat,
        _colls = {},
        _stores = {},
        _servers = {},
        _closed = false,
    }, Db)
    local ok
    ok, msg, code = settle_intent(db)
    if ok and sopts.previous_key and not read_only and fs.exists(dir .. "/" .. REKEY) == true then
        ok, msg, code = finish_rekey(db)
    end
    if not ok then
        db:close()
        return nil, msg, code
    end
    return db
end

-- Re-read the catalog (it may have grown in another process).
local function refresh(self)
    local cat, msg, code = read_catalog(self.dir)
    if cat == nil then
        return nil, msg, code
    end
    if cat then
        self._catalog = cat
    end
    return true
end

local SPEC_FIELDS = { key = true, value = true, ordered = true }

-- The options of the store of catalog entry e.
local function store_opts_for(self, e)
    local sopts = {}
    for k, v in pairs(self._opts) do
        sopts[k] = v
    end
    sopts.previous_key, sopts.on_rekey = nil, nil
    sopts.key_len = e.key_len
    sopts.value_len = e.value_len
    sopts.ordered = e.ordered == true
    if e.expiry and e.value_len > 0 then
        sopts.value_len = e.value_len + policy.ttl.PREFIX -- fixed values keep their expiry inline too
    end
    return sopts
end

-- The raw store of a collection (unwrapped from its policies' guard).
local function raw_store(coll)
    local s = coll._store
    if getmetatable(s) ~= store.Store then
        s = s._raw
    end
    return s
end

-- forward: serve a collection just opened on the servers of the db
local serve_new

-- forward: a replica learns the collections its leader has now, and
-- opens and follows the store of one
local follow_catalog, follow_store

-- db:collection(name, spec) -> coll | nil, msg, code
function Db:collection(name, spec)
    check_open(self)
    check_name(name, 2)
    local kc, vc
    if spec ~= nil then
        if type(spec) ~= "table" then
            error("armdb: collection " .. name .. ": spec must be a table, got " .. type(spec), 2)
        end
        for field in pairs(spec) do
            if not SPEC_FIELDS[field] and not policy.FIELDS[field] then
                error("armdb: collection " .. name .. ": unknown spec field " .. tostring(field), 2)
            end
        end
        if spec.key == nil or spec.value == nil then
            error("armdb: collection " .. name .. ": spec needs a key and a value codec", 2)
        end
        kc = codecs.key(spec.key, 2)
        vc = codecs.value(spec.value, 2)
        if spec.ordered ~= nil and type(spec.ordered) ~= "boolean" then
            error("armdb: collection " .. name .. ": spec field ordered must be a boolean, got "
                .. type(spec.ordered), 2)
        end
        policy.check(name, spec, 2)
        if spec.ttl == false then
            error("armdb: collection " .. name .. ": spec field ttl must be a number of seconds (0: no default)", 2)
        end
        if spec.ttl ~= nil and vc.len > INLINE_MAX - policy.ttl.PREFIX then
            error("armdb: collection " .. name .. ": value codec " .. vc.name .. " of " .. vc.len .. " bytes leaves"
                .. " no room for the 8-byte expiry of a ttl (at most " .. INLINE_MAX - policy.ttl.PREFIX .. ")", 2)
        end
    end
    local ordered = spec ~= nil and spec.ordered == true

    local coll = self._colls[name]
    if coll then
        if spec then
            local why = contradiction(name, coll.spec, kc, vc, ordered, spec.ttl)
            if why then
                return nil, why, MISMATCH
            end
            local ok, msg, code = policy.set(coll, policy.check(name, spec, 2), 2)
            if not ok then
                return nil, msg, code
            end
        end
        return coll
    end

    local entry = self._catalog.collections[name]
    if entry == nil then
        local ok, msg, code
        if self._follow then
            ok, msg, code = follow_catalog(self)
        else
            ok, msg, code = refresh(self)
        end
        if not ok then
            return nil, msg, code
        end
        entry = self._catalog.collections[name]
    end
    if entry and spec then
        local why = contradiction(name, entry, kc, vc, ordered, spec.ttl)
        if why then
            return nil, why, MISMATCH
        end
    elseif entry then
        kc = codecs.key(entry.key)
        local ok, c = pcall(codecs.value, entry.value)
        if not ok then
            return nil, "collection " .. name .. ": value codec " .. entry.value .. " of the catalog is not"
                .. " known here (" .. tostring(c):gsub("^armdb: ", "") .. "); declare it or pass the spec", INVAL
        end
        vc = c
        if vc.len ~= entry.value_len then
            return nil, "collection " .. name .. ": value is " .. entry.value .. " of " .. entry.value_len
                .. " bytes in the catalog, here it has " .. vc.len .. " bytes", MISMATCH
        end
    elseif spec == nil then
        return nil, "collection " .. name .. " is not in the catalog of " .. self.dir
            .. "; give its spec to create it", NOTFOUND
    elseif self._follow then
        return nil, "collection " .. name .. " is not in the catalog of " .. self.dir .. ", a replica of "
            .. self._follow.addr .. " (create it on the leader)", READONLY
    elseif self.read_only then
        return nil, "collection " .. name .. " is not in the catalog of " .. self.dir
            .. ", and the database is read-only", READONLY
    elseif not self._create then
        return nil, "collection " .. name .. " is not in the catalog of " .. self.dir
            .. ", and opts.create is false", NOTFOUND
    else
        local want = { key = kc.name, value = vc.name, key_len = kc.len, value_len = vc.len,
            ordered = ordered or nil, expiry = spec.ttl ~= nil or nil }
        local why
        local cat, msg, code = catalog_update(self.dir, function(c)
            local e = c.collections[name]
            if e then -- another handle added it meanwhile
                why = contradiction(name, e, kc, vc, ordered, spec.ttl)
                return false
            end
            c.collections[name] = want
            return true
        end)
        if cat == nil then
            return nil, msg, code
        end
        self._catalog = cat
        if why then
            return nil, why, MISMATCH
        end
        entry = cat.collections[name]
    end

    local sopts = policy.store_opts(spec, store_opts_for(self, entry))
    local settled, smsg, scode = settle_intent(self)
    if not settled then
        return nil, smsg, scode
    end
    if self._colls[name] then -- opened to complete that batch
        return self._colls[name]
    end
    local s, msg, code = self._stores[name], nil, nil
    if s == nil and self._follow then
        s, msg, code = follow_store(self, name, entry)
    end
    if s or self._follow then -- opened already, without its codecs (a replica's, or one served)
        self._stores[name] = nil
    else
        s, msg, code = store.open(self.dir .. "/" .. name, sopts)
    end
    if s == nil and code == BADKEY and self._opts.previous_key and not self._follow then
        -- Still sealed with the key a cut-short rotation was replacing.
        sopts.encryption_key = self._opts.previous_key
        s, msg, code = store.open(self.dir .. "/" .. name, sopts)
        if s and not self.read_only then
            local ok, rmsg, rcode = s:rekey(self._opts.encryption_key)
            if not ok then
                s:close()
                return nil, "collection " .. name .. ": completing the key rotation: " .. rmsg, rcode
            end
            if self._opts.on_rekey then
                self._opts.on_rekey(name, s:count())
            end
        end
    end
    if s == nil then
        if code == BADKEY and fs.exists(self.dir .. "/" .. REKEY) == true then
            msg = msg .. " (a key rotation of " .. self.dir .. " was cut short: open with encryption_key = the"
                .. " new key and previous_key = the old one to complete it)"
        end
        return nil, msg, code
    end
    coll = Collection.new(name, { key = entry.key, value = entry.value, key_len = entry.key_len,
        value_len = entry.value_len, ordered = entry.ordered == true, expiry = entry.expiry }, kc, vc, s)
    local ok
    ok, msg, code = policy.attach(coll, spec, entry.expiry, self, 2)
    if not ok then
        coll:_close()
        if self._replicas then
            self._replicas[name] = nil -- (its follower closed with it: followed again when asked for)
        end
        return nil, msg, code
    end
    self._colls[name] = coll
    if next(self._servers) then
        ok, msg, code = serve_new(self, name, raw_store(coll))
        if not ok then
            return nil, msg, code
        end
    end
    return coll
end

-- ---- db:batch ----
--
-- db:batch(function(b) b:put(coll, k, v) b:delete(coll, k) b:check(coll,
-- k, v) end): the function records operations (coll is a collection of
-- this database or its name; check with v nil: k must be absent); if it
-- raises, nothing is applied and the error goes on. Then, all or nothing:
--
-- * within one collection, one armdb_batch call: checks and writes under
--   the store's locks, atomic across shards and crashes;
-- * across collections (separate stores), an intent: the whole batch is
--   written to DIR/BATCH (temp file, fsync, rename, fsync of DIR) under
--   the database's directory lock, then each collection's part is applied
--   with armdb_batch and synced, then BATCH is removed (so a batch across
--   collections costs about three fsyncs plus one per collection, whatever
--   the sync mode). A crash in between leaves
--   BATCH, and the next writer that opens the database, or a collection of
--   it, applies it again before anything else: its writes are the newest
--   of their keys, since no write could follow them. Checks are evaluated
--   first, against what the stores hold; writes by other threads of this
--   process to the same keys between the checks and the apply are not
--   excluded (the stores have no lock across them).
--
-- A key written twice in one batch keeps the last write. Returns true, or
-- nil, message, code (a failed check: CONFLICT, EXISTS or NOTFOUND, and
-- nothing written).

local Batch = {}
Batch.__index = Batch

local function batch_coll(b, coll, level)
    if b._sealed then
        error("armdb: the batch is over: record operations inside its function", level)
    end
    if type(coll) == "string" then
        local c, msg = b._db:collection(coll)
        if c == nil then
            error("armdb: batch: " .. msg, level)
        end
        coll = c
    end
    if getmetatable(coll) ~= Collection or b._db._colls[coll.name] ~= coll then
        error("armdb: batch: " .. tostring(coll) .. " is not a collection of " .. b._db.dir, level)
    end
    local g = b._groups[coll.name]
    if g == nil then
        g = { coll = coll, ops = {}, at = {} }
        b._groups[coll.name] = g
        b._order[#b._order + 1] = g
    end
    return g
end

-- A write: the last one of a key wins, in the first one's place.
local function batch_write(g, kind, k, kb, v, vb)
    local i = g.at[kb]
    local op = { kind, kb, vb, key = k, value = v }
    if i then
        g.ops[i] = op
    else
        g.ops[#g.ops + 1] = op
        g.at[kb] = #g.ops
    end
end

function Batch:put(coll, k, v)
    local g = batch_coll(self, coll, 3)
    if v == nil then
        error("armdb: batch: value is nil (use delete to remove a key)", 2)
    end
    batch_write(g, "put", k, g.coll._kc.encode(k, 3), v, g.coll._vc.encode(v, 3))
end

function Batch:delete(coll, k)
    local g = batch_coll(self, coll, 3)
    batch_write(g, "delete", k, g.coll._kc.encode(k, 3))
end

function Batch:check(coll, k, v)
    local g = batch_coll(self, coll, 3)
    local vb = v ~= nil and g.coll._vc.encode(v, 3) or nil
    table.insert(g.ops, 1, { "check", g.coll._kc.encode(k, 3), vb, key = k })
    for kb, i in pairs(g.at) do
        g.at[kb] = i + 1
    end
end

local to_hex, from_hex = codecs.to_hex, codecs.from_hex

local INTENT = "BATCH"

-- forward: applies an intent a crashed batch left (below)
local redo_intent

-- If a crashed batch left its intent, complete it (writers only), before
-- any other write can reach its keys.
function settle_intent(self)
    if self.read_only or self._redoing or fs.exists(self.dir .. "/" .. INTENT) ~= true then
        return true
    end
    self._redoing = true
    local ok, msg, code = fs.with_lock(self.dir, function()
        return redo_intent(self)
    end)
    self._redoing = false
    if ok == nil then
        return nil, msg, code
    end
    return true
end

-- Apply an intent left by a crashed batch, then remove it. Under the
-- directory lock, or at open.
function redo_intent(self)
    local f = io.open(self.dir .. "/" .. INTENT, "rb")
    if f == nil then
        return true
    end
    local text = f:read("*a")
    f:close()
    if text:sub(1, 7) == "ARMSEAL" then
        local key = self._opts.encryption_key
        local plain, msg, code
        if key then
            plain, msg, code = store.unseal(key, text)
        end
        if plain == nil and self._opts.previous_key then
            plain, msg, code = store.unseal(self._opts.previous_key, text)
        end
        if plain == nil then
            return nil, INTENT .. " of " .. self.dir .. " is sealed: " .. (key and msg or "an encryption_key is"
                .. " needed to complete the batch it holds"), key and code or BADKEY
        end
        text = plain
    end
    local ok, t = pcall(cjson.decode, text)
    if not ok or type(t) ~= "table" or type(t.parts) ~= "table" then
        return nil, INTENT .. " of " .. self.dir .. " is damaged", CORRUPT
    end
    for _, part in ipairs(t.parts) do
        local coll, msg, code = self:collection(part.collection)
        if coll == nil then
            return nil, "completing the batch in " .. INTENT .. " of " .. self.dir .. ": " .. msg, code
        end
        local ops = {}
        for i, op in ipairs(type(part.ops) == "table" and part.ops or {}) do
            local k, v = type(op[2]) == "string" and from_hex(op[2]), type(op[3]) == "string" and from_hex(op[3])
            if not k or (op[1] ~= "put" and op[1] ~= "delete") or (op[1] == "put" and not v) then
                return nil, INTENT .. " of " .. self.dir .. " is damaged", CORRUPT
            end
            ops[i] = { op[1], k, v or nil }
        end
        local done
        done, msg, code = coll._store:batch(ops)
        if done then
            done, msg, code = coll._store:sync()
        end
        if not done then
            return nil, "completing the batch in " .. INTENT .. " of " .. self.dir .. ": " .. msg, code
        end
    end
    return fs.remove(self.dir, INTENT)
end

local function check_failed(g, op, cur)
    local what = cur == nil and "the key is absent" or op[3] == nil and "the key is present" or "the value differs"
    local code = cur == nil and NOTFOUND or op[3] == nil and EXISTS or CONFLICT
    return nil, "batch: check of key " .. codecs.show(op.key) .. " in collection " .. g.coll.name .. " failed: "
        .. what, code
end

-- The parts of a batch across collections, applied through an intent.
local function apply_across(self, order)
    for _, g in ipairs(order) do
        for _, op in ipairs(g.ops) do
            if op[1] == "check" then
                local cur, msg, code = g.coll._store:get(op[2])
                if cur == nil and msg ~= nil then
                    return nil, msg, code
                end
                if cur ~= op[3] then
                    return check_failed(g, op, cur)
                end
            end
        end
    end
    local parts = {}
    for i, g in ipairs(order) do
        local ops = {}
        for _, op in ipairs(g.ops) do
            if op[1] ~= "check" then
                ops[#ops + 1] = { op[1], to_hex(op[2]), op[3] and to_hex(op[3]) or nil }
            end
        end
        parts[i] = { collection = g.coll.name, ops = ops }
    end
    local text = cjson.encode({ format = 1, parts = parts })
    local key = self._opts.encryption_key
    if key then -- the intent holds keys and values: sealed like the stores
        local sealed, smsg, scode = store.seal(key, text)
        if not sealed then
            return nil, smsg, scode
        end
        text = sealed
    end
    local ok, msg, code = fs.replace(self.dir, INTENT, text)
    if not ok then
        return nil, msg, code
    end
    for _, g in ipairs(order) do
        local ops = {}
        for _, op in ipairs(g.ops) do
            if op[1] ~= "check" then
                ops[#ops + 1] = op
            end
        end
        ok, msg, code = g.coll._store:batch(ops)
        if ok then -- durable before the intent goes
            ok, msg, code = g.coll._store:sync()
        end
        if not ok then
            -- Some parts may be in: the intent stays, for the next open.
            self._broken = "a batch across collections failed halfway (" .. msg .. "); reopen the database to"
                .. " complete it"
            return nil, msg, code
        end
    end
    ok, msg, code = fs.remove(self.dir, INTENT)
    if ok == nil then
        return nil, msg, code
    end
    return true
end

function Db:batch(fn)
    check_open(self)
    if type(fn) ~= "function" then
        error("armdb: batch needs a function, got " .. type(fn), 2)
    end
    if self._follow then
        return nil, "database " .. self.dir .. " is a replica of " .. self._follow.addr .. ": write on the leader",
            READONLY
    end
    if self.read_only then
        return nil, "database " .. self.dir .. " is read-only", READONLY
    end
    if self._broken then
        return nil, self._broken, C.ARMDB_READONLY
    end
    local b = setmetatable({ _db = self, _groups = {}, _order = {} }, Batch)
    local ok, err = pcall(fn, b)
    b._sealed = true
    if not ok then
        error(err, 0)
    end
    local order = b._order
    -- Old values for the hooks (a delete calls them only if the key was
    -- there), before anything changes.
    -- Quotas admit each collection's part before anything is written.
    for _, g in ipairs(order) do
        local admit = g.coll._store._admit
        if admit then
            local room, rmsg, rcode = admit(g.coll._store, g.ops)
            if not room then
                return nil, rmsg, rcode
            end
        end
    end
    local olds = {}
    for _, g in ipairs(order) do
        if g.coll._hooks then
            for _, op in ipairs(g.ops) do
                if op[1] ~= "check" then
                    local old, msg, code = g.coll._store:get(op[2])
                    if old == nil and msg ~= nil then
                        return nil, msg, code
                    end
                    olds[op] = old
                end
            end
        end
    end
    local msg, code
    if #order == 1 then
        local g = order[1]
        ok, msg, code = g.coll._store:batch(g.ops)
        local at = not ok and (code == CONFLICT or code == EXISTS or code == NOTFOUND) and msg:match("ops%[(%d+)%]")
        if at then -- a check failed: say which, as across collections
            local op = g.ops[tonumber(at) + 1]
            return check_failed(g, op, code ~= NOTFOUND and "" or nil)
        end
    elseif #order > 1 then
        ok, msg, code = fs.with_lock(self.dir, function()
            local done, m, c = redo_intent(self)
            if not done and m ~= nil then
                return nil, m, c
            end
            return apply_across(self, order)
        end)
    else
        ok = true
    end
    if not ok then
        return nil, msg, code
    end
    for _, g in ipairs(order) do
        if g.coll._hooks then
            for _, op in ipairs(g.ops) do
                if op[1] == "put" or (op[1] == "delete" and olds[op] ~= nil) then
                    g.coll:_fire(op.key, op.value, olds[op] and g.coll._vc.decode(olds[op]) or nil)
                end
            end
        end
    end
    return true
end

-- Seal every collection again with new_key (32 bytes or 64 hex digits),
-- one after another (store:rekey: each is crash-safe on its own), calling
-- on_done(name, keys) after each if given. While it runs, the file REKEY
-- says a rotation is under way: if it is cut short, some collections have
-- each key, and the database opens with encryption_key = the new key and
-- previous_key = the old one, which completes it (calling opts.on_rekey
-- the same way). true, or nil, message, code.
function Db:rekey(new_key, on_done)
    check_open(self)
    local key = store.key_bytes(new_key, "armdb: db:rekey: new_key", 3)
    if on_done ~= nil and type(on_done) ~= "function" then
        error("armdb: db:rekey: on_done must be a function, got " .. type(on_done), 2)
    end
    if not self._opts.encryption_key then
        return nil, "database " .. self.dir .. " is not encrypted", INVAL
    end
    if self.read_only then
        return nil, "database " .. self.dir .. " was opened read-only", READONLY
    end
    local names, msg, code = self:collections()
    if not names then
        return nil, msg, code
    end
    -- Every collection opens with the key (a plain one does not) before
    -- anything is written.
    local colls = {}
    for i, name in ipairs(names) do
        colls[i], msg, code = self:collection(name)
        if colls[i] == nil then
            return nil, "db:rekey: " .. msg, code
        end
    end
    local ok
    ok, msg, code = fs.replace(self.dir, REKEY, cjson.encode({ format = 1 }))
    if not ok then
        return nil, msg, code
    end
    for i, name in ipairs(names) do
        ok, msg, code = colls[i]._store:rekey(key)
        if not ok then
            return nil, "db:rekey: collection " .. name .. ": " .. msg, code
        end
        if on_done then
            on_done(name, colls[i]._store:count())
        end
    end
    self._opts.previous_key = self._opts.encryption_key
    self._opts.encryption_key = key
    ok, msg, code = fs.remove(self.dir, REKEY)
    if not ok then
        return nil, msg, code
    end
    self._opts.previous_key = nil
    return true
end

-- Names of the collections in the catalog (as now on disk), sorted; or
-- nil, msg, code if the catalog cannot be read.
function Db:collections()
    check_open(self)
    local ok, msg, code = refresh(self)
    if not ok then
        return nil, msg, code
    end
    return names_of(self._catalog.collections)
end

-- Call method on the store of every open collection. true, or the first
-- failure (all are tried).
local function each_store(self, method)
    check_open(self)
    local first
    for _, name in ipairs(names_of(self._colls)) do
        local ok, msg, code = self._colls[name]._store[method](self._colls[name]._store)
        if not ok and first == nil then
            first = { msg, code }
        end
    end
    if first then
        return nil, first[1], first[2]
    end
    return true
end

-- Sync every open collection.
function Db:sync()
    return each_store(self, "sync")
end

-- Compact every open collection (armdb_compact).
function Db:compact()
    return each_store(self, "compact")
end

-- The largest GSN of the open collections (GSNs are ordered across the
-- collections of a process: one counter serves them all).
function Db:last_gsn()
    check_open(self)
    local g = 0
    for _, coll in pairs(self._colls) do
        local x = coll:last_gsn()
        if x > g then
            g = x
        end
    end
    return g
end

-- Fields of the store stats that are settings or ratios, not counters.
local NOT_SUMMED = { shards = true, key_len = true, value_len = true, index_bytes_per_key = true, gsn = true }

-- { collections = { name = store stats }, totals = sums of the counters
-- (gsn: the largest) over the collections open in this handle,
-- catalog = number of collections in the catalog }
function Db:stats()
    check_open(self)
    local per, totals = {}, { collections = 0, gsn = 0 }
    for name, coll in pairs(self._colls) do
        local t, msg, code = coll:stats()
        if t == nil then
            return nil, msg, code
        end
        per[name] = t
        totals.collections = totals.collections + 1
        for k, v in pairs(t) do
            if type(v) == "number" and not NOT_SUMMED[k] then
                totals[k] = (totals[k] or 0) + v
            end
        end
        if t.gsn > totals.gsn then
            totals.gsn = t.gsn
        end
    end
    local n = 0
    for _ in pairs(self._catalog.collections) do
        n = n + 1
    end
    return { dir = self.dir, read_only = self.read_only, collections = per, totals = totals, catalog = n }
end

-- Close every collection (their objects raise from then on). Idempotent:
-- true, or the first failure (every store is closed either way).
function Db:close()
    if self._closed then
        return true
    end
    self._closed = true
    for srv in pairs(self._servers) do -- servers first: they use the stores
        srv:close()
    end
    local first
    for _, name in ipairs(names_of(self._colls)) do
        local ok, msg, code = self._colls[name]:_close()
        if not ok and first == nil then
            first = { msg, code }
        end
    end
    for _, name in ipairs(names_of(self._stores)) do
        local ok, msg, code = self._stores[name]:close()
        if not ok and first == nil then
            first = { msg, code }
        end
    end
    self._colls, self._stores, self._replicas = {}, {}, nil
    if first then
        return nil, first[1], first[2]
    end
    return true
end

function Db:is_open()
    return not self._closed
end

Db.__tostring = function(self)
    return "armdb.db(" .. self.dir .. (self._closed and ", closed)" or ")")
end

-- ---- replication ----

-- The catalog as the leader's meta bytes: with the shards of each store.
local function leader_meta(self)
    local shards = {}
    for name, s in pairs(self._served) do
        shards[name] = s:stats().shards
    end
    return catalog_json(self._catalog, shards)
end

-- The raw store of collection name, opened if it is not: through
-- db:collection when its codecs are known here, else alone (kept in
-- _stores for db:collection to take later).
local function store_for(self, name)
    local coll = self._colls[name]
    if coll then
        return raw_store(coll)
    end
    if self._stores[name] then
        return self._stores[name]
    end
    local c, msg, code = self:collection(name)
    if c then
        return raw_store(c)
    end
    local e = self._catalog.collections[name]
    if code ~= INVAL or e == nil then
        return nil, msg, code
    end
    local s
    s, msg, code = store.open(self.dir .. "/" .. name, store_opts_for(self, e))
    if s == nil then
        return nil, "collection " .. name .. ": " .. msg, code
    end
    self._stores[name] = s
    return s
end

-- Serve the store s of collection name on every server of the db, and
-- tell them the catalog with it.
function serve_new(self, name, s)
    self._served = self._served or {}
    if self._served[name] == s then
        return true
    end
    self._served[name] = s
    local meta = leader_meta(self)
    for srv in pairs(self._servers) do
        if not srv:serves(name) then
            local ok, msg, code = srv:add(name, s)
            if not ok then
                return nil, "collection " .. name .. ": serving it: " .. msg, code
            end
        end
        local ok, msg, code = srv:set_meta(meta)
        if not ok then
            return nil, msg, code
        end
    end
    return true
end

-- db:serve_replication(addr, opts): serve every collection to replicas on
-- addr ("HOST:PORT", default "127.0.0.1:0"), each under its name, with
-- the leader options of armdb.replication (secret, batch_entries,
-- batch_bytes, heartbeat_ms, timeout_ms, max_followers; without a secret,
-- loopback only). Opens every collection of the catalog. Returns the
-- server (srv:port(), srv:stats(), srv:close(); closed by db:close()), or
-- nil, message, code.
function Db:serve_replication(addr, opts)
    check_open(self)
    if self._follow then
        return nil, "database " .. self.dir .. " is a replica of " .. self._follow.addr .. ": serve the leader",
            INVAL
    end
    local srv, msg, code = repl.serve(addr, opts, "armdb: serve_replication", 2)
    if srv == nil then
        return nil, msg, code
    end
    local ok
    ok, msg, code = refresh(self)
    if ok then
        self._served = self._served or {}
        for _, name in ipairs(names_of(self._catalog.collections)) do
            local s
            s, msg, code = store_for(self, name)
            if s == nil then
                ok = false
                break
            end
            self._served[name] = s
            ok, msg, code = srv:add(name, s)
            if not ok then
                msg = "collection " .. name .. ": serving it: " .. msg
                break
            end
        end
    end
    if ok then
        ok, msg, code = srv:set_meta(leader_meta(self))
    end
    if not ok then
        srv:close()
        return nil, msg, code
    end
    srv._db = self
    self._servers[srv] = true
    return srv
end

-- Open a replica (armdb.open with opts.follow): see the top of this file.
function M.open_replica(dir, sopts)
    local follow = { addr = sopts.follow, options = {}, shards = {} }
    for name in pairs(repl.FOLLOWER_OPTS) do
        follow.options[name], sopts[name] = sopts[name], nil
    end
    sopts.follow = nil
    local created = false
    if sopts.create ~= false then
        local msg, code
        created, msg, code = fs.mkdir(dir)
        if created == nil then
            return nil, msg, code
        end
    end
    local db = setmetatable({
        dir = dir,
        read_only = true, -- to the collections and policies: no writes of their own
        replica = follow.addr,
        _follow = follow,
        _create = false,
        _opts = sopts,
        _catalog = { format = FORMAT, collections = {} },
        _colls = {},
        _stores = {},
        _replicas = {},
        _servers = {},
        _closed = false,
    }, Db)
    local ok, msg, code = follow_catalog(db)
    if not ok then
        db:close()
        if created then
            os.remove(dir) -- (only if still empty: nothing was fetched)
        end
        return nil, msg, code
    end
    return db
end

-- Open the store of catalog entry e as a replica of the leader's store
-- name and follow it.
function follow_store(self, name, e)
    local so = store_opts_for(self, e)
    so.shards = self._follow.shards[name] or so.shards
    so.follow, so.name = self._follow.addr, name
    for k, v in pairs(self._follow.options) do
        so[k] = v
    end
    local s, msg, code = store.open(self.dir .. "/" .. name, so)
    if s == nil then
        return nil, "collection " .. name .. ": " .. msg, code
    end
    self._replicas[name] = s
    return s
end

-- A code of the OS (a connection that failed), not one of armdb's.
local function os_error(code)
    return type(code) == "number" and code < 0 and code > -4096
end

-- Fetch the leader's catalog, make it this replica's, and follow every
-- store of it not followed yet. true, or nil, message, code.
function follow_catalog(self)
    local f = self._follow
    local text, msg, code = repl.fetch_meta(f.addr, f.options, "armdb.open", 3)
    local cat
    if text then
        cat, msg, code = parse_catalog("the leader " .. f.addr, text)
        if cat == nil then
            return nil, msg, code
        end
        local ok, all = pcall(cjson.decode, text)
        for name in pairs(cat.collections) do
            local n = ok and type(all) == "table" and type(all.collections) == "table"
                and type(all.collections[name]) == "table" and all.collections[name].shards
            if is_len(n, 1, C.ARMDB_SHARDS_MAX) then
                f.shards[name] = n
            end
        end
        local done
        done, msg, code = fs.with_lock(self.dir, function()
            return fs.replace(self.dir, "CATALOG", catalog_json(cat))
        end)
        if not done then
            return nil, "CATALOG of " .. self.dir .. ": " .. msg, code
        end
    else
        local here = os_error(code) and read_catalog(self.dir)
        if not here then
            return nil, "replica " .. self.dir .. ": fetching the catalog of the leader at " .. f.addr .. ": " .. msg,
                code
        end
        cat = here -- unreachable: the replica goes on with what it has
        f.unreachable = msg
    end
    self._catalog = cat
    for _, name in ipairs(names_of(cat.collections)) do
        if self._replicas[name] == nil then
            local s
            s, msg, code = follow_store(self, name, cat.collections[name])
            if s == nil then
                return nil, msg, code
            end
            self._stores[name] = s
        end
    end
    return true
end

-- On a replica: fetch the leader's catalog again and follow the
-- collections created there since. true, or nil, message, code.
function Db:follow_catalog()
    check_open(self)
    if not self._follow then
        error("armdb: follow_catalog: database " .. self.dir .. " is not a replica (open it with follow)", 2)
    end
    return follow_catalog(self)
end

-- On a replica: { collection name = its store's replication stats (see
-- store:replication()) }; nil on a database that is not a replica.
function Db:replication()
    check_open(self)
    if not self._follow then
        return nil
    end
    local t = {}
    for name, s in pairs(self._replicas) do
        local st, msg, code = s:replication()
        if st == nil then
            return nil, "collection " .. name .. ": " .. tostring(msg), code
        end
        t[name] = st
    end
    return t
end

-- db:wait_replica(targets, timeout_ms): wait until every collection of a
-- replica has applied its leader's writes up to a GSN, all within
-- timeout_ms (default 5000). targets: a table { name = GSN } (what the
-- leader's db:last_gsns() gives; collections not named are not waited
-- for), or nil (each store up to its leader's last GSN as last heard).
-- true, or nil, message, code (the first collection that did not get
-- there, and why).
function Db:wait_replica(targets, timeout_ms)
    check_open(self)
    if not self._follow then
        error("armdb: wait_replica: database " .. self.dir .. " is not a replica (open it with follow)", 2)
    end
    if targets ~= nil and type(targets) ~= "table" then
        error("armdb: wait_replica: targets must be a table { collection = GSN } or nil, got " .. type(targets), 2)
    end
    if timeout_ms ~= nil and (type(timeout_ms) ~= "number" or timeout_ms < 0
            or timeout_ms ~= math.floor(timeout_ms)) then
        error("armdb: wait_replica: timeout_ms must be a whole number of milliseconds, got " .. tostring(timeout_ms),
            2)
    end
    for name, gsn in pairs(targets or {}) do
        if type(gsn) ~= "number" or gsn < 0 or gsn ~= math.floor(gsn) then
            error("armdb: wait_replica: the GSN of " .. tostring(name) .. " must be a whole number >= 0, got "
                .. tostring(gsn), 2)
        end
    end
    local pending = {}
    for _, name in ipairs(names_of(targets or self._replicas)) do
        if self._replicas[name] == nil then
            local ok, msg, code = follow_catalog(self)
            if not ok then
                return nil, msg, code
            end
            if self._replicas[name] == nil then
                return nil, "collection " .. name .. " is not in the catalog of the leader at " .. self._follow.addr,
                    NOTFOUND
            end
        end
        pending[#pending + 1] = name
    end
    -- Waits of at most SLICE ms on one store at a time; the time of those
    -- that end early is not counted, so the whole takes at most about
    -- timeout_ms plus SLICE ms a collection.
    local SLICE = 50
    local left = timeout_ms or 5000
    while true do
        local still = {}
        for _, name in ipairs(pending) do
            local ok, msg, code = self._replicas[name]:wait_replica(targets and targets[name], 0)
            if not ok then
                if code ~= ETIMEDOUT then
                    return nil, "collection " .. name .. ": " .. msg, code
                end
                still[#still + 1] = name
                still[name] = msg
            end
        end
        if #still == 0 then
            return true
        end
        if left <= 0 then
            local name = still[1]
            return nil, "collection " .. name .. ": " .. still[name]:gsub("within 0 ms", "within "
                .. (timeout_ms or 5000) .. " ms"), ETIMEDOUT
        end
        pending = still
        local slice = math.min(left, SLICE)
        local name = still[1]
        if not self._replicas[name]:wait_replica(targets and targets[name], slice) then
            left = left - slice
        end
    end
end

-- { collection name = its last GSN } of the collections open here (on a
-- leader: the targets of a replica's db:wait_replica).
function Db:last_gsns()
    check_open(self)
    local t = {}
    for name, coll in pairs(self._colls) do
        t[name] = coll:last_gsn()
    end
    for name, s in pairs(self._stores) do
        t[name] = s:last_gsn()
    end
    return t
end

M.Db = Db
M.check_name = check_name
M.read_catalog = read_catalog
return M
