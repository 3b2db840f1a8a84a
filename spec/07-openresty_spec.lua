-- examples/openresty under a real nginx: the serve launcher, the rendered
-- nginx.conf and the kv.lua handlers, driven over HTTP on 127.0.0.1 with
-- one worker, then with three on one store (shared mode): load from
-- spec/load_client.lua processes checked against what was acknowledged,
-- through kill -9 of workers, a reload and a restart; exact counts and
-- a rate limit across workers. Skipped (pending, with the reason) where
-- nginx or its Lua module is missing. Every nginx started is stopped
-- (QUIT) in finally().
--
-- The HTTP client is curl where installed, else luasocket; set
-- ARMDB_SPEC_HTTP=socket to use luasocket even with curl present.
local ffi = require("ffi")
local cjson = require("cjson")

local helpers = require("helpers")
local sh_quote, write_file, ROOT = helpers.q, helpers.write_file, helpers.ROOT

local function capture(cmd)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
end

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

local function exists(path)
    return read_file(path) ~= nil
end

local SERVE = ROOT .. "/examples/openresty/serve"

-- ---- what the host has (the same lookups as serve) ----

local function find_nginx()
    local nginx = os.getenv("NGINX")
    if nginx and nginx ~= "" then
        return exists(nginx) and nginx or nil
    end
    nginx = capture("command -v nginx 2>/dev/null")
    if nginx ~= "" then
        return nginx
    end
    if exists("/usr/sbin/nginx") then
        return "/usr/sbin/nginx"
    end
    return nil
end

local function skip_reason()
    if not find_nginx() then
        return "nginx is not installed (Debian package nginx), or NGINX names no file"
    end
    local modules = os.getenv("NGINX_MODULES")
    if not modules or modules == "" then
        modules = "/usr/lib/nginx/modules"
    end
    if not exists(modules .. "/ngx_http_lua_module.so") then
        return "nginx's Lua module is not installed (Debian package libnginx-mod-http-lua)"
    end
    return nil
end

-- ---- sockets and processes through the FFI ----

-- Each declaration on its own, so that one another spec already made is
-- not an error here.
for _, decl in ipairs({
    "int kill(int pid, int sig);",
    "int poll(void *fds, unsigned long nfds, int timeout);",
    "int socket(int domain, int type, int protocol);",
    "int bind(int fd, const void *addr, uint32_t len);",
    "int getsockname(int fd, void *addr, uint32_t *len);",
    "int close(int fd);",
    "uint16_t htons(uint16_t v);",
    "uint16_t ntohs(uint16_t v);",
    "struct armdb_spec07_sockaddr_in { uint16_t family; uint16_t port; uint8_t addr[4]; uint8_t zero[8]; };",
}) do
    pcall(ffi.cdef, decl)
end
local C = ffi.C

local function sleep_ms(ms)
    C.poll(nil, 0, ms)
end

-- A port nobody listens on now: bind 127.0.0.1:0 and ask which port the
-- kernel gave (closed again before nginx binds it: see start()).
local function free_port()
    local fd = C.socket(2, 1, 0) -- AF_INET, SOCK_STREAM
    assert(fd >= 0, "socket() failed")
    local sa = ffi.new("struct armdb_spec07_sockaddr_in")
    sa.family = 2
    sa.addr[0] = 127
    sa.addr[3] = 1
    local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
    local ok = C.bind(fd, sa, ffi.sizeof(sa)) == 0 and C.getsockname(fd, sa, len) == 0
    C.close(fd)
    assert(ok, "cannot bind 127.0.0.1:0")
    return C.ntohs(sa.port)
end

-- A process that is gone or a zombie (a daemon's master is not our child:
-- whoever adopted it may reap it late).
local function running(pid)
    local stat = read_file("/proc/" .. pid .. "/stat")
    if stat == nil then
        return C.kill(pid, 0) == 0
    end
    return stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- ---- the HTTP client ----

local function use_curl()
    if os.getenv("ARMDB_SPEC_HTTP") == "socket" then
        return false
    end
    return capture("command -v curl 2>/dev/null") ~= ""
end

local have_socket, socket = pcall(require, "socket")
local CURL = use_curl()

local function parse_headers(text)
    local headers = {}
    for name, value in text:gmatch("([%w-]+):[ \t]*([^\r\n]*)") do
        headers[name:lower()] = value
    end
    return headers
end

-- method, "/path" (sent as is), body or nil -> status, body, headers
-- (names lowercased).
local function http(server, method, path, body)
    if CURL then
        local dir = server.dir
        local cmd = { "curl -s -S -g --path-as-is -H 'Expect:' -X", method, "-o", sh_quote(dir .. "/resp.body"), "-D",
            sh_quote(dir .. "/resp.headers"), "-w '%{http_code}'" }
        if body then
            write_file(dir .. "/req.body", body)
            cmd[#cmd + 1] = "--data-binary @" .. sh_quote(dir .. "/req.body")
        end
        cmd[#cmd + 1] = sh_quote("http://127.0.0.1:" .. server.port .. path)
        os.remove(dir .. "/resp.body")
        local status = tonumber(capture(table.concat(cmd, " ")))
        assert(status and status > 0, "curl got no answer for " .. method .. " " .. path)
        return status, read_file(dir .. "/resp.body") or "", parse_headers(read_file(dir .. "/resp.headers") or "")
    end
    local conn = assert(socket.tcp())
    conn:settimeout(10)
    assert(conn:connect("127.0.0.1", server.port))
    local req = { method .. " " .. path .. " HTTP/1.0", "Host: 127.0.0.1", "Connection: close" }
    if body then
        req[#req + 1] = "Content-Length: " .. #body
    end
    assert(conn:send(table.concat(req, "\r\n") .. "\r\n\r\n" .. (body or "")))
    local resp, err, partial = conn:receive("*a")
    conn:close()
    resp = resp or partial
    assert(resp and resp ~= "", "no answer for " .. method .. " " .. path .. ": " .. tostring(err))
    local head, rest = resp:match("^(.-\r\n)\r\n(.*)$")
    return tonumber(head:match("^HTTP/%d%.%d (%d%d%d)")), rest, parse_headers(head)
end

-- {status, body} of a request, to compare both at once.
local function req(server, method, path, body)
    local status, resp = http(server, method, path, body)
    return { status, resp }
end

-- ---- the server ----

-- [env] serve ADDR DATA_DIR [WORKERS] -> exit status, stdout, stderr.
local function run_serve(addr, data_dir, workers, env)
    local errfile = os.tmpname()
    local cmd = (env and env .. " " or "") .. sh_quote(SERVE) .. " " .. sh_quote(addr) .. " " .. sh_quote(data_dir)
        .. (workers and " " .. workers or "") .. " 2>" .. sh_quote(errfile) .. "; echo \"exit=$?\""
    local out = capture(cmd)
    local err = read_file(errfile) or ""
    os.remove(errfile)
    local status = tonumber(out:match("exit=(%d+)$"))
    return status, (out:gsub("\n?exit=%d+$", "")), err
end

local function stop(server)
    local pid = server.pid
    if not pid then
        return
    end
    server.pid = nil
    C.kill(pid, 3) -- SIGQUIT: graceful; the worker closes the database
    for _ = 1, 200 do
        if not running(pid) then
            return
        end
        sleep_ms(25)
    end
    C.kill(pid, 9)
    error("nginx " .. pid .. " did not stop within 5 s of QUIT")
end

-- Start serve on a free port (another try if someone took the port in
-- between); server.pid is the master's.
local function start(server)
    local status, out, err
    for _ = 1, 3 do
        server.port = server.port or free_port()
        status, out, err = run_serve("127.0.0.1:" .. server.port, server.data, server.workers or "1", server.env)
        if status == 0 or not err:find("Address already in use", 1, true) then
            break
        end
        server.port = nil
    end
    assert(status == 0, "serve failed (" .. tostring(status) .. "):\n" .. err)
    server.pid = tonumber(out)
    assert(server.pid and running(server.pid), "serve printed no live pid: " .. out)
    return server
end

local on_exit, tmpdir = helpers.defer, helpers.tmpdir

-- A server on a fresh DATA_DIR, stopped (QUIT) when the test ends, before
-- its directory is removed. env: assignments for serve's command line;
-- workers: nginx worker processes (default 1).
local function new_server(env, workers)
    local dir = tmpdir()
    local server = { dir = dir, data = dir .. "/data", env = env, workers = workers }
    on_exit(function()
        stop(server)
    end)
    return start(server)
end

local function error_log(server)
    return read_file(server.data .. "/nginx/logs/error.log") or ""
end

local function all_bytes()
    local t = {}
    for i = 0, 255 do
        t[#t + 1] = string.char(i)
    end
    return table.concat(t) .. "\0\r\n\r\n\0"
end

local function random_bytes(n)
    local t = {}
    for i = 1, n do
        t[i] = string.char(math.random(0, 255))
    end
    return table.concat(t)
end

local reason = skip_reason() or (not CURL and not have_socket and "neither curl nor luasocket is installed")

describe("examples/openresty", function()
    if reason then
        pending(reason)
        return
    end

    it("serves PUT, GET and DELETE of /kv/{key} and GET /stats", function()
        local s = new_server()

        local status, body = http(s, "GET", "/kv/alpha")
        assert.are.same({ 404, "not found\n" }, { status, body })

        status, body = http(s, "PUT", "/kv/alpha", "one")
        assert.are.same({ 204, "" }, { status, body })
        local headers
        status, body, headers = http(s, "GET", "/kv/alpha")
        assert.are.same({ 200, "one" }, { status, body })
        assert.are.equal("application/octet-stream", headers["content-type"])

        status = http(s, "PUT", "/kv/alpha", "two")
        assert.are.equal(204, status)
        status, body = http(s, "GET", "/kv/alpha")
        assert.are.same({ 200, "two" }, { status, body })

        -- Keys are percent-decoded, "+" is a plus, and one key has one
        -- value whichever way it was spelt.
        assert.are.equal(204, (http(s, "PUT", "/kv/a+b%2Fc%20d", "spaced")))
        assert.are.same({ 200, "spaced" }, req(s, "GET", "/kv/a%2Bb/c%20d"))
        assert.are.same({ 404, "not found\n" }, req(s, "GET", "/kv/a%20b%2Fc%20d"))

        status, body = http(s, "DELETE", "/kv/alpha")
        assert.are.same({ 204, "" }, { status, body })
        assert.are.same({ 404, "not found\n" }, req(s, "GET", "/kv/alpha"))
        assert.are.same({ 404, "not found\n" }, req(s, "DELETE", "/kv/alpha"))

        status, body, headers = http(s, "GET", "/stats")
        assert.are.equal(200, status)
        assert.are.equal("application/json", headers["content-type"])
        local stats = cjson.decode(body)
        assert.are.equal(1, stats.keys) -- "a+b/c d"; alpha is deleted
        assert.are.equal(64, stats.key_len) -- string(64)
        assert.are.equal(0, stats.value_len) -- raw: variable length
        assert.is_false(stats.read_only)
        assert.is_true(stats.puts >= 3)
        assert.is_true(stats.deletes >= 1)

        -- nginx's daemon() clears the umask; the worker restores serve's
        -- (this process's 022 or stricter), so nothing is world-writable.
        for _, path in ipairs({ s.data .. "/db", s.data .. "/db/CATALOG", s.data .. "/db/kv" }) do
            local mode = tonumber(capture("stat -c %a " .. sh_quote(path)), 8)
            assert(mode, "no " .. path)
            assert.are.equal(0, bit.band(mode, tonumber("002", 8)), path .. " is world-writable")
        end

        status, body, headers = http(s, "POST", "/kv/alpha", "x")
        assert.are.same({ 405, "method not allowed: use GET, PUT or DELETE\n" }, { status, body })
        assert.are.equal("GET, PUT, DELETE", headers["allow"])
        assert.are.same(
            { 404, "no such resource: use /kv/{key}, /session, /count/{name}, /limit/{client} or /stats\n" },
            req(s, "GET", "/elsewhere"))
    end)

    it("answers 400 for an empty or too long key and 413 for a too large value, with a line of text", function()
        local s = new_server()
        local k64 = string.rep("k", 64)

        assert.are.equal(204, (http(s, "PUT", "/kv/" .. k64, "at the limit")))
        assert.are.same({ 200, "at the limit" }, req(s, "GET", "/kv/" .. k64))
        assert.are.same({ 400, "key is 65 bytes, at most 64 are allowed\n" },
            req(s, "PUT", "/kv/" .. k64 .. "k", "v"))
        assert.are.same({ 400, "key is 65 bytes, at most 64 are allowed\n" }, req(s, "GET", "/kv/" .. k64 .. "k"))
        assert.are.same({ 400, "empty key: use /kv/{key}\n" }, req(s, "GET", "/kv/"))

        -- Over nginx's client_max_body_size (1m): refused before kv.lua runs.
        assert.are.same({ 413, "value too large: a request body may be at most 1m"
                .. " (client_max_body_size in nginx.conf)\n" },
            req(s, "PUT", "/kv/big", string.rep("x", 1024 * 1024 + 1)))
        -- Under it but over the store's limit (write_buffer_size - 8 KiB
        -- with the default 1 MiB buffer): armdb says so.
        local limit = 1024 * 1024 - 8192
        local status, body = http(s, "PUT", "/kv/big", string.rep("x", limit + 1))
        assert.are.equal(413, status)
        assert.matches("value of " .. (limit + 1) .. " bytes is over the maximum of " .. limit, body, 1, true)
        assert.are.same({ 404, "not found\n" }, req(s, "GET", "/kv/big"))
        assert.are.equal(204, (http(s, "PUT", "/kv/big", string.rep("y", limit))))
        status, body = http(s, "GET", "/kv/big")
        assert.are.equal(200, status)
        assert.are.equal(string.rep("y", limit), body)
    end)

    it("keeps binary, empty and large values across a stop (QUIT) and a start on the same DATA_DIR", function()
        local s = new_server()
        local binary = all_bytes()
        local large = random_bytes(100 * 1024) -- over client_body_buffer_size: a temp file

        assert.are.equal(204, (http(s, "PUT", "/kv/binary", binary)))
        assert.are.equal(204, (http(s, "PUT", "/kv/empty", "")))
        assert.are.equal(204, (http(s, "PUT", "/kv/large", large)))
        assert.are.equal(204, (http(s, "PUT", "/kv/gone", "soon deleted")))
        assert.are.equal(204, (http(s, "DELETE", "/kv/gone")))
        assert.matches("a client request body is buffered to a temporary file", error_log(s), 1, true)
        assert.are.same({ 200, binary }, req(s, "GET", "/kv/binary"))
        assert.are.same({ 200, "" }, req(s, "GET", "/kv/empty"))
        assert.are.same({ 200, large }, req(s, "GET", "/kv/large"))

        local old_pid = s.pid
        stop(s)
        assert.is_false(running(old_pid))
        assert.is_nil(read_file(s.data .. "/nginx/logs/nginx.pid")) -- the master removed it on exit

        start(s)
        assert.are_not.equal(old_pid, s.pid)
        assert.are.same({ 200, binary }, req(s, "GET", "/kv/binary"))
        assert.are.same({ 200, "" }, req(s, "GET", "/kv/empty"))
        assert.are.same({ 200, large }, req(s, "GET", "/kv/large"))
        assert.are.same({ 404, "not found\n" }, req(s, "GET", "/kv/gone"))
        assert.are.equal(3, cjson.decode((select(2, http(s, "GET", "/stats")))).keys)
    end)

    it("answers 500 with armdb's message, and logs it, when a stored value is damaged", function()
        local s = new_server()
        local marker = "DAMAGE-ME-" .. random_bytes(8):gsub("%W", "x")
        assert.are.equal(204, (http(s, "PUT", "/kv/bad", marker)))
        assert.are.equal(204, (http(s, "PUT", "/kv/good", "intact")))
        stop(s)

        -- Flip one bit of the value in whichever data file holds it.
        local damaged = 0
        local files = capture("find " .. sh_quote(s.data .. "/db") .. " -name '*.data'")
        for path in files:gmatch("[^\n]+") do
            local data = read_file(path)
            local at = data:find(marker, 1, true)
            if at then
                write_file(path, data:sub(1, at - 1) .. string.char(bit.bxor(data:byte(at), 1)) .. data:sub(at + 1))
                damaged = damaged + 1
            end
        end
        assert.are.equal(1, damaged)

        start(s)
        local status, body = http(s, "GET", "/kv/bad")
        assert.are.equal(500, status)
        assert.matches("^armdb: get bad: ", body)
        assert.matches("stored data is damaged (code " .. require("armdb").codes.CORRUPT .. ")\n", body, 1, true)
        assert.matches("[error]", error_log(s), 1, true)
        assert.matches((body:gsub("\n$", "")), error_log(s), 1, true)
        assert.are.same({ 200, "intact" }, req(s, "GET", "/kv/good"))
    end)

    it("hands the store to the new worker on a reload (HUP)", function()
        local s = new_server()
        assert.are.equal(204, (http(s, "PUT", "/kv/k", "before reload")))
        local function workers()
            return (capture("ps -o pid= --ppid " .. s.pid):gsub("^%s+", ""):gsub("%s+", " "))
        end
        local old = workers()
        assert.matches("^%d+$", old)
        C.kill(s.pid, 1) -- SIGHUP
        -- Done when the old worker is gone and the new one (the only
        -- worker, so the one answering) has the store open: until the old
        -- one exits, the new one answers 503.
        local status, body, now
        for _ = 1, 200 do
            now = workers()
            if now:match("^%d+$") and now ~= old then
                status, body = http(s, "GET", "/kv/k")
                if status == 200 then
                    break
                end
            end
            sleep_ms(25)
        end
        assert.matches("^%d+$", now)
        assert.are_not.equal(old, now)
        assert.are.same({ 200, "before reload" }, { status, body })
        assert.are.equal(204, (http(s, "PUT", "/kv/k", "after reload")))
        assert.are.same({ 200, "after reload" }, req(s, "GET", "/kv/k"))
    end)

    it("keeps a session for its ttl, then answers 404, and worker 0's sweep purges it", function()
        -- Two workers: the sweep runs in worker 0, and either one reports it.
        local s = new_server("SESSION_SWEEP_EVERY=0.2", "2")
        local UUID4 = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

        local status, body, headers = http(s, "POST", "/session?ttl=1", '{"user":42,"role":"admin"}')
        assert.are.equal(201, status)
        assert.are.equal("application/json", headers["content-type"])
        local short = cjson.decode(body)
        assert.matches(UUID4, short.id)
        assert.are.equal(1, short.ttl)
        assert.are.equal("/session/" .. short.id, headers["location"])

        status, body = http(s, "POST", "/session", '{"user":7}')
        assert.are.equal(201, status)
        local long = cjson.decode(body)
        assert.are.equal(1800, long.ttl)
        assert.are_not.equal(short.id, long.id)

        -- Before it expires: there, with its data.
        status, body = http(s, "GET", "/session/" .. short.id)
        assert.are.equal(200, status)
        local got = cjson.decode(body)
        assert.are.same({ user = 42, role = "admin" }, got.data)
        assert.are.equal(short.id, got.id)
        assert.are.equal(short.expires, got.expires)
        assert.are.equal(1, got.expires - got.created)
        status, body = http(s, "GET", "/session")
        assert.are.equal(200, status)
        assert.are.equal(2, cjson.decode(body).stored)

        -- After: absent to reads at once, whether or not the sweep has run.
        sleep_ms(1250)
        assert.are.same({ 404, "no such session (expired, deleted or never made)\n" },
            req(s, "GET", "/session/" .. short.id))
        status, body = http(s, "GET", "/session/" .. long.id)
        assert.are.equal(200, status)
        assert.are.same({ user = 7 }, cjson.decode(body).data)

        -- The sweep (every 0.2 s, ticked from the worker's timer) purges
        -- it from the store: only the long one stays stored.
        local summary
        for _ = 1, 120 do
            summary = cjson.decode((select(2, http(s, "GET", "/session"))))
            if summary.stored == 1 then
                break
            end
            sleep_ms(25)
        end
        assert.are.equal(1, summary.stored)
        assert.are.equal(0.2, summary.sweep.every)
        assert.is_true(summary.sweep.rounds >= 2)
        assert.is_nil(summary.sweep.last_error)
        assert.are.same({ 404, "no such session (expired, deleted or never made)\n" },
            req(s, "DELETE", "/session/" .. short.id))

        assert.are.same({ 204, "" }, req(s, "DELETE", "/session/" .. long.id))
        assert.are.same({ 404, "no such session (expired, deleted or never made)\n" },
            req(s, "GET", "/session/" .. long.id))
        assert.are.equal(0, cjson.decode((select(2, http(s, "GET", "/session")))).stored)

        -- Bad requests, with a line saying what was wrong.
        assert.are.same({ 400, "ttl must be a whole number of seconds from 1 to 2592000\n" },
            req(s, "POST", "/session?ttl=0", "{}"))
        status, body = http(s, "POST", "/session", "[1")
        assert.are.equal(400, status)
        assert.matches("^the body must be a JSON object", body)
        assert.are.same({ 404, "no such resource: use /session or /session/{id} (a uuid)\n" },
            req(s, "GET", "/session/not-a-uuid"))
        status, body, headers = http(s, "PUT", "/session", "{}")
        assert.are.same({ 405, "method not allowed: use POST or GET\n" }, { status, body })
        assert.are.equal("POST, GET", headers["allow"])
        -- /kv is the same as before, in the same database.
        assert.are.equal(204, (http(s, "PUT", "/kv/k", "v")))
        assert.are.same({ 200, "v" }, req(s, "GET", "/kv/k"))
        assert.are.equal(1, cjson.decode((select(2, http(s, "GET", "/stats")))).keys)
    end)

    it("refuses a WORKERS that is not 1 to 64 or auto, and says so in the usage text too", function()
        local dir = tmpdir()
        for _, bad in ipairs({ "0", "65", "two" }) do
            local status, out, err = run_serve("127.0.0.1:" .. free_port(), dir .. "/data", bad)
            assert.are.equal(1, status)
            assert.are.equal("", out)
            assert.matches("serve: WORKERS is " .. bad .. ": expected a number from 1 to 64, or auto", err, 1, true)
        end
        assert.is_nil(read_file(dir .. "/data/nginx/conf/nginx.conf"))
        local _, _, usage = run_serve("-h", dir)
        assert.matches("usage: serve ADDR DATA_DIR [WORKERS]", usage, 1, true)
        assert.matches("Every worker opens the database in shared mode", usage, 1, true)
    end)

    it("answers 503 with the reason when libarmdb cannot be loaded, and serve exits 1 saying so", function()
        local dir = tmpdir()
        local status, out, err = run_serve("127.0.0.1:" .. free_port(), dir .. "/data", "1",
            "ARMDB_LIB=/nonexistent/libarmdb.so SERVE_TIMEOUT=1")
        assert.are.equal(1, status)
        assert.are.equal("", out)
        assert.matches("GET /stats answered 503: armdb: database not open: armdb: cannot load libarmdb;"
            .. " tried /nonexistent/libarmdb.so", err, 1, true)
        assert.matches("nginx stopped", err, 1, true)
        assert.matches("[error]", read_file(dir .. "/data/nginx/logs/error.log"), 1, true)
        assert.is_nil(read_file(dir .. "/data/nginx/logs/nginx.pid")) -- it was stopped
    end)

    it("exits 1 with the error log's tail when the address is taken", function()
        local s = new_server()
        local dir = tmpdir()
        local status, out, err = run_serve("127.0.0.1:" .. s.port, dir .. "/data", "1")
        assert.are.equal(1, status)
        assert.are.equal("", out)
        assert.matches("did not start", err, 1, true)
        assert.matches("Address already in use", err, 1, true)
        assert.is_nil(read_file(dir .. "/data/nginx/logs/nginx.pid"))
        -- The first server is untouched.
        assert.are.same({ 404, "not found\n" }, req(s, "GET", "/kv/none"))
    end)
end)

-- ---- several workers on one store (shared mode) ----

local LOAD_CLIENT = ROOT .. "/spec/load_client.lua"

-- The worker pids of the master, sorted, as one string.
local function workers_of(server)
    local t = {}
    for pid in capture("ps -o pid= --ppid " .. server.pid):gmatch("%d+") do
        t[#t + 1] = tonumber(pid)
    end
    table.sort(t)
    return t
end

-- Wait until the master has n workers, none of them in `old` (a list of
-- pids; nil: any), each answering: their pids.
local function await_workers(server, n, old)
    local banned = {}
    for _, pid in ipairs(old or {}) do
        banned[pid] = true
    end
    local now
    for _ = 1, 400 do
        now = workers_of(server)
        local fresh = #now == n
        for _, pid in ipairs(now) do
            fresh = fresh and not banned[pid]
        end
        if fresh and (http(server, "GET", "/stats")) == 200 then
            return now
        end
        sleep_ms(25)
    end
    error("the master did not get to " .. n .. " new workers: " .. table.concat(now, " "))
end

-- Start the load client (spec/load_client.lua) in the background; its
-- exit status goes to out .. ".rc".
local function spawn_client(args, out)
    os.execute("(luajit " .. sh_quote(LOAD_CLIENT) .. " " .. args .. " 2>" .. sh_quote(out .. ".err")
        .. "; echo $? > " .. sh_quote(out .. ".rc") .. ") &")
end

local function await_client(out, seconds)
    for _ = 1, seconds * 20 do
        local rc = read_file(out .. ".rc")
        if rc and rc:match("%d") then
            return tonumber(rc), read_file(out .. ".err") or ""
        end
        sleep_ms(50)
    end
    error("load client " .. out .. " did not finish within " .. seconds .. " s")
end

-- The keys' states a kv client ended with: n -> version (0: absent) or
-- a set of versions (undecided), and its counters.
local function read_model(out)
    local model, stats = {}, nil
    for line in (read_file(out) or ""):gmatch("[^\n]+") do
        local n, st = line:match("^(%d+) (%S+)$")
        if n then
            local set = {}
            for v in st:gmatch("%d+") do
                set[tonumber(v)] = true
            end
            model[tonumber(n)] = set
        elseif line:match("^stats ") then
            stats = {}
            for k, v in line:gmatch("(%w+)=(%d+)") do
                stats[k] = tonumber(v)
            end
        end
    end
    return model, stats
end

-- Every key of the models reads as a state its model allows.
local function check_models(server, models, when)
    local checked = 0
    for _, model in ipairs(models) do
        for n, allowed in pairs(model) do
            local status, body = http(server, "GET", "/kv/lc-" .. n)
            local ver = status == 404 and 0 or tonumber((body or ""):match("^lc%-%d+:(%d+):"))
            assert(status == 200 or status == 404, when .. ": GET /kv/lc-" .. n .. " answered " .. tostring(status))
            if not allowed[ver] then
                error(string.format("%s: key lc-%d holds version %s, acknowledged was %s", when, n, tostring(ver),
                    table.concat((function()
                        local t = {}
                        for v in pairs(allowed) do
                            t[#t + 1] = tostring(v)
                        end
                        return t
                    end)(), "|")))
            end
            checked = checked + 1
        end
    end
    return checked
end

describe("examples/openresty with several workers (shared mode)", function()
    if reason then
        pending(reason)
        return
    end
    if not have_socket then
        pending("the load client needs luasocket (Debian package lua-socket)")
        return
    end

    it("serves one store from every worker under load, through kill -9 of workers, a reload and a restart",
        function()
        local s = new_server(nil, "3")
        await_workers(s, 3)
        local dir = tmpdir()
        local outs = {}
        for c = 1, 3 do
            outs[c] = dir .. "/client" .. c
            -- 4 s of PUT/GET/DELETE over its own 60 keys, checked as it goes.
            spawn_client(string.format("kv %d %d 60 4 %s %d", s.port, c * 1000, outs[c], c), outs[c])
        end
        -- Two workers killed under the load; the master starts others.
        local killed = {}
        for k = 1, 2 do
            sleep_ms(1200)
            local now = workers_of(s)
            local victim = now[k % #now + 1]
            killed[#killed + 1] = victim
            assert.are.equal(0, C.kill(victim, 9))
        end
        local models = {}
        local cross, acked, lost = 0, 0, 0
        for c = 1, 3 do
            local rc, err = await_client(outs[c], 30)
            assert.are.equal(0, rc, "load client " .. c .. " failed: " .. err)
            local model, stats = read_model(outs[c])
            assert.is_table(stats)
            models[c] = model
            cross, acked, lost = cross + stats.cross, acked + stats.acked, lost + stats.lost
        end
        -- Reads through other workers than the write's happened, and the
        -- load was real.
        assert.is_true(cross > 100, "cross-worker reads: " .. cross)
        assert.is_true(acked > 1000, "acknowledged writes: " .. acked)
        local log = error_log(s)
        for _, victim in ipairs(killed) do
            assert.matches("worker process " .. victim .. " exited on signal 9", log, 1, true)
        end
        local pids = await_workers(s, 3, killed)
        assert.are.equal(180, check_models(s, models, "after the kills"))

        -- A reload: new workers, the old ones close their handles.
        C.kill(s.pid, 1) -- SIGHUP
        await_workers(s, 3, pids)
        check_models(s, models, "after a reload")
        assert(not log:find("[crit]", 1, true), log)

        -- A full restart: the last worker out sealed the store, the next
        -- master's first worker recovers it.
        stop(s)
        start(s)
        await_workers(s, 3)
        check_models(s, models, "after a restart")
        local stats = cjson.decode((select(2, http(s, "GET", "/stats"))))
        assert.is_true(stats.shared)
        assert.are.equal(0, stats.corrupt_entries)
        assert(not error_log(s):find("%[error%]"), error_log(s))
    end)

    it("counts exactly and rate-limits across workers with compare-and-set", function()
        local s = new_server("RATE_LIMIT=7 RATE_WINDOW=3600", "3")
        await_workers(s, 3)
        local dir = tmpdir()
        local outs = {}
        for c = 1, 4 do
            outs[c] = dir .. "/count" .. c
            spawn_client(string.format("count %d hits 250 %s", s.port, outs[c]), outs[c])
        end
        local total = 0
        for c = 1, 4 do
            local rc, err = await_client(outs[c], 60)
            assert.are.equal(0, rc, "count client " .. c .. " failed: " .. err)
            total = total + tonumber(read_file(outs[c]))
        end
        assert.are.equal(1000, total)
        local status, body = http(s, "GET", "/count/hits")
        assert.are.equal(200, status)
        assert.are.same({ name = "hits", value = 1000 }, cjson.decode(body))

        -- 7 per window, whichever worker answers; then 429 with Retry-After.
        local allowed, refused = 0, 0
        for _ = 1, 10 do
            local headers
            status, body, headers = http(s, "GET", "/limit/client-a")
            if status == 200 then
                allowed = allowed + 1
                assert.are.equal(7 - allowed, cjson.decode(body).remaining)
            else
                assert.are.equal(429, status)
                assert.is_false(cjson.decode(body).allowed)
                assert.is_true(tonumber(headers["retry-after"]) > 0)
                refused = refused + 1
            end
        end
        assert.are.same({ 7, 3 }, { allowed, refused })
        assert.are.equal(200, (http(s, "GET", "/limit/client-b"))) -- its own window
        assert.are.same({ 400, "the name must be 1 to 64 bytes, got 0\n" }, req(s, "POST", "/count/"))
        assert.are.same({ 400, "by must be a whole number\n" }, req(s, "POST", "/count/x?by=1.5"))
        status, body = http(s, "POST", "/count/x?by=-3")
        assert.are.same({ 200, { name = "x", value = -3 } }, { status, cjson.decode(body) })
    end)
end)
