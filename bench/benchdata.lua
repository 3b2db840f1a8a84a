-- bench/benchdata.lua: what the Lua benchmarks share. The data set, the
-- same as make_data() of bench/c_ops.c, so Lua and C time the same keys,
-- values and read order: 16-byte random keys and 100-byte values that are
-- windows into a 1 MiB random pool (they do not compress), from fixed
-- seeds. And the clock and the median of the runs.
local ffi = require("ffi")
local bit = require("bit")

pcall(ffi.cdef, [[
int armdb_benchdata_memcmp(const void *a, const void *b, size_t n) __asm__("memcmp");
typedef struct { int64_t sec, nsec; } armdb_benchdata_ts;
int armdb_benchdata_clock_gettime(int clk, armdb_benchdata_ts *ts) __asm__("clock_gettime");
]])

local bxor, rshift = bit.bxor, bit.rshift

local M = {
    SEED = 0x61726d6462ULL,
    ORDER_SEED = 0x6f72646572ULL,
    POOL_SIZE = 2 ^ 20,
    KEY_LEN = 16,
    VAL_LEN = 100,
}
local KEY_LEN, VAL_LEN, POOL_SIZE = M.KEY_LEN, M.VAL_LEN, M.POOL_SIZE

-- splitmix64; state is a uint64_t[1].
function M.splitmix64(state)
    local z = state[0] + 0x9e3779b97f4a7c15ULL
    state[0] = z
    z = bxor(z, rshift(z, 30)) * 0xbf58476d1ce4e5b9ULL
    z = bxor(z, rshift(z, 27)) * 0x94d049bb133111ebULL
    return bxor(z, rshift(z, 31))
end
local splitmix64 = M.splitmix64

-- keys[i] (i = 1..n) is key i - 1 of the C program. The values stay in one
-- buffer (vbuf, value i at vbuf + (i - 1) * VAL_LEN), as in C, and become
-- Lua strings only for the put loop (make_vals), so that a million value
-- strings are not alive, filling LuaJIT's string table, while gets run.
-- ok(i, v): v is value i.
function M.bytes(n)
    local s = ffi.new("uint64_t[1]", M.SEED)
    local kbuf = ffi.new("uint64_t[?]", n * 2)
    for i = 0, n * 2 - 1 do
        kbuf[i] = splitmix64(s)
    end
    local pool = ffi.new("uint64_t[?]", POOL_SIZE / 8)
    for i = 0, POOL_SIZE / 8 - 1 do
        pool[i] = splitmix64(s)
    end
    local kbytes = ffi.cast("const char *", kbuf)
    local pbytes = ffi.cast("const char *", pool)
    local vbuf = ffi.new("char[?]", n * VAL_LEN)
    local keys = {}
    for i = 0, n - 1 do
        keys[i + 1] = ffi.string(kbytes + i * KEY_LEN, KEY_LEN)
        local off = tonumber((i * 2654435761ULL) % (POOL_SIZE - VAL_LEN))
        ffi.copy(vbuf + i * VAL_LEN, pbytes + off, VAL_LEN)
    end
    local d = { n = n, keys = keys, vbuf = vbuf }
    function d.make_vals()
        local vals = {}
        for i = 0, n - 1 do
            vals[i + 1] = ffi.string(vbuf + i * VAL_LEN, VAL_LEN)
        end
        return vals
    end
    function d.ok(i, v)
        return type(v) == "string" and #v == VAL_LEN
            and ffi.C.armdb_benchdata_memcmp(v, vbuf + (i - 1) * VAL_LEN, VAL_LEN) == 0
    end
    return d
end

-- order[j] = the 1-based index of the j-th key read: a permutation of 1..n
-- from ORDER_SEED + offset (offset 0 is the order of bench/c_ops.c).
function M.order(n, offset)
    local o = ffi.new("uint32_t[?]", n)
    for i = 0, n - 1 do
        o[i] = i
    end
    local s = ffi.new("uint64_t[1]", M.ORDER_SEED + (offset or 0))
    for i = n - 1, 1, -1 do
        local j = tonumber(splitmix64(s) % (i + 1))
        o[i], o[j] = o[j], o[i]
    end
    local order = {}
    for i = 0, n - 1 do
        order[i + 1] = o[i] + 1
    end
    return order
end

local CLOCK_MONOTONIC = 1
local ts = ffi.new("armdb_benchdata_ts")

-- CLOCK_MONOTONIC in nanoseconds.
function M.now_ns()
    ffi.C.armdb_benchdata_clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.sec) * 1e9 + tonumber(ts.nsec)
end

-- The median of the numbers of t (t is left as it is).
function M.median(t)
    local c = { unpack(t) }
    table.sort(c)
    local n = #c
    if n % 2 == 1 then
        return c[(n + 1) / 2]
    end
    return (c[n / 2] + c[n / 2 + 1]) / 2
end

return M
