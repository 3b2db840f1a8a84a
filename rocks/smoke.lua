-- After `luarocks make --tree TREE`: run by a luajit whose paths name only
-- TREE (make rock sets them), armdb must load from the tree and round-trip
-- a value through a store that is closed and reopened.
local tree = assert(arg[1], "usage: luajit rocks/smoke.lua TREE")
local armdb = require("armdb")
local want = tree .. "/lib/lua/5.1/libarmdb.so"
assert(armdb.library == want, "loaded " .. armdb.library .. ", not " .. want)
local dir = os.tmpname()
os.remove(dir)
local s = assert(armdb.store(dir, { key_len = 4 }))
assert(s:put("rock", "round trip"))
assert(s:close())
s = assert(armdb.store(dir))
local v = s:get("rock")
s:close()
os.execute("rm -rf '" .. dir .. "'")
assert(v == "round trip", "read back " .. tostring(v))
-- The modules under armdb/ came with it: policies and jobs.
assert(type(require("armdb.policy").tasks) == "function")
assert(type(require("armdb.jobs").backup) == "function")
print("rock: armdb from " .. tree .. " loads and round-trips a value")
