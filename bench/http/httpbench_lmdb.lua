-- httpbench_lmdb: the few LMDB calls bench/http needs, through LuaJIT's
-- FFI (liblmdb, Debian's liblmdb0), for one environment per nginx worker.
--
--   local lmdb = require("httpbench_lmdb")
--   local db = assert(lmdb.open(dir, map_size))   -- in init_worker: after fork
--   db:get(k)        -> value string, or nil when absent; raises on an error
--   db:put(k, v)     -> true, or nil, message
--   db:put_many(keys, values) -> true, or nil, message (one transaction)
--   db:close()
--
-- Flags: MDB_NOSYNC, so that a commit writes its pages but does not wait
-- for fdatasync (armdb's interval mode does not make a put wait either;
-- the OS writes the pages back, and a crash of the machine may lose or
-- tear recent commits). No MDB_NOTLS: an nginx worker runs its handlers on
-- one thread, holds the one read transaction of this module (reset after
-- every get, renewed for the next) and never has two live at once, so the
-- reader slot LMDB binds to that thread is always the same one.
local ffi = require("ffi")

ffi.cdef([[
typedef struct MDB_env MDB_env;
typedef struct MDB_txn MDB_txn;
typedef unsigned int MDB_dbi;
typedef struct MDB_val { size_t mv_size; void *mv_data; } MDB_val;
int mdb_env_create(MDB_env **env);
int mdb_env_set_mapsize(MDB_env *env, size_t size);
int mdb_env_set_maxreaders(MDB_env *env, unsigned int readers);
int mdb_env_open(MDB_env *env, const char *path, unsigned int flags, unsigned int mode);
void mdb_env_close(MDB_env *env);
int mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned int flags, MDB_txn **txn);
int mdb_txn_commit(MDB_txn *txn);
void mdb_txn_abort(MDB_txn *txn);
void mdb_txn_reset(MDB_txn *txn);
int mdb_txn_renew(MDB_txn *txn);
int mdb_dbi_open(MDB_txn *txn, const char *name, unsigned int flags, MDB_dbi *dbi);
int mdb_get(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data);
int mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned int flags);
char *mdb_strerror(int err);
]])

local MDB_NOSYNC = 0x10000
local MDB_RDONLY = 0x20000
local MDB_NOTFOUND = -30798

-- The soname, so that only the runtime package (liblmdb0) is needed.
local ok, L = pcall(ffi.load, "liblmdb.so.0")
if not ok then
    L = ffi.load("lmdb")
end

local ffi_string, ffi_cast = ffi.string, ffi.cast

local M = {}
local DB = {}
DB.__index = DB

local function fail(what, rc)
    return nil, "lmdb: " .. what .. ": " .. ffi_string(L.mdb_strerror(rc))
end

function M.open(dir, map_size)
    local envp = ffi.new("MDB_env *[1]")
    local rc = L.mdb_env_create(envp)
    if rc ~= 0 then
        return fail("mdb_env_create", rc)
    end
    local env = envp[0]
    rc = L.mdb_env_set_mapsize(env, map_size)
    if rc == 0 then
        rc = L.mdb_env_open(env, dir, MDB_NOSYNC, tonumber("644", 8))
    end
    if rc ~= 0 then
        L.mdb_env_close(env)
        return fail("mdb_env_open " .. dir, rc)
    end
    -- The unnamed database: its handle is valid once the opening
    -- transaction commits.
    local txnp = ffi.new("MDB_txn *[1]")
    local dbi = ffi.new("MDB_dbi[1]")
    rc = L.mdb_txn_begin(env, nil, MDB_RDONLY, txnp)
    if rc == 0 then
        rc = L.mdb_dbi_open(txnp[0], nil, 0, dbi)
        if rc == 0 then
            rc = L.mdb_txn_commit(txnp[0])
        else
            L.mdb_txn_abort(txnp[0])
        end
    end
    if rc ~= 0 then
        L.mdb_env_close(env)
        return fail("mdb_dbi_open", rc)
    end
    -- The read transaction every get renews and resets.
    local rtxn = ffi.new("MDB_txn *[1]")
    rc = L.mdb_txn_begin(env, nil, MDB_RDONLY, rtxn)
    if rc ~= 0 then
        L.mdb_env_close(env)
        return fail("mdb_txn_begin (read)", rc)
    end
    L.mdb_txn_reset(rtxn[0])
    return setmetatable({
        env = env, dbi = dbi[0], rtxn = rtxn[0], wtxn = ffi.new("MDB_txn *[1]"),
        k = ffi.new("MDB_val[1]"), v = ffi.new("MDB_val[1]"),
    }, DB)
end

function DB:get(key)
    local txn, k, v = self.rtxn, self.k, self.v
    local rc = L.mdb_txn_renew(txn)
    if rc ~= 0 then
        error(select(2, fail("mdb_txn_renew", rc)))
    end
    k[0].mv_size = #key
    k[0].mv_data = ffi_cast("void *", key)
    rc = L.mdb_get(txn, self.dbi, k, v)
    local s
    if rc == 0 then
        -- Copied out before the reset: the pointer is into the map and is
        -- valid only within the transaction.
        s = ffi_string(v[0].mv_data, v[0].mv_size)
    end
    L.mdb_txn_reset(txn)
    if rc ~= 0 and rc ~= MDB_NOTFOUND then
        error(select(2, fail("mdb_get", rc)))
    end
    return s
end

-- A write transaction of the pairs (keys[i], values[i]), committed.
local function write(self, keys, values, n)
    local rc = L.mdb_txn_begin(self.env, nil, 0, self.wtxn)
    if rc ~= 0 then
        return fail("mdb_txn_begin", rc)
    end
    local txn, k, v = self.wtxn[0], self.k, self.v
    for i = 1, n do
        local key, value = keys[i], values[i]
        k[0].mv_size = #key
        k[0].mv_data = ffi_cast("void *", key)
        v[0].mv_size = #value
        v[0].mv_data = ffi_cast("void *", value)
        rc = L.mdb_put(txn, self.dbi, k, v, 0)
        if rc ~= 0 then
            L.mdb_txn_abort(txn)
            return fail("mdb_put", rc)
        end
    end
    rc = L.mdb_txn_commit(txn)
    if rc ~= 0 then
        return fail("mdb_txn_commit", rc)
    end
    return true
end

local one_key, one_value = {}, {}

function DB:put(key, value)
    one_key[1], one_value[1] = key, value
    return write(self, one_key, one_value, 1)
end

function DB:put_many(keys, values)
    return write(self, keys, values, #keys)
end

function DB:close()
    if self.env ~= nil then
        L.mdb_txn_abort(self.rtxn)
        L.mdb_env_close(self.env)
        self.env = nil
    end
    return true
end

return M
