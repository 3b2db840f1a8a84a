rockspec_format = "3.0"
package = "armdb"
version = "scm-1"

source = {
    url = "git+file://.", -- built from a checkout with `luarocks make`
}

description = {
    summary = "A persistent, sharded Bitcask key-value store for LuaJIT and OpenResty",
    detailed = [[
armdb is an embedded key-value store: a C engine tuned for NVMe (io_uring,
O_DIRECT, a block cache, group commit) reached from LuaJIT through the FFI,
with typed collections, read replicas over TCP (armdb.replication), an
`armdb` command and an OpenResty example.
The json value codec needs lua-cjson (the Debian package lua-cjson).]],
    license = "MIT",
    labels = { "database", "key-value", "luajit", "openresty", "ffi" },
}

supported_platforms = { "linux" }

-- LuaJIT reports itself as Lua 5.1: `luarocks --lua-version 5.1 make`.
-- Building needs cmake, a C compiler, pkg-config, libxxhash-dev, libsodium-dev and
-- liburing-dev (Debian packages).
dependencies = {
    "lua >= 5.1",
}

build = {
    type = "cmake",
    variables = {
        CMAKE_BUILD_TYPE = "Release",
        CMAKE_INSTALL_PREFIX = "$(PREFIX)",
        ARMDB_TESTS = "OFF",
        ARMDB_LUADIR = "$(LUADIR)",
        ARMDB_LUA_LIBDIR = "$(LIBDIR)",
        ARMDB_BINDIR = "$(BINDIR)",
    },
}

test = {
    type = "busted",
}
