-- Helpers shared by the specs: temp directories, files, shell quoting, and
-- cleanups that run when the test ends.
local M = {}

-- busted keeps one finally() per test (a second call replaces the first),
-- so cleanups are queued here and all run when the test ends, last first;
-- the first error among them is raised after all have run.
-- busted's finally() lives in the environment of the spec file, so it is
-- taken from the caller's.
local cleanups = {}
local function defer_with(finally, fn)
    cleanups[#cleanups + 1] = fn
    finally(function()
        local first
        for i = #cleanups, 1, -1 do
            local f = cleanups[i]
            cleanups[i] = nil
            local ok, err = pcall(f)
            if not ok and first == nil then
                first = err
            end
        end
        if first then
            error(first, 0)
        end
    end)
end

function M.defer(fn)
    defer_with(getfenv(2).finally, fn)
end

-- The message of the error fn(...) raises, without its position.
function M.raised(fn, ...)
    local ok, err = pcall(fn, ...)
    if ok then
        error("expected an error", 2)
    end
    return (tostring(err):gsub("^[^:]*:%d+: ", ""))
end

-- A fresh database directory (removed when the test ends) and a db on it,
-- closed when the test ends; opts default to sync = "none".
function M.fresh_db(opts)
    local dir = M.tmpdir() .. "/db"
    local o = { sync = "none" }
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    local db = assert(require("armdb").open(dir, o))
    defer_with(getfenv(2).finally, function() db:close() end)
    return db, dir
end

-- A string quoted for sh.
function M.q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function M.rmtree(dir)
    os.execute("rm -rf " .. M.q(dir))
end

-- A fresh empty directory; inside a test, removed when the test ends.
function M.tmpdir()
    local p = assert(io.popen("mktemp -d"))
    local dir = p:read("*l")
    p:close()
    assert(dir and dir ~= "", "mktemp -d failed")
    local finally = getfenv(2).finally
    if finally then -- in a test, not in a spec's child process
        defer_with(finally, function() M.rmtree(dir) end)
    end
    return dir
end

function M.read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

function M.write_file(path, s)
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
end

function M.exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
    end
    return f ~= nil
end

-- The checkout's root directory, absolute, from this file's own path.
M.ROOT = (function()
    local dir = debug.getinfo(1, "S").source:sub(2):match("^(.*)/spec/[^/]*$") or "."
    local p = assert(io.popen("cd " .. M.q(dir) .. " && pwd -P"))
    local abs = p:read("*l")
    p:close()
    return abs
end)()

-- A raw store at dir (4-byte keys and 2 shards unless opts say) holding
-- the pairs of t, open.
function M.store_with(dir, t, opts)
    opts = opts or {}
    opts.key_len = opts.key_len or 4
    opts.shards = opts.shards or 2
    local s = assert(require("armdb").store(dir, opts))
    for k, v in pairs(t or {}) do
        assert(s:put(k, v))
    end
    return s
end

M.ARMDB = M.ROOT .. "/bin/armdb"
-- package.path for a child luajit that loads the checkout's modules.
M.LUA_PATH = M.ROOT .. "/lua/?.lua;" .. M.ROOT .. "/lua/?/init.lua;;"

-- Run a shell command: its exit status.
function M.sh(cmd)
    local p = io.popen(cmd .. "; echo $?")
    local text = p:read("*a")
    p:close()
    return tonumber(text:match("(%d+)%s*$"))
end

-- `armdb ARGS...` in tmp (stdin from the string `input`, if given; env:
-- variables to set for it, a table): its stdout, stderr and exit status.
function M.run_armdb(tmp, args, input, env)
    local parts = {}
    local names = {}
    for name in pairs(env or {}) do
        names[#names + 1] = name
    end
    table.sort(names)
    for _, name in ipairs(names) do
        parts[#parts + 1] = name .. "=" .. M.q(env[name])
    end
    parts[#parts + 1] = M.q(M.ARMDB)
    for _, a in ipairs(args) do
        parts[#parts + 1] = M.q(a)
    end
    local cmd = table.concat(parts, " ") .. " >" .. M.q(tmp .. "/.out") .. " 2>" .. M.q(tmp .. "/.err")
    if input then
        M.write_file(tmp .. "/.in", input)
        cmd = cmd .. " <" .. M.q(tmp .. "/.in")
    else
        cmd = cmd .. " </dev/null"
    end
    local code = M.sh(cmd)
    return M.read_file(tmp .. "/.out"), M.read_file(tmp .. "/.err"), code
end

-- Wait (up to 20 s) for file `marker`, which a child writes when it is
-- where it should be killed; then kill -9 the child (pid) and wait until
-- it is gone. Raises, with what it last said (from `log`), if the marker
-- never came.
function M.kill_at_marker(pid, marker, log)
    for _ = 1, 400 do
        if M.exists(marker) then
            break
        end
        M.sh("sleep 0.05")
    end
    if not M.exists(marker) then
        error("the child did not get to its marker" .. (log and (": " .. M.read_file(log)) or ""), 2)
    end
    assert(M.sh("kill -9 " .. pid) == 0)
    for _ = 1, 100 do
        if M.sh("kill -0 " .. pid .. " 2>/dev/null") ~= 0 then
            return
        end
        M.sh("sleep 0.05")
    end
end

return M
