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

return M
