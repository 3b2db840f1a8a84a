-- armdb: the public Lua API.
--
--   local armdb = require("armdb")
--   local s = assert(armdb.store(dir, { key_len = 16 }))   -- the raw C store
--   local db = assert(armdb.open(dir))                      -- named, typed collections
--
-- Failures return nil, message, code (the code is one of armdb.codes, or
-- a negative errno); a missing key is a plain nil; misuse raises.
local ffi = require("ffi")
local lib = require("armdb.lib")
local store = require("armdb.store")

local C = lib.C

local codes = {}
for _, name in ipairs({ "NOTFOUND", "BUFSMALL", "CORRUPT", "LOCKED", "BADKEY", "MISMATCH", "INVAL",
    "READONLY", "EXISTS", "KEYLEN", "TOOBIG", "CONFLICT", "FULL", "COMPACTED" }) do
    codes[name] = C["ARMDB_" .. name]
end

local M = {
    codes = codes,
    abi_version = require("armdb.cdef").ABI_VERSION,
    library = lib.path,
}

-- The raw store: string keys of exactly key_len bytes, string values.
M.store = store.open

-- Text for a code (an armdb code or a negative errno).
function M.strerror(code)
    return ffi.string(C.armdb_strerror(code))
end

-- A directory of named collections (loaded on first use, so that the raw
-- store works without lua-cjson).
function M.open(dir, opts)
    return require("armdb.db").open(dir, opts)
end

return M
