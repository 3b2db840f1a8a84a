-- bench/feed.lua [KEYS] [VALUE_BYTES]: the change feed and checkpoints of
-- one raw store (16-byte keys, sync none), from Lua: how fast a feed from
-- GSN 0 is read (all changes; live keys only; again after a reopen, when
-- the files load from their hints), how long an online checkpoint of the
-- store takes, and how fast armdb_apply writes a feed into another store
-- (what an incremental backup or a replica does). One line per figure.
local armdb = require("armdb")
local ffi = require("ffi")

ffi.cdef("typedef struct { long sec, nsec; } armdb_bench_ts; int clock_gettime(int, armdb_bench_ts *);")
local ts = ffi.new("armdb_bench_ts")
local function now()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.sec) + tonumber(ts.nsec) / 1e9
end

local N = tonumber(arg[1]) or 1000000
local VB = tonumber(arg[2]) or 100
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p '" .. dir .. "'")
local function rate(label, n, t)
    print(string.format("%-34s %10.0f /s  (%d in %.2f s)", label, n / t, n, t))
end

local s = assert(armdb.store(dir .. "/s", { key_len = 16, create = true, sync = "none" }))
local v = string.rep("x", VB)
local t0 = now()
for i = 1, N do
    assert(s:put(string.format("%016d", i), v))
end
assert(s:sync())
rate("put", N, now() - t0)

local function drain(nxt)
    local n = 0
    for _ in nxt do
        n = n + 1
    end
    return n
end

t0 = now()
rate("feed from 0", drain(assert(s:changes(0))), now() - t0)
t0 = now()
rate("feed from 0, live keys", drain(assert(s:changes(0, { live = true }))), now() - t0)
assert(s:close())
s = assert(armdb.store(dir .. "/s", { sync = "none" }))
t0 = now()
rate("feed from 0 after a reopen (hints)", drain(assert(s:changes(0))), now() - t0)

t0 = now()
local cp = assert(s:checkpoint(dir .. "/copy"))
local more, done = true, 0
while more do
    more, done = cp:step()
end
cp:close()
local t = now() - t0
print(string.format("%-34s %10.2f s  (%d bytes, %.0f MB/s)", "checkpoint", t, done, done / t / 1e6))

local d = assert(armdb.store(dir .. "/applied", { key_len = 16, create = true, sync = "none" }))
t0 = now()
local n = 0
for k, val, gsn, deleted in assert(s:changes(0)) do
    assert(d:apply(k, val, gsn, deleted))
    n = n + 1
end
assert(d:sync())
rate("apply a feed into another store", n, now() - t0)
d:close()
s:close()
os.execute("rm -rf '" .. dir .. "'")
