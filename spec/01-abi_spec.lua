-- The FFI mirror (lua/armdb/cdef.lua) against the real header: a C program
-- generated from src/armdb.h prints every struct size, field offset and
-- enum value as the compiler sees them, and each must equal what the FFI
-- computes from the cdef. A field, constant or function added to the
-- header and not to the cdef fails here, as does a field whose type
-- changed size (every later offset, or the struct's size, moves).
local ffi = require("ffi")
local cdef = require("armdb.cdef")
local lib = require("armdb.lib")

local C = lib.C
local ROOT = debug.getinfo(1, "S").source:sub(2):match("^(.*)/spec/[^/]*$") or "."

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

-- What the header declares: enum constants, struct fields, functions.
local function parse_header(text)
    local h = { enums = {}, structs = {}, functions = {} }
    text = text:gsub("/%*.-%*/", "") -- comments out, so their words do not count
    for body in text:gmatch("enum%s+armdb_[%w_]+%s*(%b{})") do
        for name in body:gmatch("(ARMDB_[%w_]+)%s*=") do
            h.enums[#h.enums + 1] = name
        end
    end
    for body, name in text:gmatch("typedef%s+struct%s+armdb_[%w_]+%s*(%b{})%s*([%w_]+)%s*;") do
        local fields = {}
        for decl in body:sub(2, -2):gmatch("[^;]+") do
            local field = decl:match("([%w_]+)%s*$")
            if field then
                fields[#fields + 1] = field
            end
        end
        h.structs[#h.structs + 1] = { name = name, fields = fields }
    end
    for name in text:gmatch("[%w_%*]+%s+%**(armdb_[%w_]+)%s*%(") do
        h.functions[#h.functions + 1] = name
    end
    h.abi = tonumber(text:match("#define%s+ARMDB_ABI_VERSION%s+(%d+)"))
    return h
end

local function c_program(h)
    local out = { "#include <stdio.h>", "#include <stddef.h>", '#include "armdb.h"', "int main(void) {" }
    for _, s in ipairs(h.structs) do
        out[#out + 1] = string.format('printf("size %s %%zu\\n", sizeof(%s));', s.name, s.name)
        for _, f in ipairs(s.fields) do
            out[#out + 1] = string.format('printf("offset %s.%s %%zu\\n", offsetof(%s, %s));', s.name, f, s.name, f)
        end
    end
    for _, e in ipairs(h.enums) do
        out[#out + 1] = string.format('printf("enum %s %%lld\\n", (long long)%s);', e, e)
    end
    out[#out + 1] = 'printf("abi ARMDB_ABI_VERSION %d\\n", ARMDB_ABI_VERSION);'
    out[#out + 1] = "return 0; }"
    return table.concat(out, "\n") .. "\n"
end

describe("lua/armdb/cdef.lua", function()
    local header = parse_header(read(ROOT .. "/src/armdb.h"))
    local facts = {}

    setup(function()
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
        local src, exe = dir .. "/abi.c", dir .. "/abi"
        local f = assert(io.open(src, "wb"))
        f:write(c_program(header))
        f:close()
        local cc = os.getenv("CC") or "cc"
        local ok = os.execute(string.format("%s -std=c11 -I'%s/src' -o '%s' '%s'", cc, ROOT, exe, src))
        assert(ok == 0, "compiling the ABI probe failed")
        local p = assert(io.popen("'" .. exe .. "'"))
        for line in p:lines() do
            local kind, name, value = line:match("^(%S+) (%S+) (%-?%d+)$")
            facts[kind .. " " .. name] = tonumber(value)
        end
        p:close()
        os.execute("rm -rf '" .. dir .. "'")
    end)

    it("finds what it checks in the header", function()
        -- A parser that found nothing would make every check below vacuous.
        assert.is_true(#header.enums >= 30)
        assert.is_true(#header.structs >= 5)
        assert.is_true(#header.structs[2].fields >= 29)
        local named = {}
        for _, s in ipairs(header.structs) do
            named[s.name] = #s.fields
        end
        assert.are.equal(6, named.armdb_verify_damage)
        assert.are.equal(11, named.armdb_verify_report)
        assert.is_true(#header.functions >= 17)
        assert.is_not_nil(facts["abi ARMDB_ABI_VERSION"])
    end)

    it("has the header's ABI version", function()
        assert.are.equal(header.abi, cdef.ABI_VERSION)
        assert.are.equal(facts["abi ARMDB_ABI_VERSION"], cdef.ABI_VERSION)
        assert.are.equal(cdef.ABI_VERSION, C.armdb_abi_version())
    end)

    it("lays out every struct as the compiler does", function()
        for _, s in ipairs(header.structs) do
            assert.are.equal(facts["size " .. s.name], ffi.sizeof(s.name), s.name .. " size")
            for _, field in ipairs(s.fields) do
                local off = ffi.offsetof(s.name, field)
                assert.is_not_nil(off, s.name .. "." .. field .. " is missing from the cdef")
                assert.are.equal(facts["offset " .. s.name .. "." .. field], off, s.name .. "." .. field .. " offset")
            end
        end
    end)

    it("gives every enum constant the header's value", function()
        for _, name in ipairs(header.enums) do
            local ok, v = pcall(function() return C[name] end)
            assert.is_true(ok, name .. " is missing from the cdef")
            assert.are.equal(facts["enum " .. name], tonumber(v), name)
        end
    end)

    it("declares every function of the header", function()
        for _, name in ipairs(header.functions) do
            local ok = pcall(function() return C[name] end)
            assert.is_true(ok, name .. " is missing from the cdef or the library")
        end
    end)
end)

describe("armdb.lib", function()
    it("refuses a library of another ABI version, naming both", function()
        -- A stand-in library that answers another version.
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
        finally(function() os.execute("rm -rf '" .. dir .. "'") end)
        local f = assert(io.open(dir .. "/old.c", "wb"))
        f:write("int armdb_abi_version(void) { return 1; }\n")
        f:close()
        assert.are.equal(0, os.execute(string.format("cc -shared -fPIC -o '%s/libold.so' '%s/old.c'", dir, dir)))
        local cmd = string.format(
            "cd '%s' && ARMDB_LIB='%s/libold.so' luajit -e 'package.path=\"lua/?.lua;\"..package.path' "
            .. "-e 'require(\"armdb\")' 2>&1", ROOT, dir)
        local p = io.popen(cmd)
        local out = p:read("*a")
        p:close()
        local want = string.format("armdb: %s/libold.so has ABI version 1, this binding needs version %d",
            dir, cdef.ABI_VERSION)
        assert.matches(want, out, 1, true)
    end)

    it("says where it looked when there is no library", function()
        local cmd = string.format("cd '%s' && ARMDB_LIB=/nonexistent/libarmdb.so luajit -e "
            .. "'package.path=\"lua/?.lua;\"..package.path' -e 'require(\"armdb\")' 2>&1", ROOT)
        local p = io.popen(cmd)
        local out = p:read("*a")
        p:close()
        assert.matches("armdb: cannot load libarmdb; tried /nonexistent/libarmdb.so", out, 1, true)
        assert.matches("Set ARMDB_LIB", out, 1, true)
    end)
end)
