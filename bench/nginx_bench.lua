-- bench/nginx_bench.lua: what the drivers of bench/ngx and bench/http
-- share, to start nginx from a conf template on a prefix of its own and
-- stop it again: files and shell helpers, the clock, settings from the
-- environment, a free port, and nginx's start (render, launch, pid file)
-- and stop (QUIT, then TERM, then KILL). What each bench measures, and
-- how it reports it, stays in its driver. Found through arg[0], as the
-- drivers find bench/benchdata.lua.
local ffi = require("ffi")

ffi.cdef([[
int kill(int pid, int sig);
int poll(void *fds, unsigned long nfds, int timeout);
int getuid(void);
struct nginx_bench_sockaddr_in {
    uint16_t sin_family;
    uint16_t sin_port;
    uint32_t sin_addr;
    uint8_t sin_zero[8];
};
int socket(int domain, int type, int protocol);
int bind(int fd, const void *addr, uint32_t len);
int getsockname(int fd, void *addr, uint32_t *len);
int close(int fd);
uint16_t ntohs(uint16_t v);
uint32_t htonl(uint32_t v);
struct nginx_bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct nginx_bench_timespec *ts);
]])
local C = ffi.C

local M = {}

-- say(fmt, ...) to stderr, each line behind "TAG: ".
function M.sayer(tag)
    return function(fmt, ...)
        io.stderr:write(tag, ": ", string.format(fmt, ...), "\n")
    end
end

-- A failure of the run (not a bug): reported without a traceback.
function M.die(fmt, ...)
    error({ msg = string.format(fmt, ...) }, 0)
end
local die = M.die

function M.quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end
local quote = M.quote

function M.read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end
local read_file = M.read_file

function M.write_file(path, s)
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
end

function M.exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
        return true
    end
    return false
end

-- Output of a shell command and whether it exited 0 (popen's close() does
-- not say so in LuaJIT).
function M.sh(cmd)
    local p = assert(io.popen(cmd .. "; echo \"nginx_bench_rc=$?\""))
    local out = p:read("*a")
    p:close()
    local rc = tonumber(out:match("nginx_bench_rc=(%d+)%s*$"))
    return (out:gsub("nginx_bench_rc=%d+%s*$", "")), rc == 0
end
local sh = M.sh

function M.trim(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end
local trim = M.trim

function M.sleep_ms(ms)
    C.poll(nil, 0, ms)
end
local sleep_ms = M.sleep_ms

-- Seconds on CLOCK_MONOTONIC: for elapsed times.
local ts = ffi.new("struct nginx_bench_timespec")
function M.now()
    C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- The integer in environment variable `name`, lo..hi, or default if unset.
function M.env_int(name, default, lo, hi)
    local v = os.getenv(name)
    if v == nil or v == "" then
        return default
    end
    local n = tonumber(v)
    if not n or n ~= math.floor(n) or n < lo or n > hi then
        die("%s must be an integer %d..%d, got %q", name, lo, hi, v)
    end
    return n
end

-- The directory of the running script (physical, no links) and the
-- checkout above it, which must be ROOT/bench/SUB.
function M.paths(sub)
    local here = (arg[0] or ""):match("^(.*)/[^/]*$") or "."
    here = trim(sh("cd " .. quote(here) .. " && pwd -P"))
    local root = here:match("^(.*)/bench/" .. sub .. "$")
    if not root then
        die("cannot find the checkout: %s is not bench/%s", here, sub)
    end
    return here, root
end

-- The conf line `user OWNER GROUP;` of dir when running as root (nginx's
-- workers would run as nobody otherwise, and could not open the stores),
-- else `otherwise`.
function M.nginx_user(dir, otherwise)
    if C.getuid() ~= 0 then
        return otherwise
    end
    local owner = trim(sh("stat -c '%U %G' " .. quote(dir)))
    if not owner:match("^%S+ %S+$") then
        die("cannot tell the owner of %s", dir)
    end
    return "user " .. owner .. ";"
end

-- A port nobody listens on now: bind port 0 and ask which one we got.
-- Another process could take it before nginx does; then nginx fails to
-- start and says so.
function M.free_port()
    local AF_INET, SOCK_STREAM = 2, 1
    local fd = C.socket(AF_INET, SOCK_STREAM, 0)
    if fd < 0 then
        die("socket() failed")
    end
    local sa = ffi.new("struct nginx_bench_sockaddr_in")
    sa.sin_family = AF_INET
    sa.sin_addr = C.htonl(0x7f000001)
    local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
    if C.bind(fd, sa, ffi.sizeof(sa)) ~= 0 or C.getsockname(fd, sa, len) ~= 0 then
        C.close(fd)
        die("cannot find a free port on 127.0.0.1")
    end
    local port = C.ntohs(sa.sin_port)
    C.close(fd)
    return port
end

-- ---- nginx ----

-- Whether pid runs (a zombie does not).
function M.alive(pid)
    if pid == nil or C.kill(pid, 0) ~= 0 then
        return false
    end
    local stat = read_file("/proc/" .. pid .. "/stat")
    return stat == nil or stat:match("^%d+ %b() (%a)") ~= "Z"
end
local alive = M.alive

local function wait_exit(pid, ms)
    for _ = 1, ms / 50 do
        if not alive(pid) then
            return true
        end
        sleep_ms(50)
    end
    return not alive(pid)
end

-- The last 20 lines of PREFIX/logs/error.log.
function M.log_tail(prefix)
    local text = read_file(prefix .. "/logs/error.log") or ""
    local lines = {}
    for line in text:gmatch("[^\n]+") do
        lines[#lines + 1] = line
    end
    return table.concat(lines, "\n", math.max(1, #lines - 19))
end
local log_tail = M.log_tail

-- Render the template (its @NAME@ placeholders from `values`) into
-- PREFIX/conf/nginx.conf, start `nginx -p PREFIX/` and wait for its pid
-- file. `what` names the instance in errors. Returns the master's pid.
function M.start_nginx(nginx, prefix, template_path, values, what)
    for _, d in ipairs({ "conf", "logs", "temp", "data" }) do
        assert(os.execute("mkdir -p " .. quote(prefix .. "/" .. d)) == 0)
    end
    local template = read_file(template_path) or die("cannot read %s", template_path)
    local conf = template:gsub("@([A-Z_]+)@", function(name)
        return values[name] or die("nginx.conf: unknown placeholder @%s@", name)
    end)
    M.write_file(prefix .. "/conf/nginx.conf", conf)
    local out, ok = sh(quote(nginx) .. " -p " .. quote(prefix .. "/") .. " -c conf/nginx.conf -e logs/error.log 2>&1")
    if not ok then
        die("nginx%s did not start:\n%s\n%s", what, out, log_tail(prefix))
    end
    for _ = 1, 200 do
        local pid = tonumber(read_file(prefix .. "/logs/nginx.pid") or "")
        if pid then
            return pid
        end
        sleep_ms(50)
    end
    die("nginx%s wrote no pid file:\n%s", what, log_tail(prefix))
end

-- Stop nginx: QUIT (graceful: the workers close their stores); if it
-- still runs after 30 s, TERM (the master then kills a worker that does
-- not exit), and at last KILL to the master and its workers, by pid.
-- True if QUIT was enough. say reports the escalation; `what` names the
-- instance.
function M.stop_nginx(pid, say, what)
    if not alive(pid) then
        return true
    end
    C.kill(pid, 3)
    if wait_exit(pid, 30000) then
        return true
    end
    say("nginx %d%s did not stop within 30 s after QUIT; sending TERM", pid, what)
    C.kill(pid, 15)
    if wait_exit(pid, 10000) then
        return false
    end
    say("nginx %d%s did not stop after TERM; killing it and its workers", pid, what)
    for child in sh("pgrep -P " .. pid):gmatch("%d+") do
        C.kill(tonumber(child), 9)
    end
    C.kill(pid, 9)
    return false
end

-- The result line of nginx_wrk.lua (beside this file) in a run's output, decoded.
function M.wrk_result(out)
    local json = out:match("NGINX_BENCH_WRK (%b{})")
    return json and require("cjson").decode(json)
end

return M
