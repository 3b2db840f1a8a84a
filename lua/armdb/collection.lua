-- armdb.collection: a named, typed collection: one armdb store (the
-- directory DB/<name>/) seen through a key codec and a value codec.
--
-- Results are the raw store's, with decoded keys and values: put/delete/
-- cas return booleans, get returns the value or nil, failures return nil,
-- message, code. Misuse raises at the caller's level: a key or value the
-- codec refuses, a wrong argument type, a closed collection. Stored bytes
-- that do not decode (a damaged value, a value written through the raw
-- store) are reported as nil, message, armdb.codes.CORRUPT by get and
-- get_many, and raised by pairs (a for loop cannot return them).
--
-- get and put cross into C with pointer and length: codecs of fixed
-- length (integers, uuid, string(N), number, FFI types) encode into
-- buffers of their own and decode from the store's, so no Lua string is
-- made for their keys and values.
local lib = require("armdb.lib")
local codecs = require("armdb.codecs")

local C = lib.C
local type, error, getmetatable = type, error, getmetatable
local show = codecs.show

local CORRUPT = C.ARMDB_CORRUPT
local CONFLICT = C.ARMDB_CONFLICT
local UPDATE_TRIES = 100

local Collection = {}
Collection.__index = Collection

-- The store, or a raise at the caller of the method that asked.
local function store_of(self)
    local s = self._store
    if s == nil then
        error("armdb: collection " .. self.name .. " is closed", 3)
    end
    return s
end

local function corrupt(self, k, why)
    return nil, "collection " .. self.name .. ": value of key " .. show(k) .. " " .. why, CORRUPT
end

-- Decode raw value bytes v of key k: value, or nil, message, CORRUPT.
local function decode(self, k, v)
    local d, why = self._vc.decode(v)
    if d == nil then
        return corrupt(self, k, why or "decodes to nil")
    end
    return d
end

local function check_value(self, v)
    if v == nil then
        error("armdb: collection " .. self.name .. ": value is nil (use delete to remove a key)", 3)
    end
end

function Collection.new(name, spec, kc, vc, store)
    return setmetatable({ name = name, spec = spec, _kc = kc, _vc = vc, _store = store }, Collection)
end

-- ---- write hooks (on_write) ----
--
-- Called after each write through this collection (put, cas, update,
-- delete of a present key, and each write of a db:batch) has succeeded:
-- fn(k, v, old) with the key and value as given (v nil for a delete) and,
-- if opts.old, the value before (nil if absent; read before the write,
-- one more get). Hooks run in registration order; an error in one is
-- raised to the writer, the write staying done. Writes through the raw
-- store or another process do not call them.

-- The value of k before a write, if a hook wants it.
local function old_for_hooks(self, k)
    if not self._hooks_old then
        return nil
    end
    local old, msg, code = self:get(k)
    if old == nil and msg ~= nil then
        return nil, msg, code
    end
    return old
end

function Collection:_fire(k, v, old)
    local hooks = self._hooks
    for i = 1, #hooks do
        hooks[i].fn(k, v, hooks[i].old and old or nil)
    end
end

-- coll:on_write(fn, {old = true}) -> a function that removes the hook.
function Collection:on_write(fn, opts)
    store_of(self)
    if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn) and getmetatable(fn).__call) then
        error("armdb: collection " .. self.name .. ": on_write needs a function, got " .. type(fn), 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
        error("armdb: collection " .. self.name .. ": on_write options must be a table, got " .. type(opts), 2)
    end
    for k in pairs(opts or {}) do
        if k ~= "old" then
            error("armdb: collection " .. self.name .. ": unknown on_write option " .. tostring(k), 2)
        end
    end
    local h = { fn = fn, old = opts ~= nil and opts.old == true }
    local hooks = self._hooks or {}
    hooks[#hooks + 1] = h
    self._hooks = hooks
    self._hooks_old = self._hooks_old or h.old
    return function()
        local list = self._hooks or {}
        for i = #list, 1, -1 do
            if list[i] == h then
                table.remove(list, i)
            end
        end
        local want_old = false
        for i = 1, #list do
            want_old = want_old or list[i].old
        end
        self._hooks = #list > 0 and list or nil
        self._hooks_old = want_old
    end
end

-- The ttl of a write's opts ({ ttl = seconds | false }, armdb.policy),
-- or nil for the collection's default.
local function write_ttl(self, opts)
    if opts == nil then
        return nil
    end
    return require("armdb.policy").write_ttl(self, opts, 3)
end

-- put(k, v, opts) -> true | nil, msg, code. opts.ttl: see armdb.policy.
function Collection:put(k, v, opts)
    local s = store_of(self)
    check_value(self, v)
    local ttl = write_ttl(self, opts)
    local vp, vl = self._vc.encode_p(v, 2)
    local kp, kl = self._kc.encode_p(k, 2)
    if not self._hooks then
        return s:_put_p(kp, kl, vp, vl, ttl)
    end
    local kb, vb = self._kc.encode(k, 2), self._vc.encode(v, 2) -- kp, vp may share a codec buffer
    local old, msg, code = old_for_hooks(self, k)
    if msg ~= nil then
        return nil, msg, code
    end
    local ok
    ok, msg, code = s:put(kb, vb, ttl)
    if ok then
        self:_fire(k, v, old)
    end
    return ok, msg, code
end

-- get(k) -> value | nil (absent) | nil, msg, code
function Collection:get(k)
    local s = store_of(self)
    local kp, kl = self._kc.encode_p(k, 2)
    local p, n, code = s:_get_p(kp, kl)
    if p == nil then
        if n == nil then
            return nil -- absent: a plain nil
        end
        return nil, n, code
    end
    local d, why = self._vc.decode_p(p, n)
    if d == nil then
        return corrupt(self, k, why or "decodes to nil")
    end
    return d
end

-- delete(k) -> true (deleted) | false (absent) | nil, msg, code
function Collection:delete(k)
    local s = store_of(self)
    local kb = self._kc.encode(k, 2)
    if not self._hooks then
        return s:delete(kb)
    end
    local old, msg, code = old_for_hooks(self, k)
    if msg ~= nil then
        return nil, msg, code
    end
    local ok
    ok, msg, code = s:delete(kb)
    if ok then
        self:_fire(k, nil, old)
    end
    return ok, msg, code
end

-- cas(k, old, new) -> true (set) | false (the current value is not old;
-- old == nil: k is present) | nil, msg, code. Values are compared as
-- encoded bytes (see armdb.codecs about tables).
function Collection:cas(k, old, new, opts)
    local s = store_of(self)
    local ttl = write_ttl(self, opts)
    local kb = self._kc.encode(k, 2)
    local ob
    if old ~= nil then
        ob = self._vc.encode(old, 2)
    end
    check_value(self, new)
    local nb = self._vc.encode(new, 2)
    local ok, msg, code = s:cas(kb, ob, nb, ttl)
    if ok and self._hooks then
        self:_fire(k, new, old)
    end
    return ok, msg, code
end

-- update(k, fn): new = fn(current value or nil); new == nil writes
-- nothing. The write is a compare-and-set against the bytes read, so a
-- concurrent writer makes it read and call fn again (fn must be free of
-- side effects it cannot repeat), at most UPDATE_TRIES times.
-- -> true, new (written) | false (fn returned nil) | nil, msg, code
function Collection:update(k, fn, opts)
    local s = store_of(self)
    local ttl = write_ttl(self, opts)
    if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn)
        and getmetatable(fn).__call) then
        error("armdb: collection " .. self.name .. ": update needs a function, got " .. type(fn), 2)
    end
    local kb = self._kc.encode(k, 2)
    local vc = self._vc
    for _ = 1, UPDATE_TRIES do
        local raw, msg, code = s:get(kb)
        if raw == nil and msg ~= nil then
            return nil, msg, code
        end
        local cur
        if raw ~= nil then
            cur, msg, code = decode(self, k, raw)
            if cur == nil then
                return nil, msg, code
            end
        end
        local new = fn(cur)
        if new == nil then
            return false
        end
        if self._store == nil then -- fn closed the database
            error("armdb: collection " .. self.name .. " is closed", 2)
        end
        local ok
        ok, msg, code = s:cas(kb, raw, vc.encode(new, 2), ttl)
        if ok then
            if self._hooks then
                self:_fire(k, new, cur)
            end
            return true, new
        elseif ok == nil then
            return nil, msg, code
        end
    end
    return nil, "update of " .. show(k) .. " in collection " .. self.name .. ": gave up after "
        .. UPDATE_TRIES .. " conflicts", CONFLICT
end

function Collection:count()
    return store_of(self):count()
end

-- coll:set_policy(t): change the collection's policies at run time (ttl,
-- max_keys, max_bytes, on_full, compaction, sync, sync_interval_ms,
-- sweep_every; see armdb.policy). true, or nil, message, code.
function Collection:set_policy(t)
    store_of(self)
    return require("armdb.policy").set(self, t, 2)
end

-- The policies in force, as set_policy takes them.
function Collection:policy()
    store_of(self)
    return require("armdb.policy").get(self)
end

-- Compact the collection's store now. true, or nil, message, code.
function Collection:compact()
    return store_of(self):compact()
end

-- Decoded pairs from raw scan nxt of collection self.
local function decoded(self, nxt)
    local kdec, vdec, name = self._kc.decode, self._vc.decode, self.name
    return function()
        local kb, vb = nxt()
        if kb == nil then
            return nil
        end
        local k = kdec(kb)
        local v, why = vdec(vb)
        if v == nil then
            error("armdb: scan of collection " .. name .. ": value of key " .. show(k) .. " "
                .. (why or "decodes to nil"), 2)
        end
        return k, v
    end
end

-- for k, v, gsn, deleted in coll:changes(since, opts) do ... end: every
-- write to the collection with a GSN above since, in GSN order, decoded (a
-- delete: k, nil, gsn, true). Returns the iterator and the GSN it runs to
-- (resume from there), or nil, message, code (armdb.codes.COMPACTED: the
-- changes since that GSN are no longer all kept; start from 0). nxt(true)
-- closes the feed early (see store:changes).
-- opts.live: only the writes still current, least recently written first.
function Collection:changes(since, opts)
    local s = store_of(self)
    local nxt, last, code = s:changes(since, opts)
    if nxt == nil then
        return nil, "collection " .. self.name .. ": " .. last, code
    end
    local kdec, vdec, name = self._kc.decode, self._vc.decode, self.name
    return function(close)
        if close == true then
            return nxt(true)
        end
        local kb, vb, gsn, deleted = nxt()
        if kb == nil then
            return nil
        end
        local k = kdec(kb)
        if deleted then
            return k, nil, gsn, true
        end
        local v, why = vdec(vb)
        if v == nil then
            error("armdb: changes of collection " .. name .. ": value of key " .. show(k) .. " "
                .. (why or "decodes to nil"), 2)
        end
        return k, v, gsn, false
    end, last
end

-- The largest GSN the collection's store has handed out or seen.
function Collection:last_gsn()
    return store_of(self):last_gsn()
end

-- The raw scan options of opts ({reverse = bool, limit = n, snapshot =
-- bool}), checked.
local function scan_opts(self, opts, level)
    if opts == nil then
        return {}
    end
    if type(opts) ~= "table" then
        error("armdb: collection " .. self.name .. ": scan options must be a table, got " .. type(opts), level)
    end
    local o = {}
    for k, v in pairs(opts) do
        if k ~= "reverse" and k ~= "limit" and k ~= "snapshot" then
            error("armdb: collection " .. self.name .. ": unknown scan option " .. tostring(k)
                .. " (reverse, limit and snapshot are known)", level)
        end
        o[k] = v
    end
    return o
end

local function need_ordered(self, what)
    if not self.spec.ordered then
        error("armdb: collection " .. self.name .. " is not ordered: " .. what .. " needs a collection"
            .. " created with ordered = true", 3)
    end
end

-- for k, v in coll:pairs(opts) do ... end: every pair, decoded; in the key
-- codec's order (numeric for u32, u64, i64) if the collection is ordered,
-- else in no order. opts: reverse (ordered only), limit.
function Collection:pairs(opts)
    local s = store_of(self)
    local o = scan_opts(self, opts, 3)
    if o.reverse then
        need_ordered(self, "a reverse scan")
    end
    return decoded(self, s:pairs(o))
end

-- coll:range(lo, hi, opts): the pairs with lo <= key < hi in the key
-- codec's order (either nil: unbounded), decoded. opts: reverse, limit.
function Collection:range(lo, hi, opts)
    local s = store_of(self)
    need_ordered(self, "range")
    local o = scan_opts(self, opts, 3)
    local enc = self._kc.encode
    if lo ~= nil then
        o.lo = enc(lo, 2)
    end
    if hi ~= nil then
        o.hi = enc(hi, 2)
    end
    return decoded(self, s:pairs(o))
end

-- coll:prefix(p, opts): the pairs whose key begins with the bytes p, for
-- string(N) and bytes(N) keys (a string(N) key is its text, then zeros).
function Collection:prefix(p, opts)
    local s = store_of(self)
    need_ordered(self, "prefix")
    local kname = self._kc.name
    if not (kname:find("^string%(") or kname:find("^bytes%(")) then
        error("armdb: collection " .. self.name .. ": prefix needs string(N) or bytes(N) keys, not "
            .. kname .. " (use range)", 2)
    end
    if type(p) ~= "string" then
        error("armdb: collection " .. self.name .. ": prefix must be a string, got " .. type(p), 2)
    end
    if #p > self._kc.len then
        error("armdb: collection " .. self.name .. ": prefix of " .. #p .. " bytes is longer than its "
            .. self._kc.len .. "-byte keys", 2)
    end
    local o = scan_opts(self, opts, 3)
    o.prefix = p
    return decoded(self, s:pairs(o))
end

-- get_many(keys) -> array of values (nil holes, field n) | nil, msg, code
function Collection:get_many(keys)
    local s = store_of(self)
    if type(keys) ~= "table" then
        error("armdb: collection " .. self.name .. ": get_many needs an array of keys, got "
            .. type(keys), 2)
    end
    local n = #keys
    local enc = self._kc.encode
    local kbs = {}
    for i = 1, n do
        kbs[i] = enc(keys[i], 2)
    end
    local out, msg, code = s:get_many(kbs)
    if out == nil then
        return nil, msg, code
    end
    for i = 1, n do
        local v = out[i]
        if v ~= nil then
            local d
            d, msg, code = decode(self, keys[i], v)
            if d == nil then
                return nil, msg, code
            end
            out[i] = d
        end
    end
    return out
end

-- The store's stats, with the collection's name and codecs.
function Collection:stats()
    local t, msg, code = store_of(self):stats()
    if t == nil then
        return nil, msg, code
    end
    t.name = self.name
    t.key = self.spec.key
    t.value = self.spec.value
    return t
end

-- Called by db:close(): close the store; later calls raise.
function Collection:_close()
    local s = self._store
    if s == nil then
        return true
    end
    self._store = nil
    return s:close()
end

Collection.__tostring = function(self)
    return "armdb.collection(" .. self.name .. (self._store and ")" or ", closed)")
end

return Collection
