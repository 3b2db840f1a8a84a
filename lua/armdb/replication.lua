-- armdb.replication: read replicas from Lua (see REPLICATION in armdb.h).
--
-- A leader serves stores on a TCP address (M.serve, or the
-- serve_replication methods of a store and a database); a follower is a
-- store opened with ARMDB_REPLICA that a thread of the C library keeps up
-- to date (armdb.store(dir, { follow = addr, ... }), armdb.open(dir,
-- { follow = addr, ... })). This file owns the options, the server object
-- and the tables made of the C stats; the follower's handle lives in its
-- Store (armdb.store), which exchanges it when a resync's copy is due.
--
-- Lifetimes: a store must stay open while a server serves it, and a
-- follower must stop before its store closes. So a store's close() closes
-- its follower and every server serving it first, and the finalizer of a
-- store handle does the same (a server is kept alive by the stores it
-- serves, and runs until it is closed or one of them is).
local ffi = require("ffi")
local lib = require("armdb.lib")

local C = lib.C
local ffi_string, type, error, tonumber = ffi.string, type, error, tonumber

local M = {}

local UINT32_MAX = 4294967295
local SECRET_MIN, SECRET_MAX = 16, 1024
local PEERS_MAX = 256

M.STATES = {
    [C.ARMDB_REPL_CONNECTING] = "connecting", [C.ARMDB_REPL_CATCHING_UP] = "catching_up",
    [C.ARMDB_REPL_LIVE] = "live", [C.ARMDB_REPL_RESYNC] = "resync", [C.ARMDB_REPL_SWAP] = "swap",
    [C.ARMDB_REPL_STOPPED] = "stopped",
}

-- ---- options ----

-- Which fields each side takes (all numbers but secret).
local LEADER = { secret = true, batch_entries = true, batch_bytes = true, heartbeat_ms = true, timeout_ms = true,
    max_followers = true }
local FOLLOWER = { secret = true, timeout_ms = true, retry_min_ms = true, retry_max_ms = true,
    ack_interval_ms = true }
M.LEADER_OPTS, M.FOLLOWER_OPTS = LEADER, FOLLOWER

-- Check one replication option (raises at level: "WHAT: option NAME ...").
function M.check_opt(what, name, v, level)
    if name == "secret" then
        if type(v) ~= "string" then
            error(what .. ": option secret must be a string, got " .. type(v), level + 1)
        end
        if #v < SECRET_MIN or #v > SECRET_MAX then
            error(what .. ": option secret must be " .. SECRET_MIN .. ".." .. SECRET_MAX .. " bytes, got " .. #v
                .. " bytes", level + 1)
        end
    elseif type(v) ~= "number" or v < 0 or v > UINT32_MAX or v ~= math.floor(v) then
        error(what .. ": option " .. name .. " must be a whole number 0.." .. UINT32_MAX .. ", got "
            .. tostring(v), level + 1)
    end
end

-- t (a table of the fields of `allowed`) -> an armdb_repl_options, and
-- the secret string it points into (keep it alive while C uses it: C
-- copies it at the call). Raises at level naming a bad or unknown field.
function M.options(t, allowed, what, level)
    level = level + 1
    local o = ffi.new("armdb_repl_options")
    C.armdb_repl_options_init(o)
    if t == nil then
        return o, nil
    end
    if type(t) ~= "table" then
        error(what .. ": options must be a table, got " .. type(t), level)
    end
    for name, v in pairs(t) do
        if not allowed[name] then
            error(what .. ": unknown option " .. tostring(name), level)
        end
        M.check_opt(what, name, v, level)
        if name ~= "secret" then
            o[name] = v
        end
    end
    if t.secret then
        o.secret, o.secret_len = t.secret, #t.secret
    end
    return o, t.secret
end

-- The failure triple for rc, as the store module gives it.
local function fail(rc)
    return require("armdb.store").fail(rc)
end

-- ---- stats as tables ----

local server_stat = ffi.new("armdb_repl_server_stat")
local peers = ffi.new("armdb_repl_peer[?]", PEERS_MAX)
local peers_n = ffi.new("uint32_t[1]")
local follower_stat = ffi.new("armdb_repl_follower_stat")
M.follower_stat = follower_stat -- scratch shared with armdb.store (its swap check)

local PEER_U64 = { "sent_gsn", "acked_gsn", "lag_gsn", "lag_ms", "entries", "bytes", "connected_ms" }
local FOLLOWER_U64 = { "applied_gsn", "durable_gsn", "leader_gsn", "lag_gsn", "entries", "bytes", "connects",
    "resyncs" }

local function error_text(code, msg)
    if code == 0 then
        return nil
    end
    local s = ffi_string(msg)
    if s == "" then
        s = ffi_string(C.armdb_strerror(code))
    end
    return s
end

-- The follower f's stats: state (a name of M.STATES), applied_gsn,
-- durable_gsn, leader_gsn, lag_gsn, entries, bytes, connects, resyncs,
-- last_contact_ms (nil: never heard from the leader), last_error (the
-- message, nil if none) and last_error_code; or nil, message, code.
function M.follower_stats(f)
    local rc = C.armdb_repl_follower_stats(f, follower_stat)
    if rc ~= 0 then
        return fail(rc)
    end
    local st = follower_stat
    local t = { state = M.STATES[st.state] or tostring(st.state) }
    for _, name in ipairs(FOLLOWER_U64) do
        t[name] = tonumber(st[name])
    end
    if st.last_contact_ms ~= 0xffffffffffffffffULL then
        t.last_contact_ms = tonumber(st.last_contact_ms)
    end
    t.last_error_code = st.last_error ~= 0 and st.last_error or nil
    t.last_error = error_text(st.last_error, st.last_error_msg)
    return t
end

-- ---- the server ----

local Server = {}
Server.__index = Server
M.Server = Server

local server_out = ffi.new("armdb_repl_server *[1]")

-- Serve nothing yet on addr (nil: "127.0.0.1:0") with opts (the fields
-- of LEADER). A server, or nil, message, code. Raises at level on misuse.
function M.serve(addr, opts, what, level)
    level = level + 1
    if addr ~= nil and type(addr) ~= "string" then
        error(what .. ": addr must be a string (HOST:PORT), got " .. type(addr), level)
    end
    local o, anchor = M.options(opts, LEADER, what, level)
    local rc = C.armdb_repl_serve(addr or "127.0.0.1:0", o, server_out)
    local _ = anchor
    if rc ~= 0 then
        return fail(rc)
    end
    local p = server_out[0]
    server_out[0] = nil
    -- (No finalizer on p: the stores it serves close it, see the top.)
    local srv = setmetatable({ _st = { srv = p }, _stores = {}, _names = {} }, Server)
    local port = C.armdb_repl_server_port(p)
    srv.addr = (addr or "127.0.0.1:0"):gsub(":%d+$", "") .. ":" .. port
    return srv
end

local function ptr(self, level)
    local p = self._st.srv
    if p == nil then
        error("armdb: replication server " .. self.addr .. " is closed", level + 1)
    end
    return p
end

-- Serve store s (an armdb.store) under name. true, or nil, message, code
-- (EXISTS for a name served already).
function Server:add(name, s)
    local p = ptr(self, 2)
    if type(name) ~= "string" then
        error("armdb: server:add: name must be a string, got " .. type(name), 2)
    end
    if type(s) ~= "table" or type(s._serve_on) ~= "function" then
        error("armdb: server:add: " .. tostring(s) .. " is not an armdb store", 2)
    end
    local h = s:_serve_on(self._st)
    local rc = C.armdb_repl_server_add(p, name, h)
    if rc ~= 0 then
        if self._stores[s] == nil then
            s:_unserve(self._st)
        end
        return fail(rc)
    end
    self._stores[s] = true
    self._names[name] = s
    return true
end

-- Whether name is served.
function Server:serves(name)
    return self._names[name] ~= nil
end

-- The bytes a follower fetches with armdb_repl_fetch_meta (a database's
-- catalog). true, or nil, message, code.
function Server:set_meta(bytes)
    local p = ptr(self, 2)
    if type(bytes) ~= "string" then
        error("armdb: server:set_meta: bytes must be a string, got " .. type(bytes), 2)
    end
    local rc = C.armdb_repl_server_set_meta(p, bytes, #bytes)
    if rc ~= 0 then
        return fail(rc)
    end
    return true
end

function Server:port()
    return C.armdb_repl_server_port(ptr(self, 2))
end

-- { accepted, refused, failed, resyncs, followers, last_error (message or
-- nil), last_error_code, peers = { { addr, store, state ("catching_up" or
-- "live"), sent_gsn, acked_gsn, lag_gsn, lag_ms, entries, bytes,
-- connected_ms }, ... } }, or nil, message, code.
function Server:stats()
    local p = ptr(self, 2)
    local rc = C.armdb_repl_server_stats(p, server_stat, peers, PEERS_MAX, peers_n)
    if rc ~= 0 then
        return fail(rc)
    end
    local st = server_stat
    local t = { accepted = tonumber(st.accepted), refused = tonumber(st.refused), failed = tonumber(st.failed),
        resyncs = tonumber(st.resyncs), followers = st.followers,
        last_error_code = st.last_error ~= 0 and st.last_error or nil,
        last_error = error_text(st.last_error, st.last_error_msg), peers = {} }
    for i = 0, math.min(peers_n[0], PEERS_MAX) - 1 do
        local pe = peers[i]
        local row = { addr = ffi_string(pe.addr), store = ffi_string(pe.store),
            state = M.STATES[pe.state] or tostring(pe.state) }
        for _, name in ipairs(PEER_U64) do
            row[name] = tonumber(pe[name])
        end
        t.peers[#t.peers + 1] = row
    end
    table.sort(t.peers, function(a, b)
        if a.store ~= b.store then
            return a.store < b.store
        end
        return a.addr < b.addr
    end)
    return t
end

-- Stop listening and end every connection (joins the threads). The
-- stores stay open. A second close is a no-op.
function Server:close()
    local st = self._st
    local p = st.srv
    if p ~= nil then -- (nil: closed already, or by a store it served)
        st.srv = nil
        C.armdb_repl_server_close(p)
    end
    for s in pairs(self._stores) do
        s:_unserve(st)
    end
    self._stores, self._names = {}, {}
    if self._db then
        self._db._servers[self] = nil
    end
    return true
end

function Server:is_open()
    return self._st.srv ~= nil
end

Server.__tostring = function(self)
    return "armdb.replication.server(" .. self.addr .. (self._st.srv and ")" or ", closed)")
end

-- ---- fetching the leader's meta bytes ----

local meta_len = ffi.new("size_t[1]")
local META_FIRST = 65536

-- The meta bytes of the leader at addr (a database's catalog), or nil,
-- message, code (NOTFOUND: the leader has none).
function M.fetch_meta(addr, opts, what, level)
    local o, anchor = M.options(opts, FOLLOWER, what, level + 1)
    local cap = META_FIRST
    local buf = ffi.new("unsigned char[?]", cap)
    local rc = C.armdb_repl_fetch_meta(addr, o, buf, cap, meta_len)
    if rc == C.ARMDB_TOOBIG then
        cap = tonumber(meta_len[0])
        buf = ffi.new("unsigned char[?]", cap)
        rc = C.armdb_repl_fetch_meta(addr, o, buf, cap, meta_len)
    end
    local _ = anchor
    if rc ~= 0 then
        return fail(rc)
    end
    return ffi_string(buf, meta_len[0])
end

-- ---- status files ----

-- The "name value" lines of a status file the C library writes in a store
-- directory (REPLICA, REPLICATION), as { lines = { "name value", ... },
-- fields = { name = value (a number where it is one) }, age = seconds
-- since it was written (nil if unknown) }; nil if there is no such file.
function M.read_status(dir, file)
    local f = io.open(dir .. "/" .. file, "rb")
    if f == nil then
        return nil
    end
    local text = f:read("*a") or ""
    f:close()
    local t = { lines = {}, fields = {} }
    for line in text:gmatch("[^\n]+") do
        t.lines[#t.lines + 1] = line
        local name, value = line:match("^(%S+)%s+(.-)%s*$")
        if name and t.fields[name] == nil then
            t.fields[name] = tonumber(value) or value
        end
    end
    return t
end

return M
