-- A load client for spec/07-openresty_spec.lua, run as its own process:
--
--   luajit spec/load_client.lua kv PORT FIRST NKEYS SECONDS OUT SEED
--   luajit spec/load_client.lua count PORT NAME TIMES OUT
--
-- kv: PUT, GET and DELETE of /kv/lc-N for N in [FIRST, FIRST + NKEYS)
-- (keys no other client touches) over two keep-alive connections, each
-- reopened every 40 requests so that requests land on every worker. Each
-- key's state is modelled: the version acknowledged last (0: absent), and
-- after a request that got no answer (a worker killed under it) the two
-- states it may be in. After each acknowledged PUT the key is read at
-- once over the other connection, which must answer the new value, and
-- every GET must answer a state the model allows. A wrong answer, or a
-- 500 (armdb failed), ends the client with exit status 1 and a line
-- saying what. At the end OUT gets one line "N STATE" per key (STATE:
-- the version, 0 absent, or "a|b|..." where still undecided) and a last
-- line of counters; exit 0.
--
-- count: TIMES POSTs to /count/NAME over one connection; OUT gets the
-- number acknowledged.
local socket = require("socket")

local mode, port = arg[1], tonumber(arg[2])

local function die(fmt, ...)
    io.stderr:write("load_client: ", string.format(fmt, ...), "\n")
    os.exit(1)
end

-- ---- HTTP/1.1 over a keep-alive connection ----

local Conn = {}
Conn.__index = Conn

local function connect()
    local c = socket.tcp()
    c:settimeout(5)
    local ok, err = c:connect("127.0.0.1", port)
    if not ok then
        c:close()
        return nil, err
    end
    c:setoption("tcp-nodelay", true)
    return setmetatable({ sock = c, used = 0 }, Conn)
end

-- status, body, headers (lowercase names) or nil, why (no answer).
function Conn:request(method, path, body)
    self.used = self.used + 1
    local req = method .. " " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        .. "Content-Length: " .. #(body or "") .. "\r\n\r\n" .. (body or "")
    local ok, err = self.sock:send(req)
    if not ok then
        return nil, err
    end
    local line
    line, err = self.sock:receive("*l")
    if not line then
        return nil, err
    end
    local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
    if not status then
        return nil, "bad status line: " .. line
    end
    local headers = {}
    while true do
        line, err = self.sock:receive("*l")
        if not line then
            return nil, err
        end
        if line == "" then
            break
        end
        local name, value = line:match("^([^:]+):%s*(.*)$")
        if name then
            headers[name:lower()] = value
        end
    end
    local len = tonumber(headers["content-length"] or "")
    local data = ""
    if len and len > 0 then
        data, err = self.sock:receive(len)
        if not data then
            return nil, err
        end
    elseif not len and headers["transfer-encoding"] == "chunked" then
        local parts = {}
        while true do
            line, err = self.sock:receive("*l")
            if not line then
                return nil, err
            end
            local n = tonumber(line:match("^(%x+)"), 16)
            if not n then
                return nil, "bad chunk header"
            end
            if n == 0 then
                self.sock:receive("*l")
                break
            end
            parts[#parts + 1], err = self.sock:receive(n)
            if not parts[#parts] then
                return nil, err
            end
            self.sock:receive("*l")
        end
        data = table.concat(parts)
    end
    if headers["connection"] == "close" then
        self:close()
    end
    return status, data, headers
end

function Conn:close()
    if self.sock then
        self.sock:close()
        self.sock = nil
    end
end

-- A connection that is open and not yet used 40 times (else a new one).
local function fresh(c)
    if c and c.sock and c.used < 40 then
        return c
    end
    if c then
        c:close()
    end
    for _ = 1, 100 do
        local n = connect()
        if n then
            return n
        end
        socket.sleep(0.02)
    end
    die("cannot connect to 127.0.0.1:%d", port)
end

local function write_out(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
end

-- ---- count ----

if mode == "count" then
    local name, times, out = arg[3], tonumber(arg[4]), arg[5]
    local c, acked = nil, 0
    for _ = 1, times do
        c = fresh(c)
        local status, body = c:request("POST", "/count/" .. name)
        if status == 200 then
            acked = acked + 1
        elseif status then
            die("POST /count/%s: %d %s", name, status, body)
        else
            c:close()
        end
    end
    write_out(out, acked .. "\n")
    os.exit(0)
end

if mode ~= "kv" then
    die("unknown mode %s", tostring(mode))
end

-- ---- kv ----

local first, nkeys, seconds, out, seed = tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5]), arg[6], tonumber(arg[7])
math.randomseed(seed)

local function value_of(n, ver)
    -- Some bytes of every kind, and a length that varies with the version.
    return "lc-" .. n .. ":" .. ver .. ":" .. string.rep(string.char(ver % 256), ver % 700)
end

local model = {} -- n -> { acked = ver } or { maybe = { [ver] = true, ... } }
for n = first, first + nkeys - 1 do
    model[n] = { acked = 0 }
end

local function allows(m, ver)
    if m.maybe then
        return m.maybe[ver] == true
    end
    return ver == m.acked
end

local function show(m)
    if not m.maybe then
        return tostring(m.acked)
    end
    local t = {}
    for ver in pairs(m.maybe) do
        t[#t + 1] = ver
    end
    table.sort(t)
    return table.concat(t, "|")
end

-- A write to n that got no answer: it may or may not have happened.
local function unsure(n, ver)
    local m = model[n]
    local maybe = m.maybe or { [m.acked] = true }
    maybe[ver] = true
    model[n] = { maybe = maybe }
end

local stats = { ops = 0, acked = 0, lost = 0, cross = 0, workers = {}, unavailable = 0 }
local a, b
local version = 0

-- The state GET answers: a version, 0 (404), or nil (no answer).
local function read_state(c, n)
    local status, body, headers = c:request("GET", "/kv/lc-" .. n)
    if not status then
        c:close()
        return nil
    end
    if headers["x-worker"] then
        stats.workers[headers["x-worker"]] = true
    end
    if status == 404 then
        return 0, headers
    end
    if status ~= 200 then
        if status == 502 or status == 503 or status == 504 then
            stats.unavailable = stats.unavailable + 1
            return nil
        end
        die("GET /kv/lc-%d: %d %s", n, status, body)
    end
    local ver = tonumber(body:match("^lc%-%d+:(%d+):"))
    if not ver or body ~= value_of(n, ver) then
        die("GET /kv/lc-%d: a value that is no version of this key (%d bytes)", n, #body)
    end
    return ver, headers
end

local function check(n, ver)
    local m = model[n]
    if not allows(m, ver) then
        die("GET /kv/lc-%d answered version %d, the model allows %s", n, ver, show(m))
    end
    model[n] = { acked = ver }
end

local deadline = socket.gettime() + seconds
while socket.gettime() < deadline do
    a, b = fresh(a), fresh(b)
    local n = first + math.random(0, nkeys - 1)
    local dice = math.random(100)
    stats.ops = stats.ops + 1
    if dice <= 60 then
        version = version + 1
        local status, body, headers = a:request("PUT", "/kv/lc-" .. n, value_of(n, version))
        if status == 204 then
            stats.acked = stats.acked + 1
            model[n] = { acked = version }
            -- Acknowledged: the other connection reads it at once.
            local ver, h2 = read_state(b, n)
            if ver ~= nil then
                check(n, ver)
                if h2 and headers["x-worker"] and h2["x-worker"] ~= headers["x-worker"] then
                    stats.cross = stats.cross + 1
                end
            end
        elseif status == nil or status == 502 or status == 503 or status == 504 then
            if status == nil then
                a:close()
            end
            stats.lost = stats.lost + 1
            unsure(n, version)
        else
            die("PUT /kv/lc-%d: %d %s", n, status, body)
        end
    elseif dice <= 75 then
        local status, body = a:request("DELETE", "/kv/lc-" .. n)
        local m = model[n]
        if status == 204 or status == 404 then
            if status == 404 and not allows(m, 0) then
                die("DELETE /kv/lc-%d: 404, the model says %s", n, show(m))
            end
            stats.acked = stats.acked + 1
            model[n] = { acked = 0 }
        elseif status == nil or status == 502 or status == 503 or status == 504 then
            if status == nil then
                a:close()
            end
            stats.lost = stats.lost + 1
            unsure(n, 0)
        else
            die("DELETE /kv/lc-%d: %d %s", n, status, body)
        end
    else
        local ver = read_state(b, n)
        if ver ~= nil then
            check(n, ver)
        end
    end
end
a:close()
b:close()

local lines = {}
for n = first, first + nkeys - 1 do
    lines[#lines + 1] = n .. " " .. show(model[n])
end
local nworkers = 0
for _ in pairs(stats.workers) do
    nworkers = nworkers + 1
end
lines[#lines + 1] = string.format("stats ops=%d acked=%d lost=%d cross=%d workers=%d unavailable=%d", stats.ops,
    stats.acked, stats.lost, stats.cross, nworkers, stats.unavailable)
write_out(out, table.concat(lines, "\n") .. "\n")
