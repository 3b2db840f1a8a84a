-- armdb.store: the raw C store from Lua. String keys (exactly key_len
-- bytes) and string values; no codecs.
--
-- The hot calls (get, put) allocate nothing but the returned string: the
-- out-parameters and the value buffer are made once, at load, and the
-- buffer grows (and stays grown) when C answers ARMDB_BUFSMALL with the
-- size it needs. Handles are freed by ffi.gc if a store or an iterator is
-- dropped unclosed; close() detaches the finalizer first, so closing twice
-- is a no-op. Misuse (a wrong argument type, a closed store) raises at the
-- caller's level; every failure of the C library returns nil, its message
-- and its code; a missing key is a plain nil.
--
-- A replica (opened with opts.follow) is followed by a thread of the C
-- library (see armdb.replication). When a resync's full copy is due, the
-- next call on the store exchanges its handle for the copy's: handle()
-- tests one field (_f) for that, so other stores pay nothing more.
local ffi = require("ffi")
local lib = require("armdb.lib")
local repl = require("armdb.replication")

local C = lib.C

local M = {}
local ffi_string, ffi_gc, type, error, tonumber = ffi.string, ffi.gc, type, error, tonumber

local NOTFOUND = C.ARMDB_NOTFOUND
local BUFSMALL = C.ARMDB_BUFSMALL
local EXISTS = C.ARMDB_EXISTS
local CONFLICT = C.ARMDB_CONFLICT
local BATCH_MAX = C.ARMDB_BATCH_MAX

-- Made once: scratch for values, and the out-parameters of every call.
local buf_cap = 16384
local buf = ffi.new("unsigned char[?]", buf_cap)
local vlen_out = ffi.new("size_t[1]")
local db_out = ffi.new("armdb *[1]")
local iter_out = ffi.new("armdb_iter *[1]")
local it_key = ffi.new("const void *[1]")
local it_klen = ffi.new("size_t[1]")
local it_val = ffi.new("const void *[1]")
local it_vlen = ffi.new("size_t[1]")
local stat = ffi.new("armdb_stat")

local function grow(need)
    local cap = buf_cap
    while cap < need do
        cap = cap * 2
    end
    buf = ffi.new("unsigned char[?]", cap)
    buf_cap = cap
end

-- The failure triple for rc: C's message about it where it has one (it
-- names the file, field or pid involved), else the code's own text.
local function fail(rc)
    if C.armdb_errcode() == rc then
        return nil, ffi_string(C.armdb_errmsg()), rc
    end
    return nil, ffi_string(C.armdb_strerror(rc)), rc
end

-- ---- options ----

local SYNC = { interval = C.ARMDB_SYNC_INTERVAL, none = C.ARMDB_SYNC_NONE, always = C.ARMDB_SYNC_ALWAYS }

-- Option name -> how it is set: numbers go to the field of that name;
-- booleans set a flag.
local NUMBER_OPTS = {
    key_len = true, value_len = true, shards = true, write_buffer_size = true,
    sync_interval_ms = true, max_file_size = true, cache_size = true, compaction_threshold = true,
}
local FLAG_OPTS = {
    create = C.ARMDB_CREATE, read_only = C.ARMDB_RDONLY, ordered = C.ARMDB_ORDERED,
    no_uring = C.ARMDB_NO_URING, no_direct = C.ARMDB_NO_DIRECT, no_auto_compact = C.ARMDB_NO_AUTO_COMPACT,
    replica = C.ARMDB_REPLICA, shared = C.ARMDB_SHARED,
}

local CIPHERS = { ["xchacha20-poly1305"] = false, ["aes-256-gcm"] = true } -- true: ARMDB_CIPHER_AES

-- An encryption key as the C API takes it: 32 bytes, given raw or as 64
-- hexadecimal digits. Raises naming `what` (never showing the key).
function M.key_bytes(v, what, level)
    if type(v) == "string" and #v == 64 and v:find("^%x+$") then
        return (v:gsub("%x%x", function(c)
            return string.char(tonumber(c, 16))
        end))
    end
    if type(v) ~= "string" or #v ~= 32 then
        error(what .. " must be 32 bytes or 64 hexadecimal digits, got "
            .. (type(v) == "string" and #v .. " bytes" or "a " .. type(v)), level)
    end
    return v
end

local function options(opts, level)
    local o = ffi.new("armdb_options")
    C.armdb_options_init(o)
    local flags = C.ARMDB_CREATE
    local key
    for name, v in pairs(opts or {}) do
        if NUMBER_OPTS[name] then
            if type(v) ~= "number" or v < 0 or v ~= v then
                error("armdb: option " .. name .. " must be a non-negative number, got " .. tostring(v), level)
            end
            o[name] = v
        elseif FLAG_OPTS[name] then
            if type(v) ~= "boolean" then
                error("armdb: option " .. name .. " must be a boolean, got " .. tostring(v), level)
            end
            if v then
                flags = bit.bor(flags, FLAG_OPTS[name])
            else
                flags = bit.band(flags, bit.bnot(FLAG_OPTS[name]))
            end
        elseif name == "sync" or name == "sync_mode" then
            local mode = SYNC[v]
            if mode == nil then
                error("armdb: option " .. name .. ' must be "interval", "none" or "always", got ' .. tostring(v), level)
            end
            o.sync_mode = mode
        elseif name == "encryption_key" then
            key = M.key_bytes(v, "armdb: option encryption_key", level + 1)
        elseif name == "cipher" then
            if CIPHERS[v] == nil then
                error('armdb: option cipher must be "xchacha20-poly1305" or "aes-256-gcm", got ' .. tostring(v), level)
            end
            if CIPHERS[v] then
                flags = bit.bor(flags, C.ARMDB_CIPHER_AES)
            end
        else
            error("armdb: unknown option " .. tostring(name), level)
        end
    end
    if opts and opts.read_only then
        flags = bit.band(flags, bit.bnot(C.ARMDB_CREATE)) -- a reader never creates
    end
    o.flags = flags
    if key then
        o.encryption_key = key -- anchored below, alongside o, for the call
    end
    return o, key
end

-- ---- the store ----

local Store = {}
Store.__index = Store

-- ---- replicas: the follower, and the handle it may exchange ----

local SWAP = C.ARMDB_REPL_SWAP
local ETIMEDOUT = -110
local fstat = repl.follower_stat
local swap_out = ffi.new("armdb *[1]")
local follower_out = ffi.new("armdb_repl_follower *[1]")

-- The replication state of a store that is followed or served, made on
-- first use: the follower (f), the servers serving it (their state
-- tables, { srv = pointer }), and the handle's finalizer, which stops
-- those before it closes the store (a finalizer may run in any order
-- with theirs, so theirs is this one).
-- Stop the follower of a store's replication state and the servers
-- serving it (before the store closes).
local function stop_replication(rs)
    local f = rs.f
    if f ~= nil then
        rs.f = nil
        C.armdb_repl_follower_close(f)
    end
    for sst in pairs(rs.servers) do
        local p = sst.srv
        if p ~= nil then
            sst.srv = nil
            C.armdb_repl_server_close(p)
        end
    end
    rs.servers = {}
end

local function rstate(self)
    local rs = self._rs
    if rs == nil then
        rs = { servers = {} }
        rs.gc = function(h)
            stop_replication(rs)
            C.armdb_close(h)
        end
        self._rs = rs
        ffi_gc(self._h, rs.gc)
    end
    return rs
end

local function iters_open(self)
    for state in pairs(self._iters) do
        if state.it ~= nil then
            return true
        end
    end
    return false
end

-- A follower's handle h, or the handle of the copy a resync built once it
-- is due (ARMDB_REPL_SWAP): the old one is closed by the exchange. Not
-- while a scan, feed or checkpoint holds h (the exchange waits for them),
-- and at most once a second after a failed one (the old handle stays,
-- and the error shows in s:replication().swap_error).
local function swap_due(self, h)
    local f = self._f
    if C.armdb_repl_follower_stats(f, fstat) ~= 0 or fstat.state ~= SWAP or iters_open(self) then
        return h
    end
    local now = os.time()
    if self._swap_retry and now < self._swap_retry then
        return h
    end
    local gc = self._rs.gc
    ffi_gc(h, nil) -- closed by the call if it succeeds
    local rc = C.armdb_repl_follower_swap(f, h, swap_out)
    if rc ~= 0 then
        ffi_gc(h, gc)
        local _, msg = fail(rc)
        self._swap_error, self._swap_retry = msg, now + 1
        return h
    end
    local nh = ffi_gc(swap_out[0], gc)
    swap_out[0] = nil
    self._h = nh
    self._swap_error, self._swap_retry = nil, nil
    self._swaps = (self._swaps or 0) + 1
    return nh
end

-- The handle, or a raise at level (default 3: the caller of the method).
local function handle(self, level)
    local h = self._h
    if h == nil then
        error("armdb: store " .. self.dir .. " is closed", level or 3)
    end
    if self._f ~= nil then
        return swap_due(self, h)
    end
    return h
end

local function check_key(k)
    if type(k) ~= "string" then
        error("armdb: key must be a string, got " .. type(k), 3)
    end
end

local function check_value(v)
    if type(v) ~= "string" then
        error("armdb: value must be a string, got " .. type(v), 3)
    end
end

-- A blob sealed with a key derived from key (armdb_seal), and back: the
-- bytes, or nil, message, code (a damaged blob, or another key).
function M.seal(key, text)
    local out = ffi.new("unsigned char[?]", #text + C.ARMDB_SEAL_OVERHEAD)
    local rc = C.armdb_seal(key, text, #text, out)
    if rc ~= 0 then
        return fail(rc)
    end
    return ffi_string(out, #text + C.ARMDB_SEAL_OVERHEAD)
end

function M.unseal(key, blob)
    if #blob < C.ARMDB_SEAL_OVERHEAD then
        return nil, "not a sealed blob", C.ARMDB_CORRUPT
    end
    local out = ffi.new("unsigned char[?]", #blob - C.ARMDB_SEAL_OVERHEAD + 1)
    local rc = C.armdb_unseal(key, blob, #blob, out)
    if rc ~= 0 then
        return fail(rc)
    end
    return ffi_string(out, #blob - C.ARMDB_SEAL_OVERHEAD)
end

-- The last part of a directory's path: the name a store is served and
-- followed under unless one is given.
local function basename(dir)
    return (dir:gsub("/+$", ""):match("([^/]*)$"))
end

-- opts.follow = "HOST:PORT": open dir as a replica of the store that
-- leader serves under opts.name (default: the last part of dir), with the
-- follower options of armdb.replication (secret, timeout_ms, retry_min_ms,
-- retry_max_ms, ack_interval_ms). Takes them out of opts: { addr, name,
-- options } or nil. Raises at level on misuse.
local function follow_opts(opts, level)
    if opts == nil or opts.follow == nil then
        for name in pairs(opts or {}) do
            if name == "name" or repl.FOLLOWER_OPTS[name] then
                error("armdb.store: option " .. name .. " is for a replica (give follow = \"HOST:PORT\")", level)
            end
        end
        return nil
    end
    local rest, ropts = {}, {}
    for name, v in pairs(opts) do
        if repl.FOLLOWER_OPTS[name] then
            ropts[name] = v
        elseif name ~= "follow" and name ~= "name" then
            rest[name] = v
        end
    end
    if type(opts.follow) ~= "string" then
        error("armdb.store: option follow must be an address HOST:PORT, got " .. type(opts.follow), level)
    end
    if opts.name ~= nil and type(opts.name) ~= "string" then
        error("armdb.store: option name must be a string, got " .. type(opts.name), level)
    end
    if opts.read_only then
        error("armdb.store: option follow cannot go with read_only (a replica takes its leader's writes)", level)
    end
    rest.replica = true
    return { addr = opts.follow, name = opts.name, options = ropts }, rest
end

local function open(dir, opts)
    if type(dir) ~= "string" then
        error("armdb.store: dir must be a string, got " .. type(dir), 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb.store: opts must be a table, got " .. type(opts), 2)
    end
    local follow, rest = follow_opts(opts, 3)
    local ro, secret
    if follow then
        opts = rest
        ro, secret = repl.options(follow.options, repl.FOLLOWER_OPTS, "armdb.store", 2)
    end
    local o, key = options(opts, 3)
    local anchors = { key, secret } -- what o and ro point into, alive through the calls
    local rc = C.armdb_open(dir, o, db_out)
    if rc ~= 0 then
        return fail(rc)
    end
    local h = ffi_gc(db_out[0], C.armdb_close)
    db_out[0] = nil
    local s = setmetatable({ _h = h, dir = dir, _iters = setmetatable({}, { __mode = "k" }) }, Store)
    if follow then
        local name = follow.name or basename(dir)
        rc = C.armdb_repl_follow(h, dir, o, follow.addr, name, ro, follower_out)
        if rc ~= 0 then
            local _, msg, code = fail(rc)
            s:close()
            return nil, "following " .. name .. " at " .. follow.addr .. ": " .. msg, code
        end
        local rs = rstate(s)
        rs.f = follower_out[0]
        follower_out[0] = nil
        s._f, s.leader, s.name = rs.f, follow.addr, name
    end
    local _ = anchors
    return s
end

-- get on pointer + length (cdata, or a Lua string): what the methods
-- below share. get_p returns a pointer into the shared value buffer and
-- the length (valid until the next get on any store), nil if absent, or
-- nil, message, code.

local function get_p(h, kp, kl)
    local rc = C.armdb_get(h, kp, kl, buf, buf_cap, vlen_out)
    while rc == BUFSMALL do
        grow(tonumber(vlen_out[0]))
        rc = C.armdb_get(h, kp, kl, buf, buf_cap, vlen_out)
    end
    if rc == 0 then
        return buf, tonumber(vlen_out[0])
    end
    if rc == NOTFOUND then
        return nil
    end
    return fail(rc)
end

-- A write refused by a replica (READONLY) says whose replica it is.
local READONLY = C.ARMDB_READONLY

local function write_fail(self, rc)
    if rc == READONLY and self._f ~= nil then
        return nil, "store " .. self.dir .. " is a replica of store " .. self.name .. " at " .. self.leader
            .. ": it takes writes only from its leader", rc
    end
    return fail(rc)
end

function Store:put(k, v)
    local h = handle(self)
    check_key(k)
    check_value(v)
    local rc = C.armdb_put(h, k, #k, v, #v)
    if rc ~= 0 then
        return write_fail(self, rc)
    end
    return true
end

function Store:get(k)
    local h = handle(self)
    check_key(k)
    local p, n, code = get_p(h, k, #k)
    if p == nil then
        return nil, n, code -- absent: n is nil too
    end
    return ffi_string(p, n)
end

-- For the collections: the same on pointer + length, so that codecs with
-- buffers of their own make no Lua string. Arguments are the caller's to
-- get right.
function Store:_put_p(kp, kl, vp, vl)
    local rc = C.armdb_put(handle(self), kp, kl, vp, vl)
    if rc ~= 0 then
        return write_fail(self, rc)
    end
    return true
end

function Store:_get_p(kp, kl)
    return get_p(handle(self), kp, kl)
end

-- true if the key was deleted, false if it was not there.
function Store:delete(k)
    local h = handle(self)
    check_key(k)
    local rc = C.armdb_delete(h, k, #k)
    if rc == 0 then
        return true
    end
    if rc == NOTFOUND then
        return false
    end
    return write_fail(self, rc)
end

-- Set k to new if its value is old (old == nil: if k is absent). true if
-- it was set, false if the current value is another.
function Store:cas(k, old, new)
    local h = handle(self)
    check_key(k)
    if old ~= nil then
        check_value(old)
    end
    check_value(new)
    local rc = C.armdb_cas(h, k, #k, old, old and #old or 0, new, #new)
    if rc == 0 then
        return true
    end
    if rc == CONFLICT or rc == EXISTS or rc == NOTFOUND then
        return false
    end
    return write_fail(self, rc)
end

-- Values of the keys of the array `keys`, as an array with nil for the
-- missing ones (its length is given as the field n). Batches of up to
-- ARMDB_BATCH_MAX keys cross into C at once.
local many_offs = ffi.new("size_t[?]", BATCH_MAX)
local many_vlens = ffi.new("size_t[?]", BATCH_MAX)
local many_rcs = ffi.new("int[?]", BATCH_MAX)

function Store:get_many(keys)
    local h = handle(self)
    if type(keys) ~= "table" then
        error("armdb: keys must be an array of strings, got " .. type(keys), 2)
    end
    local n = #keys
    local out = { n = n }
    local klen
    for i = 1, n do
        local k = keys[i]
        if type(k) ~= "string" then
            error("armdb: keys[" .. i .. "] must be a string, got " .. type(k), 2)
        end
        klen = klen or #k
        if #k ~= klen then
            -- C would refuse the whole batch; say which key is off.
            return nil, string.format("keys[%d] is %d bytes, keys[1] is %d", i, #k, klen), C.ARMDB_KEYLEN
        end
    end
    for first = 1, n, BATCH_MAX do
        local last = math.min(n, first + BATCH_MAX - 1)
        local batch = table.concat(keys, "", first, last)
        local cnt = last - first + 1
        local rc = C.armdb_get_many(h, batch, klen, cnt, buf, buf_cap, many_offs, many_vlens, many_rcs)
        if rc ~= 0 and rc ~= BUFSMALL then
            return fail(rc)
        end
        for i = 0, cnt - 1 do
            local r = many_rcs[i]
            if r == 0 then
                out[first + i] = ffi_string(buf + many_offs[i], many_vlens[i])
            elseif r == BUFSMALL then
                local v, err, code = self:get(keys[first + i])
                if err then
                    return nil, err, code
                end
                out[first + i] = v
            elseif r ~= NOTFOUND then
                return fail(r)
            end
        end
    end
    return out
end

-- s:batch(ops): ops is an array of {"put", k, v}, {"delete", k} and
-- {"check", k, v} (v nil: k must be absent), applied all or nothing
-- (armdb_batch). true, or nil, message, code: a failed check is CONFLICT,
-- EXISTS or NOTFOUND with the op named, and nothing written.
local OP_TYPES = { put = C.ARMDB_OP_PUT, delete = C.ARMDB_OP_DELETE, check = C.ARMDB_OP_CHECK }
local ops_buf, ops_cap = nil, 0

function Store:batch(ops)
    local h = handle(self)
    if type(ops) ~= "table" then
        error("armdb: batch needs an array of ops, got " .. type(ops), 2)
    end
    local n = #ops
    if n > BATCH_MAX then
        return nil, "a batch of " .. n .. " operations is over the maximum of " .. BATCH_MAX, C.ARMDB_INVAL
    end
    if n > ops_cap then
        ops_cap = math.max(n, 64)
        ops_buf = ffi.new("armdb_op[?]", ops_cap)
    end
    for i = 1, n do
        local op = ops[i]
        if type(op) ~= "table" then
            error("armdb: batch op " .. i .. " must be a table, got " .. type(op), 2)
        end
        local t = OP_TYPES[op[1]]
        if t == nil then
            error("armdb: batch op " .. i .. ': type must be "put", "delete" or "check", got ' .. tostring(op[1]), 2)
        end
        local k, v = op[2], op[3]
        if type(k) ~= "string" then
            error("armdb: batch op " .. i .. ": key must be a string, got " .. type(k), 2)
        end
        if (t == C.ARMDB_OP_PUT or v ~= nil) and type(v) ~= "string" then
            error("armdb: batch op " .. i .. ": value must be a string, got " .. type(v), 2)
        end
        local o = ops_buf[i - 1]
        o.type, o.key, o.klen = t, k, #k
        if t ~= C.ARMDB_OP_DELETE and v ~= nil then
            o.val, o.vlen = v, #v
        else
            o.val, o.vlen = nil, 0
        end
    end
    local rc = C.armdb_batch(h, ops_buf, n)
    -- ops still anchors the strings ops_buf points into; drop the pointers.
    for i = 0, n - 1 do
        ops_buf[i].key, ops_buf[i].val = nil, nil
    end
    if rc ~= 0 then
        return write_fail(self, rc)
    end
    return true
end

-- true for rc 0, else nil, message, code.
local function ok_or_fail(rc)
    if rc ~= 0 then
        return fail(rc)
    end
    return true
end

function Store:sync()
    return ok_or_fail(C.armdb_sync(handle(self)))
end

-- Compact now (armdb_compact): reclaim the space of overwritten and
-- deleted entries. true, or nil, message, code.
function Store:compact()
    return ok_or_fail(C.armdb_compact(handle(self)))
end

-- Seal every page again with new_key (armdb_rekey): 32 bytes or 64 hex
-- digits. true, or nil, message, code.
function Store:rekey(new_key)
    local h = handle(self)
    local k = M.key_bytes(new_key, "armdb: rekey: new_key", 2)
    return ok_or_fail(C.armdb_rekey(h, k))
end

-- ---- verify (armdb_verify) ----

local VERIFY_WHAT = {
    [C.ARMDB_VERIFY_FILE] = "file", [C.ARMDB_VERIFY_ENTRY] = "entry", [C.ARMDB_VERIFY_PAGE] = "page",
    [C.ARMDB_VERIFY_HINT] = "hint", [C.ARMDB_VERIFY_SHORT] = "short", [C.ARMDB_VERIFY_READ] = "read",
}
local VERIFY_FIELDS = { "files", "entries", "bytes", "pages", "hints", "damage", "damaged_entries",
    "damaged_pages", "damaged_hints", "short_files", "unread_files" }
local verify_out = ffi.new("armdb_verify_report")
local verify_sink, verify_err -- the Lua side of the callback, during a call
local verify_cb -- made on first use: callbacks are a scarce resource of the FFI

local function verify_event(_, d)
    local ok, stop = pcall(verify_sink, d)
    if not ok then
        verify_err = stop
        return 1
    end
    return stop and 1 or 0
end

-- (Not compiled: a callback must not come back into a compiled trace.)
local function verify_call(h)
    return C.armdb_verify(h, verify_cb, nil, verify_out)
end
jit.off(verify_call)

-- The text of one damage event (ev as s:verify gives it).
local function damage_text(ev)
    local w = ev.what
    if w == "entry" then
        return string.format("offset %d: %d bytes are not an intact entry (a failed checksum or header)", ev.offset,
            ev.length)
    elseif w == "page" then
        return string.format("offset %d: the page fails its authentication tag", ev.offset)
    elseif w == "hint" then
        return "the hint fails its check (an open scans the data file instead)"
    elseif w == "short" then
        return string.format("offset %d: the file ends %d bytes before its hint says", ev.offset, ev.length)
    end
    return "cannot be read: " .. ffi_string(C.armdb_strerror(ev.code))
end

-- s:verify(on_event): every data file checked (armdb_verify), live entries
-- and dead ones. on_event (optional) is called with each damage found and,
-- after each data file, with { what = "file", length = bytes verified }
-- (for progress); if it returns true, the verification stops there.
-- Damage events: { what = "entry" | "page" | "hint" | "short" | "read",
-- shard, file (the data file's id), path (of the data file, or of the
-- hint for "hint"), offset, length, code, message }.
-- Returns the report: the counters of armdb_verify_report, damages (the
-- events, in order), ok (no damage) and stopped; or nil, message, code
-- if it could not run.
function Store:verify(on_event)
    local h = handle(self)
    if on_event ~= nil and type(on_event) ~= "function" then
        error("armdb: verify: on_event must be a function, got " .. type(on_event), 2)
    end
    if verify_sink then
        error("armdb: verify: already running (from its own on_event?)", 2)
    end
    local damages, dir = {}, self.dir
    verify_sink = function(d)
        local what = VERIFY_WHAT[tonumber(d.what)] or tostring(d.what)
        local ev = { what = what, shard = tonumber(d.shard), file = tonumber(d.file),
            offset = tonumber(d.offset), length = tonumber(d.length), code = tonumber(d.rc) }
        ev.path = string.format("%s/%03x/%08u.%s", dir, ev.shard, ev.file, what == "hint" and "hint" or "data")
        if what ~= "file" then
            ev.message = damage_text(ev)
            damages[#damages + 1] = ev
        end
        return on_event ~= nil and on_event(ev) == true
    end
    verify_err = nil
    verify_cb = verify_cb or ffi.cast("armdb_verify_fn", verify_event)
    local rc = verify_call(h)
    verify_sink = nil
    if verify_err ~= nil then
        local e = verify_err
        verify_err = nil
        error(e, 0)
    end
    local r = { damages = damages, stopped = rc == 1 }
    for _, name in ipairs(VERIFY_FIELDS) do
        r[name] = tonumber(verify_out[name])
    end
    r.ok = r.damage == 0
    if rc ~= 0 and rc ~= 1 and rc ~= C.ARMDB_CORRUPT and r.unread_files == 0 then
        return fail(rc)
    end
    return r
end

function Store:count()
    return tonumber(C.armdb_count(handle(self)))
end

-- Settings that change on the open store (armdb_tune): a table with any
-- of sync ("interval", "none", "always"), sync_interval_ms,
-- compaction_threshold, auto_compact (boolean), compact_bytes_per_sec
-- (0 = no limit). true, or nil, message, code. s:tuning() reads them all.
local tuning = ffi.new("armdb_tuning")
local TUNE = {
    sync = C.ARMDB_TUNE_SYNC_MODE, sync_interval_ms = C.ARMDB_TUNE_SYNC_INTERVAL,
    compaction_threshold = C.ARMDB_TUNE_COMPACTION_THRESHOLD, auto_compact = C.ARMDB_TUNE_AUTO_COMPACT,
    compact_bytes_per_sec = C.ARMDB_TUNE_COMPACT_RATE,
}
local SYNC_NAMES = { [C.ARMDB_SYNC_INTERVAL] = "interval", [C.ARMDB_SYNC_NONE] = "none",
    [C.ARMDB_SYNC_ALWAYS] = "always" }

function Store:tune(t)
    local h = handle(self)
    if type(t) ~= "table" then
        error("armdb: tune needs a table, got " .. type(t), 2)
    end
    local set = 0
    for name, v in pairs(t) do
        local bitv = TUNE[name]
        if bitv == nil then
            error("armdb: tune: unknown setting " .. tostring(name), 2)
        end
        if name == "sync" then
            if SYNC[v] == nil then
                error('armdb: tune: sync must be "interval", "none" or "always", got ' .. tostring(v), 2)
            end
            tuning.sync_mode = SYNC[v]
        elseif name == "auto_compact" then
            if type(v) ~= "boolean" then
                error("armdb: tune: auto_compact must be a boolean, got " .. type(v), 2)
            end
            tuning.auto_compact = v and 1 or 0
        else
            if type(v) ~= "number" or v < 0 or v ~= v then
                error("armdb: tune: " .. name .. " must be a non-negative number, got " .. tostring(v), 2)
            end
            tuning[name] = v
        end
        set = bit.bor(set, bitv)
    end
    tuning.set = set
    return ok_or_fail(C.armdb_tune(h, tuning))
end

function Store:tuning()
    local rc = C.armdb_tuning_get(handle(self), tuning)
    if rc ~= 0 then
        return fail(rc)
    end
    return { sync = SYNC_NAMES[tuning.sync_mode], sync_interval_ms = tuning.sync_interval_ms,
        compaction_threshold = tuning.compaction_threshold, auto_compact = tuning.auto_compact ~= 0,
        compact_bytes_per_sec = tonumber(tuning.compact_bytes_per_sec) }
end

local BACKENDS = { [C.ARMDB_IO_PWRITE] = "pwrite", [C.ARMDB_IO_URING] = "io_uring" }
local STAT_U64 = {
    "keys", "puts", "gets", "deletes", "bytes_written", "flushes", "syncs", "ring_syncs", "rotations",
    "files", "live_bytes", "dead_bytes", "index_bytes", "index_bytes_per_key", "corrupt_entries",
    "hints_loaded", "files_scanned", "torn_bytes", "gsn", "cache_hits", "cache_misses",
    "cache_evictions", "cache_bytes", "compactions", "compact_bytes_read", "compact_bytes_written",
    "bytes_reclaimed", "shared_applied", "shared_repairs", "shared_reloads",
}

-- The counters and state of armdb_stat as a table of numbers (io_backend
-- as "io_uring" or "pwrite", the 0/1 fields as booleans).
function Store:stats()
    local rc = C.armdb_stats(handle(self), stat)
    if rc ~= 0 then
        return fail(rc)
    end
    local t = {}
    for _, name in ipairs(STAT_U64) do
        t[name] = tonumber(stat[name])
    end
    t.io_backend = BACKENDS[stat.io_backend] or tostring(stat.io_backend)
    t.direct_io = stat.direct_io ~= 0
    t.read_only = stat.read_only ~= 0
    t.shared = stat.shared ~= 0
    t.shards = stat.shards
    t.key_len = stat.key_len
    t.value_len = stat.value_len
    -- Bytes written to the device per byte the writers wrote, since open.
    t.write_amplification = t.bytes_written > 0 and (t.bytes_written + t.compact_bytes_written) / t.bytes_written
        or 1
    return t
end

-- Scan options besides errors: lo, hi (byte strings, at most key_len
-- bytes; nil = unbounded) select [lo, hi); prefix (a byte string) the keys
-- that begin with it; reverse descends; limit (a count) ends the scan
-- after that many pairs; snapshot makes it a point-in-time view (the
-- store as of the call; see ARMDB_ITER_SNAPSHOT in armdb.h for its cost).
-- lo, hi, prefix and reverse need an ordered store (created with ordered =
-- true); C's message says so otherwise.
local SCAN_OPTS = { lo = "string", hi = "string", prefix = "string", reverse = "boolean", limit = "number",
    errors = "boolean", snapshot = "boolean" }

local function scan_args(opts, level)
    if opts == nil then
        return nil, nil, 0, nil, false
    end
    if type(opts) ~= "table" then
        error("armdb: scan options must be a table, got " .. type(opts), level)
    end
    for name, v in pairs(opts) do
        local want = SCAN_OPTS[name]
        if want == nil then
            error("armdb: unknown scan option " .. tostring(name), level)
        end
        if type(v) ~= want then
            error("armdb: scan option " .. name .. " must be a " .. want .. ", got " .. type(v), level)
        end
    end
    local limit = opts.limit
    if limit ~= nil and (limit < 0 or limit ~= math.floor(limit)) then
        error("armdb: scan option limit must be a whole number >= 0, got " .. tostring(limit), level)
    end
    local lo, hi, flags = opts.lo, opts.hi, 0
    if opts.prefix ~= nil then
        if lo ~= nil or hi ~= nil then
            error("armdb: scan option prefix cannot go with lo or hi", level)
        end
        lo, flags = opts.prefix, C.ARMDB_ITER_PREFIX
    end
    if opts.reverse then
        flags = bit.bor(flags, C.ARMDB_ITER_REVERSE)
    end
    if opts.snapshot then
        flags = bit.bor(flags, C.ARMDB_ITER_SNAPSHOT)
    end
    return lo, hi, flags, limit, opts.errors == true
end

-- for k, v in s:pairs(opts) do ... end: every live pair; in key order
-- (bytewise) in an ordered store, in no particular order in another.
-- opts as above. A damaged entry raises, since a for loop cannot return
-- it, unless opts.errors is true: then it comes as k, nil, message, code
-- and the scan goes on (what `armdb verify` counts). The iterator is
-- closed at the end, on that error, with the store, or by the garbage
-- collector if the loop is left early.
-- (scan is what pairs, range and prefix share; errors are raised at
-- level, counted from scan: pairs, range and prefix call it not as a
-- tail call, so their caller is always at 3.)
local function scan(self, opts, level)
    local h = handle(self, level + 1)
    local lo, hi, flags, limit, keep_going = scan_args(opts, level + 1)
    local rc = C.armdb_iter_open(h, lo, lo and #lo or 0, hi, hi and #hi or 0, flags, iter_out)
    if rc ~= 0 then
        local _, msg = fail(rc)
        error("armdb: scan of " .. self.dir .. ": " .. msg, level)
    end
    local it = ffi_gc(iter_out[0], C.armdb_iter_close)
    iter_out[0] = nil
    local state = { it = it }
    self._iters[state] = true
    local store = self
    local left = limit or -1
    local function finish(cur)
        state.it = nil
        store._iters[state] = nil
        C.armdb_iter_close(ffi_gc(cur, nil))
    end
    return function()
        local cur = state.it
        if cur == nil then
            return nil
        end
        if left == 0 then
            finish(cur)
            return nil
        end
        left = left - 1
        it_key[0] = nil -- set by C only for an entry it reached
        local r = C.armdb_iter_next(cur, it_key, it_klen, it_val, it_vlen)
        if r == 0 then
            return ffi_string(it_key[0], it_klen[0]), ffi_string(it_val[0], it_vlen[0])
        end
        if keep_going and r ~= NOTFOUND and it_key[0] ~= nil then
            -- The iterator has moved past the entry it could not read.
            local _, msg, code = fail(r)
            return ffi_string(it_key[0], it_klen[0]), nil, msg, code
        end
        finish(cur)
        if r ~= NOTFOUND then
            local _, msg = fail(r)
            error("armdb: scan of " .. store.dir .. ": " .. msg, 2)
        end
        return nil
    end
end

function Store:pairs(opts)
    local nxt = scan(self, opts, 3)
    return nxt
end

-- o (the bounds of range or prefix) with the other options of opts; raises
-- at the caller of the method (named what) on a bound given as an option.
local function with_bounds(o, opts, what)
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb: scan options must be a table, got " .. type(opts), 3)
    end
    for k, v in pairs(opts or {}) do
        if k == "lo" or k == "hi" or k == "prefix" then
            error("armdb: " .. what .. " takes its bounds as arguments, not as option " .. k, 3)
        end
        o[k] = v
    end
    return o
end

-- s:range(lo, hi, opts): pairs over [lo, hi) (either nil: unbounded).
function Store:range(lo, hi, opts)
    local nxt = scan(self, with_bounds({ lo = lo, hi = hi }, opts, "range"), 3)
    return nxt
end

-- s:prefix(p, opts): pairs over the keys that begin with p.
function Store:prefix(p, opts)
    if type(p) ~= "string" then
        error("armdb: prefix must be a string, got " .. type(p), 2)
    end
    local nxt = scan(self, with_bounds({ prefix = p }, opts, "prefix"), 3)
    return nxt
end

-- ---- the change feed ----

local changes_out = ffi.new("armdb_changes *[1]")
local change = ffi.new("armdb_change")

-- s:changes(since, opts): every write with a GSN above since (0: all of
-- them), in GSN order across shards, as of the call (see CHANGE FEED in
-- armdb.h). Returns an iterator and the GSN it runs to (read to its end, a
-- consumer resumes from there), or nil, message, code: armdb.codes.COMPACTED
-- when compaction no longer keeps every change since that GSN (start again
-- from 0 or a full copy). The iterator yields key, value, gsn, deleted: a
-- delete as key, nil, gsn, true. opts.live: only writes that are still
-- their key's current value (no deletes), least recently written first.
-- A damaged entry raises, since a for loop cannot return it. A feed holds
-- the data files it reads (their space comes back when it is closed): it
-- closes at its end, with the store, when collected, or when the iterator
-- is called as nxt(true).
function Store:changes(since, opts)
    local h = handle(self)
    if type(since) ~= "number" or since < 0 or since ~= math.floor(since) then
        error("armdb: changes: since must be a GSN (a whole number >= 0), got " .. tostring(since), 2)
    end
    local flags = 0
    if opts ~= nil then
        if type(opts) ~= "table" then
            error("armdb: changes options must be a table, got " .. type(opts), 2)
        end
        for name, v in pairs(opts) do
            if name ~= "live" then
                error("armdb: unknown changes option " .. tostring(name), 2)
            end
            if type(v) ~= "boolean" then
                error("armdb: changes option live must be a boolean, got " .. type(v), 2)
            end
        end
        if opts.live then
            flags = C.ARMDB_CHANGES_LIVE
        end
    end
    local rc = C.armdb_changes_open(h, since, flags, changes_out)
    if rc ~= 0 then
        return fail(rc)
    end
    local feed = ffi_gc(changes_out[0], C.armdb_changes_close)
    changes_out[0] = nil
    local last = tonumber(C.armdb_changes_end(feed))
    local state = { it = feed, free = C.armdb_changes_close }
    self._iters[state] = true
    local store = self
    local function finish(cur)
        state.it = nil
        store._iters[state] = nil
        C.armdb_changes_close(ffi_gc(cur, nil))
    end
    return function(close)
        local cur = state.it
        if cur == nil then
            return nil
        end
        if close == true then
            finish(cur)
            return nil
        end
        local r = C.armdb_changes_next(cur, change)
        if r == 0 then
            local k = ffi_string(change.key, change.klen)
            if change.deleted ~= 0 then
                return k, nil, tonumber(change.gsn), true
            end
            return k, ffi_string(change.val, change.vlen), tonumber(change.gsn), false
        end
        finish(cur)
        if r ~= NOTFOUND then
            local _, msg = fail(r)
            error("armdb: changes of " .. store.dir .. ": " .. msg, 2)
        end
        return nil
    end, last
end

-- s:apply(key, value, gsn, deleted): write a change read from another
-- store's feed with its GSN (armdb_apply: skipped if the key already has
-- that GSN or a newer one). true, or nil, message, code.
function Store:apply(k, v, gsn, deleted)
    local h = handle(self)
    if type(k) ~= "string" then
        error("armdb: apply: key must be a string, got " .. type(k), 2)
    end
    if type(gsn) ~= "number" or gsn < 1 or gsn ~= math.floor(gsn) then
        error("armdb: apply: gsn must be a whole number >= 1, got " .. tostring(gsn), 2)
    end
    if deleted then
        change.val, change.vlen, change.deleted = nil, 0, 1
    else
        if type(v) ~= "string" then
            error("armdb: apply: value must be a string, got " .. type(v), 2)
        end
        change.val, change.vlen, change.deleted = v, #v, 0
    end
    change.key, change.klen, change.gsn = k, #k, gsn
    local rc = C.armdb_apply(h, change)
    change.key, change.val = nil, nil
    if rc ~= 0 then
        return fail(rc)
    end
    return true
end

-- ---- checkpoints ----

local checkpoint_out = ffi.new("armdb_checkpoint *[1]")
local cp_done = ffi.new("uint64_t[1]")
local cp_total = ffi.new("uint64_t[1]")

local Checkpoint = {}
Checkpoint.__index = Checkpoint

-- s:checkpoint(dest, opts): start an online, consistent copy of the store
-- into the new directory dest (see CHECKPOINTS in armdb.h): the cut is
-- taken now; cp:step(max_bytes) copies about that many bytes and returns
-- true while there is more (false once the copy is complete and durable),
-- with the bytes done and in all, or nil, message, code; cp.gsn is the GSN
-- the copy holds the store at; cp:close() releases it (an unfinished copy
-- must then be removed). opts.link: hard-link the immutable files.
-- Returns the checkpoint, or nil, message, code.
function Store:checkpoint(dest, opts)
    local h = handle(self)
    if type(dest) ~= "string" then
        error("armdb: checkpoint: dest must be a string, got " .. type(dest), 2)
    end
    local flags = 0
    if opts ~= nil then
        if type(opts) ~= "table" then
            error("armdb: checkpoint options must be a table, got " .. type(opts), 2)
        end
        for name in pairs(opts) do
            if name ~= "link" then
                error("armdb: unknown checkpoint option " .. tostring(name), 2)
            end
        end
        if opts.link then
            flags = C.ARMDB_CHECKPOINT_LINK
        end
    end
    local rc = C.armdb_checkpoint_open(h, dest, flags, checkpoint_out)
    if rc ~= 0 then
        return fail(rc)
    end
    local cp = ffi_gc(checkpoint_out[0], C.armdb_checkpoint_close)
    checkpoint_out[0] = nil
    local state = { it = cp, free = C.armdb_checkpoint_close }
    self._iters[state] = true
    return setmetatable({ _state = state, _store = self, dest = dest,
        gsn = tonumber(C.armdb_checkpoint_gsn(cp)) }, Checkpoint)
end

function Checkpoint:step(max_bytes)
    local cp = self._state.it
    if cp == nil then
        error("armdb: checkpoint into " .. self.dest .. " is closed", 2)
    end
    local rc = C.armdb_checkpoint_step(cp, max_bytes or 4194304, cp_done, cp_total)
    if rc < 0 then
        return fail(rc)
    end
    return rc == 1, tonumber(cp_done[0]), tonumber(cp_total[0])
end

function Checkpoint:close()
    local state = self._state
    if state.it ~= nil then
        C.armdb_checkpoint_close(ffi_gc(state.it, nil))
        state.it = nil
        self._store._iters[state] = nil
    end
end

-- The largest GSN the store has handed out or seen (0: none yet).
function Store:last_gsn()
    local h = handle(self)
    return tonumber(C.armdb_last_gsn(h))
end

-- Close the store (and any scan still open on it). true, or nil, message,
-- code if the final barrier failed (the handle is released either way).
function Store:close()
    local h = self._h
    if h == nil then
        return true
    end
    if self._rs then -- the follower, and the servers serving the store, stop first
        self._f = nil
        stop_replication(self._rs)
    end
    for state in pairs(self._iters) do
        if state.it ~= nil then
            local free = state.free or C.armdb_iter_close
            free(ffi_gc(state.it, nil))
            state.it = nil
        end
    end
    self._h = nil
    local rc = C.armdb_close(ffi_gc(h, nil))
    if rc ~= 0 then
        return fail(rc)
    end
    return true
end

function Store:is_open()
    return self._h ~= nil
end

-- ---- replication ----

-- s:serve_replication(addr, opts): serve the store to followers on addr
-- ("HOST:PORT", default "127.0.0.1:0": a free port of loopback) under
-- opts.name (default: the last part of its directory), with the leader
-- options of armdb.replication (secret, batch_entries, batch_bytes,
-- heartbeat_ms, timeout_ms, max_followers). Without a secret only
-- loopback addresses are served. Returns the server (srv:port(),
-- srv:stats(), srv:close()), or nil, message, code. The server runs until
-- it is closed, or the store is.
function Store:serve_replication(addr, opts)
    handle(self)
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb: serve_replication: opts must be a table, got " .. type(opts), 2)
    end
    local name, lopts = basename(self.dir), nil
    for k, v in pairs(opts or {}) do
        if k == "name" then
            if type(v) ~= "string" then
                error("armdb: serve_replication: option name must be a string, got " .. type(v), 2)
            end
            name = v
        else
            lopts = lopts or {}
            lopts[k] = v
        end
    end
    if self._f ~= nil then
        return nil, "store " .. self.dir .. " is a replica: serve its leader instead", C.ARMDB_INVAL
    end
    local srv, msg, code = repl.serve(addr, lopts, "armdb: serve_replication", 2)
    if srv == nil then
        return nil, msg, code
    end
    local ok
    ok, msg, code = srv:add(name, self)
    if not ok then
        srv:close()
        return nil, msg, code
    end
    return srv
end

-- For armdb.replication's server: the handle to serve (the store is now
-- one that sst, a server's state, serves; see rstate).
function Store:_serve_on(sst)
    local h = handle(self, 4)
    if self._f ~= nil then
        error("armdb: store " .. self.dir .. " is a replica: serve its leader instead", 4)
    end
    rstate(self).servers[sst] = true
    return h
end

function Store:_unserve(sst)
    if self._rs then
        self._rs.servers[sst] = nil
    end
end

-- true if the store is a replica that follows a leader.
function Store:is_replica()
    return self._f ~= nil
end

-- The follower's stats (armdb.replication.follower_stats: state,
-- applied_gsn, durable_gsn, leader_gsn, lag_gsn, entries, bytes,
-- connects, resyncs, last_contact_ms, last_error) with leader (its
-- address), name (the store followed), swaps (copies put in place by a
-- resync) and swap_error (why the last one failed, if it did); nil if the
-- store is not a replica; or nil, message, code.
function Store:replication()
    handle(self)
    local f = self._f
    if f == nil then
        return nil
    end
    local t, msg, code = repl.follower_stats(f)
    if t == nil then
        return nil, msg, code
    end
    t.leader, t.name, t.swaps, t.swap_error = self.leader, self.name, self._swaps or 0, self._swap_error
    return t
end

-- s:wait_replica(gsn, timeout_ms): wait until the replica has applied
-- every write of its leader up to gsn (nil: the leader's last GSN as last
-- heard, which is 0 before the first contact), at most timeout_ms
-- (default 5000). true, or nil, message, code (-ETIMEDOUT: the GSN
-- reached is in the message). Blocks the thread.
function Store:wait_replica(gsn, timeout_ms)
    handle(self)
    local f = self._f
    if f == nil then
        error("armdb: wait_replica: store " .. self.dir .. " is not a replica (open it with follow)", 2)
    end
    if gsn ~= nil and (type(gsn) ~= "number" or gsn < 0 or gsn ~= math.floor(gsn)) then
        error("armdb: wait_replica: gsn must be a whole number >= 0, got " .. tostring(gsn), 2)
    end
    if timeout_ms ~= nil and (type(timeout_ms) ~= "number" or timeout_ms < 0 or timeout_ms > 4294967295
            or timeout_ms ~= math.floor(timeout_ms)) then
        error("armdb: wait_replica: timeout_ms must be a whole number of milliseconds, got " .. tostring(timeout_ms),
            2)
    end
    timeout_ms = timeout_ms or 5000
    if gsn == nil then
        local rc = C.armdb_repl_follower_stats(f, fstat)
        if rc ~= 0 then
            return fail(rc)
        end
        gsn = tonumber(fstat.leader_gsn)
    end
    local rc = C.armdb_repl_follower_wait(f, gsn, timeout_ms)
    handle(self) -- a copy due meanwhile goes in now
    if rc == 0 then
        return true
    end
    if rc == ETIMEDOUT then
        local t = repl.follower_stats(self._f) or {}
        return nil, string.format("replica %s: GSN %d not applied within %d ms (applied %s, state %s%s)", self.dir,
            gsn, timeout_ms, tostring(t.applied_gsn), tostring(t.state),
            t.last_error and ", last error: " .. t.last_error or ""), rc
    end
    return fail(rc)
end

Store.__tostring = function(self)
    return "armdb.store(" .. self.dir .. (self._h and ")" or ", closed)")
end

M.open = open
M.Store = Store
M.fail = fail
return M
