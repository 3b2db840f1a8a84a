-- luacheck: the Lua of armdb is LuaJIT, with no globals of its own.
std = "luajit"
max_line_length = 120
codes = true

files["spec"] = { std = "+busted" }
files["examples/openresty"] = { globals = { "ngx" } }
