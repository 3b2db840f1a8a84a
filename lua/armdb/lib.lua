-- armdb.lib: find libarmdb, load it once, and check it speaks this
-- binding's ABI.
--
-- Where it looks, in order: the path in env ARMDB_LIB; `libarmdb` on
-- package.cpath (where `luarocks make` installs it); the build tree of a
-- source checkout (build/libarmdb.so beside lua/). A library of another
-- ABI version is refused with both versions named: a struct that moved
-- under the FFI would corrupt memory rather than fail.
local ffi = require("ffi")
local cdef = require("armdb.cdef")

local function source_root()
    local src = debug.getinfo(1, "S").source
    if src:sub(1, 1) ~= "@" then
        return nil
    end
    local dir = src:sub(2):match("^(.*)/lua/armdb/lib%.lua$")
    if dir == nil and src:match("^@lua/armdb/lib%.lua$") then
        dir = "."
    end
    return dir
end

local function candidates()
    local list = {}
    local env = os.getenv("ARMDB_LIB")
    if env and env ~= "" then
        list[#list + 1] = env
        return list -- asked for one library: no other is tried
    end
    local found = package.searchpath("libarmdb", package.cpath)
    if found then
        list[#list + 1] = found
    end
    local root = source_root()
    if root then
        list[#list + 1] = root .. "/build/libarmdb.so"
    end
    return list
end

local function load()
    local tried = {}
    for _, path in ipairs(candidates()) do
        local ok, lib = pcall(ffi.load, path)
        if ok then
            local have = lib.armdb_abi_version()
            if have ~= cdef.ABI_VERSION then
                error(string.format("armdb: %s has ABI version %d, this binding needs version %d;"
                    .. " rebuild or reinstall one of them", path, have, cdef.ABI_VERSION), 0)
            end
            return lib, path
        end
        tried[#tried + 1] = path .. " (" .. tostring(lib) .. ")"
    end
    error("armdb: cannot load libarmdb; tried "
        .. (#tried > 0 and table.concat(tried, "; ") or "nothing")
        .. ". Set ARMDB_LIB to the library's path, or build it with `make build`", 0)
end

local lib, path = load()
return { C = lib, path = path }
