-- driver.lua: the body of bench/ngx/run (which makes the temporary
-- directory, removes it and stops any nginx left behind, also on ^C).
--
--   luajit bench/ngx/driver.lua TMPDIR [N]
--
-- Starts nginx twice under TMPDIR (`nginx -p TMPDIR/point` then
-- `TMPDIR/http`, one worker, a free port on 127.0.0.1): first in mode
-- "point", whose worker times the point operations in a timer and writes
-- them to a file; then in mode "http", which loads the key set and serves
-- GET and PUT for wrk. Prints one JSON document on stdout; progress on
-- stderr. See README.md beside this file for what is measured and how.
-- Starting and stopping nginx, and wrk's script, are shared with
-- bench/http: bench/nginx_bench.lua and bench/nginx_wrk.lua.
local cjson = require("cjson")

-- bench/benchdata.lua and bench/nginx_bench.lua, above this directory.
package.path = ((arg[0] or ""):match("^(.*)/[^/]*$") or ".") .. "/../?.lua;" .. package.path
local benchdata = require("benchdata")
local nb = require("nginx_bench")

local KEY_LEN, VAL_LEN = 16, 100

local say = nb.sayer("bench/ngx")
local die, quote, read_file, exists, sh, trim = nb.die, nb.quote, nb.read_file, nb.exists, nb.sh, nb.trim
local sleep_ms, now, env_int, alive, log_tail = nb.sleep_ms, nb.now, nb.env_int, nb.alive, nb.log_tail

-- ---- settings ----

local function settings(tmp, n_arg)
    local s = { tmp = tmp }
    local n = n_arg and tonumber(n_arg) or env_int("BENCH_KEYS", 1000000, 1, 50000000)
    if not n or n ~= math.floor(n) or n < 1 or n > 50000000 then
        die("N must be an integer 1..50000000, got %s", tostring(n_arg))
    end
    s.n = n
    s.reps = env_int("BENCH_REPS", 3, 1, 15)
    s.http_keys = env_int("BENCH_NGX_HTTP_KEYS", math.min(n, 1000000), 1, 50000000)
    s.duration = env_int("BENCH_NGX_DURATION", 10, 1, 3600)
    s.warmup = env_int("BENCH_NGX_WARMUP", 2, 0, 600)
    s.threads = env_int("BENCH_NGX_THREADS", 2, 1, 64)
    s.connections = env_int("BENCH_NGX_CONNECTIONS", 32, 1, 1000)
    if s.connections < s.threads then
        die("BENCH_NGX_CONNECTIONS (%d) must be at least BENCH_NGX_THREADS (%d)", s.connections, s.threads)
    end
    s.sync = os.getenv("BENCH_NGX_SYNC") or "none"
    if s.sync ~= "none" and s.sync ~= "interval" and s.sync ~= "always" then
        die("BENCH_NGX_SYNC must be none, interval or always, got %q", s.sync)
    end
    s.jit_log = os.getenv("BENCH_NGX_JITLOG") -- a file name prefix for LuaJIT's jit.v log
    if s.jit_log == "" then
        s.jit_log = nil
    end
    s.skip = os.getenv("BENCH_NGX_ONLY") -- "point" or "http": run one part only
    if s.skip and s.skip ~= "" and s.skip ~= "point" and s.skip ~= "http" then
        die("BENCH_NGX_ONLY must be point or http, got %q", s.skip)
    end
    return s
end

-- ---- tools ----

local function find_tools(s)
    local here, root = nb.paths("ngx")
    s.here, s.root = here, root
    for _, p in ipairs({ here, root, s.tmp }) do
        if p:find('["\\$;{}%c\']') then
            die("path %q has a character that cannot go into nginx.conf", p)
        end
    end

    local nginx = os.getenv("NGINX")
    if not nginx or nginx == "" then
        nginx = trim(sh("command -v nginx 2>/dev/null"))
        if nginx == "" and exists("/usr/sbin/nginx") then
            nginx = "/usr/sbin/nginx"
        end
    end
    if nginx == "" then
        die("nginx not found (install the Debian package nginx, or set NGINX)")
    end
    s.nginx = nginx
    s.nginx_version = trim(sh(quote(nginx) .. " -v 2>&1")):match("nginx/(%S+)")

    local modules = os.getenv("NGINX_MODULES")
    if not modules or modules == "" then
        modules = "/usr/lib/nginx/modules"
    end
    local lua_module = modules .. "/ngx_http_lua_module.so"
    if not exists(lua_module) then
        die("%s not found: install libnginx-mod-http-lua (or set NGINX_MODULES)", lua_module)
    end
    local lines = {}
    if exists(modules .. "/ndk_http_module.so") then
        lines[#lines + 1] = "load_module " .. modules .. "/ndk_http_module.so;"
    end
    lines[#lines + 1] = "load_module " .. lua_module .. ";"
    s.load_modules = table.concat(lines, "\n")

    local lib = os.getenv("ARMDB_LIB")
    if not lib or lib == "" then
        lib = root .. "/build/libarmdb.so"
        if not exists(lib) then
            die("%s is missing: run `make build` (or set ARMDB_LIB)", lib)
        end
    end
    if lib:find('["\\$;{}%c]') then
        die("ARMDB_LIB %q has a character that cannot go into nginx.conf", lib)
    end
    s.armdb_lib = lib

    local wrk = os.getenv("WRK")
    if not wrk or wrk == "" then
        wrk = trim(sh("command -v wrk 2>/dev/null"))
    end
    if wrk == "" then
        die("wrk not found (install the Debian package wrk, or set WRK)")
    end
    s.wrk = wrk
    s.wrk_version = trim(sh(quote(wrk) .. " -v 2>&1")):match("^wrk (%S+)")

    s.user = nb.nginx_user(s.tmp, "# user: not root, so workers keep the user that started nginx")
end

-- ---- nginx ----

local function lua_literal(t)
    local parts = {}
    for k, v in pairs(t) do
        local val = type(v) == "string" and string.format("%q", v) or tostring(v)
        parts[#parts + 1] = k .. " = " .. val
    end
    table.sort(parts)
    return "{ " .. table.concat(parts, ", ") .. " }"
end

local MiB = 2 ^ 20

-- The dict's size: every key's node (the shdict node, key and value, 196
-- bytes, rounded up by nginx's slab allocator to 256) and a quarter more,
-- plus 16 MiB for the slab's own pages; checked at run time (no eviction).
local function shdict_mib(keys)
    return math.ceil((keys * 320 + 16 * MiB) / MiB)
end

-- armdb's block cache: as bench/core.c and bench/lua_ops.lua, every value
-- read stays cached.
local function cache_size(keys)
    return math.max(64 * MiB, keys * 256)
end

local running = {} -- prefix -> pid, stopped at the end

-- Stop nginx (nginx_bench.stop_nginx). A worker busy in the point timer
-- handles no signal until the timer returns, so the file "stop" first
-- tells the timer to give up between two timed phases.
local function stop(prefix)
    local pid = running[prefix]
    if not pid then
        return
    end
    running[prefix] = nil
    local f = io.open(prefix .. "/stop", "wb")
    if f then
        f:close()
    end
    nb.stop_nginx(pid, say, "")
end

local function stop_all()
    for prefix in pairs(running) do
        stop(prefix)
    end
end

-- Render the template for `mode` and start nginx on a prefix of its own.
local function start(s, mode, keys)
    local prefix = s.tmp .. "/" .. mode
    local port = nb.free_port()
    local cfg = {
        mode = mode,
        n = s.n,
        reps = s.reps,
        http_keys = s.http_keys,
        sync = s.sync,
        cache_size = cache_size(keys),
        dir = prefix .. "/data",
        out = prefix .. "/result.json",
        stop = prefix .. "/stop",
        log = prefix .. "/progress.log",
        jit_log = s.jit_log and (s.jit_log .. "." .. mode) or nil,
    }
    local values = {
        LOAD_MODULES = s.load_modules,
        USER = s.user,
        ARMDB_LIB_ENV = "env ARMDB_LIB=" .. s.armdb_lib .. ";",
        LUA_PATH = s.here .. "/?.lua;" .. s.root .. "/bench/?.lua;" .. s.root .. "/lua/?.lua;"
            .. s.root .. "/lua/?/init.lua",
        SHDICT_SIZE = shdict_mib(keys) .. "m",
        CONFIG_LUA = lua_literal(cfg),
        LISTEN = "127.0.0.1:" .. port,
    }
    local pid = nb.start_nginx(s.nginx, prefix, s.here .. "/nginx.conf", values, "")
    running[prefix] = pid
    return { prefix = prefix, pid = pid, port = port, cfg = cfg, shdict_mib = shdict_mib(keys) }
end

-- Wait for the worker's result file, copying its progress lines to stderr.
local function wait_result(srv, timeout_s)
    local deadline = os.time() + timeout_s
    local seen = 0
    while true do
        local log = read_file(srv.cfg.log) or ""
        if #log > seen then
            io.stderr:write(log:sub(seen + 1))
            seen = #log
        end
        local text = read_file(srv.cfg.out)
        if text then
            local doc = cjson.decode(text)
            if not doc.ok then
                die("the nginx worker failed: %s\n%s", tostring(doc.error), log_tail(srv.prefix))
            end
            return doc
        end
        if not alive(srv.pid) then
            die("nginx (pid %d) exited:\n%s", srv.pid, log_tail(srv.prefix))
        end
        if os.time() > deadline then
            die("no result from nginx within %d s:\n%s", timeout_s, log_tail(srv.prefix))
        end
        sleep_ms(200)
    end
end

-- ---- figures ----

local median = benchdata.median

local function round(x, digits)
    local m = 10 ^ (digits or 0)
    return math.floor(x * m + 0.5) / m
end

local figures = {}

local function figure(id, fields, raw)
    local f = {}
    for k, v in pairs(fields) do
        f[k] = v
    end
    f.id = id
    local lo, hi = math.huge, -math.huge
    for _, x in ipairs(raw) do
        lo, hi = math.min(lo, x), math.max(hi, x)
    end
    f.median, f.min, f.max, f.raw = median(raw), lo, hi, raw
    figures[#figures + 1] = f
    return f
end

local ENGINE_ID = {
    ["armdb.store"] = "armdb_store",
    ["armdb bytes(16)/raw"] = "armdb_collection",
    ["ngx.shared.DICT"] = "shdict",
}

-- ---- part (a): point operations inside the worker ----

local function run_point(s, doc)
    say("point: %d keys, %d repetitions, in one nginx worker", s.n, s.reps)
    local srv = start(s, "point", s.n)
    doc.point = { shdict_size_mib = srv.shdict_mib, armdb_cache_size = srv.cfg.cache_size }
    -- Generous: a warm-up round and REPS rounds of 3 engines, each N puts,
    -- a check and N gets, at a few microseconds per operation at worst.
    local res = wait_result(srv, 120 + math.ceil(s.n * (s.reps + 1) * 3 * 3 * 20e-6))
    stop(srv.prefix)
    local p = res.point
    doc.point.order = p.order
    doc.point.engine_info = p.extra
    doc.env.ngx_lua_version, doc.env.luajit = res.env.ngx_lua, res.env.jit
    local medians = {}
    for _, name in ipairs({ "armdb.store", "armdb bytes(16)/raw", "ngx.shared.DICT" }) do
        local r = p.engines[name]
        for _, op in ipairs({ "put", "get" }) do
            local raw = {}
            for rep, ns in ipairs(r[op .. "_ns"]) do
                raw[rep] = round(s.n / (ns / 1e9))
            end
            local f = figure("point." .. op .. "." .. ENGINE_ID[name],
                { group = "point", engine = name, op = op, unit = "ops/s", better = "higher", keys = s.n }, raw)
            medians[op .. name] = f.median
        end
    end
    for _, name in ipairs({ "armdb.store", "armdb bytes(16)/raw" }) do
        for _, op in ipairs({ "put", "get" }) do
            doc.ratios[#doc.ratios + 1] = {
                id = "point." .. op .. "." .. ENGINE_ID[name] .. "/shdict",
                what = name .. " / ngx.shared.DICT, " .. op .. "s/s (median / median; above 1: armdb faster)",
                value = round(medians[op .. name] / medians[op .. "ngx.shared.DICT"], 3),
            }
        end
    end
end

-- ---- part (b): HTTP under wrk ----

local function wrk_run(s, srv, op, prefix, seconds)
    local cmd = string.format("%s -t%d -c%d -d%ds --timeout 5s -s %s http://127.0.0.1:%d -- %s %d %s 2>&1",
        quote(s.wrk), s.threads, s.connections, seconds, quote(s.root .. "/bench/nginx_wrk.lua"), srv.port, op,
        s.http_keys, prefix)
    local out, ok = sh(cmd)
    local r = nb.wrk_result(out)
    if not ok or not r then
        die("wrk failed:\n%s\n%s", cmd, out)
    end
    local e = r.errors
    if e.connect + e.status > 0 then
        die("wrk %s %s: %d connect errors, %d answers other than 2xx/3xx:\n%s\n%s", op, prefix,
            e.connect, e.status, out, log_tail(srv.prefix))
    end
    if r.requests == 0 then
        die("wrk %s %s: no request completed:\n%s", op, prefix, out)
    end
    r.rps = r.requests / (r.duration_us / 1e6)
    return r
end

local HTTP_ENGINES = {
    { name = "armdb.store", id = "armdb_store", prefix = "/a/" },
    { name = "ngx.shared.DICT", id = "shdict", prefix = "/d/" },
}
local PERCENTILES = { "50", "90", "99", "99.9" }

local function run_http(s, doc)
    say("http: %d keys, wrk -t%d -c%d, %d s per run after %d s of warm-up, %d repetitions",
        s.http_keys, s.threads, s.connections, s.duration, s.warmup, s.reps)
    local srv = start(s, "http", s.http_keys)
    local loaded = wait_result(srv, 120 + math.ceil(s.http_keys * 20e-6))
    doc.http = {
        shdict_size_mib = srv.shdict_mib,
        armdb_cache_size = srv.cfg.cache_size,
        dict_after_load = loaded.dict,
        io_backend = loaded.io_backend,
        order = {},
    }
    doc.env.ngx_lua_version = doc.env.ngx_lua_version or loaded.env.ngx_lua
    doc.env.luajit = doc.env.luajit or loaded.env.jit
    local runs = {} -- op .. id -> list of wrk results
    for rep = 1, s.reps do
        doc.http.order[rep] = {}
        for _, op in ipairs({ "GET", "PUT" }) do
            local seq = rep % 2 == 1 and { 1, 2 } or { 2, 1 }
            for _, i in ipairs(seq) do
                local e = HTTP_ENGINES[i]
                if s.warmup > 0 then
                    wrk_run(s, srv, op, e.prefix, s.warmup)
                end
                local r = wrk_run(s, srv, op, e.prefix, s.duration)
                local key = op .. e.id
                runs[key] = runs[key] or {}
                runs[key][rep] = r
                table.insert(doc.http.order[rep], op .. " " .. e.name)
                say("http: rep %d/%d %s %-16s %8.0f requests/s  p50 %d us  p99 %d us", rep, s.reps, op, e.name,
                    r.rps, r.latency_us["50"], r.latency_us["99"])
            end
        end
    end
    stop(srv.prefix)
    local medians = {}
    for _, op in ipairs({ "GET", "PUT" }) do
        for _, e in ipairs(HTTP_ENGINES) do
            local list = runs[op .. e.id]
            local base = { group = "http", engine = e.name, op = op }
            local rps, errors = {}, {}
            for rep, r in ipairs(list) do
                rps[rep] = round(r.rps)
                errors[rep] = r.errors
            end
            local fields = {}
            for k, v in pairs(base) do
                fields[k] = v
            end
            fields.unit, fields.better, fields.errors = "requests/s", "higher", errors
            local f = figure("http." .. op .. "." .. e.id .. ".rps", fields, rps)
            medians[op .. e.id] = f.median
            for _, q in ipairs(PERCENTILES) do
                local lat = {}
                for rep, r in ipairs(list) do
                    lat[rep] = r.latency_us[q]
                end
                local lf = { unit = "us", better = "lower", percentile = tonumber(q) }
                for k, v in pairs(base) do
                    lf[k] = v
                end
                figure("http." .. op .. "." .. e.id .. ".latency_p" .. q, lf, lat)
            end
        end
        doc.ratios[#doc.ratios + 1] = {
            id = "http." .. op .. ".armdb_store/shdict",
            what = "armdb.store / ngx.shared.DICT, HTTP " .. op
                .. " requests/s (median / median; above 1: armdb faster)",
            value = round(medians[op .. "armdb_store"] / medians[op .. "shdict"], 3),
        }
    end
end

-- ---- main ----

local function loadavg()
    local l = read_file("/proc/loadavg") or ""
    return l:match("^(%S+ %S+ %S+)") or "?"
end

local function machine()
    local text = read_file("/proc/cpuinfo") or ""
    local model = text:match("model name%s*:%s*([^\n]+)") or "unknown CPU"
    local cores = 0
    for _ in text:gmatch("processor%s*:") do
        cores = cores + 1
    end
    return { cpu = model, cores = cores }
end

local function main()
    local tmp = arg[1]
    if not tmp or arg[3] then
        io.stderr:write("usage: luajit driver.lua TMPDIR [N] (run it through bench/ngx/run)\n")
        os.exit(2)
    end
    local t0 = now()
    local doc
    local ok, err = xpcall(function()
        local s = settings(tmp, arg[2])
        find_tools(s)
        doc = {
            benchmark = "ngx",
            description = "armdb Lua API vs ngx.shared.DICT in one nginx worker: point operations timed "
                .. "in a timer, and HTTP GET/PUT under wrk (see bench/ngx/README.md)",
            date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
            commit = trim(sh("git -C " .. quote(s.root) .. " rev-parse --short HEAD 2>/dev/null")),
            machine = machine(),
            env = { nginx = s.nginx_version, wrk = s.wrk_version,
                -- relative to the checkout when it is the checkout's
                armdb_lib = s.armdb_lib:sub(1, #s.root + 1) == s.root .. "/" and s.armdb_lib:sub(#s.root + 2)
                    or s.armdb_lib },
            settings = {
                keys = s.n, reps = s.reps, key_len = KEY_LEN, value_len = VAL_LEN, sync = s.sync,
                http_keys = s.http_keys, duration_s = s.duration, warmup_s = s.warmup,
                threads = s.threads, connections = s.connections, workers = 1,
            },
            load_before = loadavg(),
            figures = figures,
            ratios = {},
        }
        if s.skip ~= "http" then
            run_point(s, doc)
        end
        if s.skip ~= "point" then
            run_http(s, doc)
        end
        doc.load_after = loadavg()
        doc.elapsed_s = round(now() - t0, 1)
    end, function(e)
        if type(e) == "table" then
            return e.msg
        end
        if tostring(e):match("interrupted!$") then
            return "interrupted"
        end
        return debug.traceback(tostring(e), 2)
    end)
    stop_all()
    if not ok then
        io.stderr:write("bench/ngx: ", tostring(err), "\n")
        os.exit(1)
    end
    cjson.encode_sparse_array(true)
    io.stdout:write(cjson.encode(doc), "\n")
end

main()
