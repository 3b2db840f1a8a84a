-- driver.lua: the body of bench/http/run (which owns the work directory
-- and stops any nginx left behind, also on failure or ^C).
--
--   luajit bench/http/driver.lua WORKDIR
--
-- Starts one nginx per backend (2 workers each, a free port of 127.0.0.1,
-- prefix WORKDIR/BACKEND), preloads the keys, then runs wrk: GET for every
-- backend, REPS times, then PUT likewise, the backends' order reversed in
-- every other repetition. Prints the table of medians and ratios on
-- stdout; progress on stderr. See "HTTP with 2 nginx workers" in
-- bench/README.md. Starting and stopping nginx, and wrk's script, are
-- shared with bench/ngx: bench/nginx_bench.lua and bench/nginx_wrk.lua.
-- bench/nginx_bench.lua and bench/benchdata.lua, above this directory.
package.path = ((arg[0] or ""):match("^(.*)/[^/]*$") or ".") .. "/../?.lua;" .. package.path
local nb = require("nginx_bench")
local median = require("benchdata").median

local say = nb.sayer("bench/http")
local die, quote, read_file, sh, trim = nb.die, nb.quote, nb.read_file, nb.sh, nb.trim
local sleep_ms, now, env_int = nb.sleep_ms, nb.now, nb.env_int

local LABEL = {
    empty = "empty handler",
    shdict = "lua_shared_dict",
    lmdb = "LMDB (FFI, NOSYNC)",
    armdb = "armdb (shared)",
}

local function settings(work)
    local s = { work = work }
    s.keys = env_int("BENCH_HTTP_KEYS", 100000, 1, 10000000)
    s.reps = env_int("BENCH_HTTP_REPS", 3, 1, 15)
    s.duration = env_int("BENCH_HTTP_DURATION", 10, 1, 600)
    s.warmup = env_int("BENCH_HTTP_WARMUP", 2, 0, 600)
    s.backends = {}
    for name in (os.getenv("BENCH_HTTP_BACKENDS") or "empty,shdict,lmdb,armdb"):gmatch("[^,%s]+") do
        if not LABEL[name] then
            die("BENCH_HTTP_BACKENDS: unknown backend %q (empty, shdict, lmdb, armdb)", name)
        end
        s.backends[#s.backends + 1] = name
    end
    if #s.backends == 0 then
        die("BENCH_HTTP_BACKENDS names no backend")
    end

    s.here, s.root = nb.paths("http")
    s.lib = os.getenv("ARMDB_LIB")
    if not s.lib or s.lib == "" or not read_file(s.lib) then
        die("set ARMDB_LIB to the path of libarmdb.so (got %q)", tostring(s.lib))
    end
    for _, p in ipairs({ s.here, s.root, s.work, s.lib }) do
        if p:find('["\\$;{}%c\'%s]') then
            die("path %q has a character that cannot go into nginx.conf", p)
        end
    end
    for _, m in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
        if not read_file("/usr/lib/nginx/modules/" .. m) then
            die("/usr/lib/nginx/modules/%s is missing: install libnginx-mod-http-lua", m)
        end
    end
    for _, tool in ipairs({ "nginx", "wrk", "curl" }) do
        local path = trim(sh("command -v " .. tool .. " 2>/dev/null || ls /usr/sbin/" .. tool .. " 2>/dev/null"))
        if path == "" then
            die("%s not found (install the Debian package %s)", tool, tool)
        end
        s[tool] = path
    end
    s.clk_tck = tonumber(trim(sh("getconf CLK_TCK"))) or 100
    -- As root, the workers run as the owner of the work directory.
    s.user = nb.nginx_user(s.work, "")
    return s
end

-- ---- nginx ----

-- Lines of error.log at level error or worse (ngx_lua logs a failed
-- init_worker, and httpbench every failed get/put, at "error").
local function log_errors(inst)
    local out = {}
    for line in (read_file(inst.prefix .. "/logs/error.log") or ""):gmatch("[^\n]+") do
        if line:find("%[error%]") or line:find("%[crit%]") or line:find("%[alert%]") or line:find("%[emerg%]") then
            out[#out + 1] = line
        end
    end
    return out
end

local function http(inst, path)
    return sh(string.format("%s -sS --max-time 300 -o - -w ' HTTP%%{http_code}' http://127.0.0.1:%d%s 2>&1",
        quote(inst.curl), inst.port, path))
end

local function stop(inst)
    return not inst.pid or nb.stop_nginx(inst.pid, say, " (" .. inst.backend .. ")")
end

-- The shared-memory region of an armdb store in shared mode:
-- /dev/shm/armdb.<st_dev>.<st_ino> of its directory, both in hex.
local function shm_region(dir)
    local dev, ino = sh("stat -c '%D %i' " .. quote(dir) .. " 2>/dev/null"):match("(%x+) (%d+)")
    return dev and string.format("/dev/shm/armdb.%s.%x", dev, tonumber(ino)) or nil
end

local function start(s, backend)
    local prefix = s.work .. "/" .. backend
    sh("rm -rf " .. quote(prefix))
    local port = nb.free_port()
    local data = prefix .. "/data/" .. backend
    if backend == "lmdb" then
        assert(os.execute("mkdir -p " .. quote(data)) == 0) -- LMDB wants the directory; armdb makes it
    end
    local values = {
        USER = s.user,
        ARMDB_LIB = s.lib,
        ROOT = s.root,
        HERE = s.here,
        SHDICT = backend == "shdict" and "lua_shared_dict bench 256m;" or "",
        BACKEND = backend,
        DATA = data,
        KEYS = tostring(s.keys),
        PORT = tostring(port),
    }
    local inst = { backend = backend, prefix = prefix, port = port, curl = s.curl }
    inst.pid = nb.start_nginx(s.nginx, prefix, s.here .. "/nginx.conf", values, " for " .. backend)
    -- Up when it answers; both workers have run init_worker by then or
    -- logged why not (checked below).
    for _ = 1, 100 do
        local o = http(inst, "/")
        if o:find("HTTP404") then
            break
        end
        sleep_ms(100)
    end
    sleep_ms(300)
    inst.workers = {}
    for w in sh("pgrep -P " .. inst.pid):gmatch("%d+") do
        inst.workers[#inst.workers + 1] = tonumber(w)
    end
    local errs = log_errors(inst)
    if #errs > 0 then
        stop(inst)
        die("nginx for %s logged errors at start:\n%s", backend, table.concat(errs, "\n"))
    end
    if backend == "armdb" then
        inst.shm = shm_region(data)
        if not inst.shm or not read_file(inst.shm) then
            stop(inst)
            die("armdb: no shared-memory region %s while the store is open", tostring(inst.shm))
        end
    end
    say("%s: nginx %d, workers %s, port %d", backend, inst.pid, table.concat(inst.workers, " "), port)
    return inst
end

-- CPU time (ticks) of an instance's workers so far.
local function cpu_ticks(inst)
    local t = 0
    for _, pid in ipairs(inst.workers) do
        local stat = read_file("/proc/" .. pid .. "/stat")
        if stat then
            local rest = stat:match("^%d+ %b() (.*)$")
            local f = {}
            for x in rest:gmatch("%S+") do
                f[#f + 1] = x
            end
            -- fields 14 and 15 of the line (utime, stime); rest starts at field 3
            t = t + tonumber(f[12]) + tonumber(f[13])
        end
    end
    return t
end

-- ---- wrk ----

local function run_wrk(s, inst, op, seconds)
    local cmd = string.format("%s -t2 -c32 -d%ds --timeout 5s -s %s http://127.0.0.1:%d -- %s %d %s 2>&1",
        quote(s.wrk), seconds, quote(s.root .. "/bench/nginx_wrk.lua"), inst.port, op, s.keys,
        op == "GET" and "/get/" or "/put/")
    local out = sh(cmd)
    local w = nb.wrk_result(out)
    if not w then
        die("wrk printed no result for %s %s:\n%s", op, inst.backend, out)
    end
    local r = {
        requests = w.requests,
        duration = w.duration_us / 1e6,
        p50 = w.latency_us["50"],
        p99 = w.latency_us["99"],
        errors = 0,
    }
    for _, e in ipairs({ "connect", "read", "write", "status", "timeout" }) do
        r.errors = r.errors + w.errors[e]
    end
    r.rps = r.requests / r.duration
    if r.errors > 0 then
        local errs = log_errors(inst)
        die("%s %s: wrk counted %d errors (%s)%s", op, inst.backend, r.errors, out:match("NGINX_BENCH_WRK (%b{})"),
            #errs > 0 and (":\n" .. table.concat(errs, "\n", 1, math.min(#errs, 20))) or "")
    end
    return r
end

-- ---- the run ----

local function main(work)
    local s = settings(work)
    local started = now()
    say("%d keys, 100-byte values, %d reps of %d s (+%d s warm-up per backend and op), wrk -t2 -c32",
        s.keys, s.reps, s.duration, s.warmup)
    say("ARMDB_LIB=%s", s.lib)

    local insts, by_name = {}, {}
    local ok, err = pcall(function()
        for _, b in ipairs(s.backends) do
            local inst = start(s, b)
            insts[#insts + 1], by_name[b] = inst, inst
        end
        for _, inst in ipairs(insts) do
            local t0 = now()
            local out = http(inst, "/preload")
            if not out:find("HTTP200") then
                die("preload of %s failed: %s\n%s", inst.backend, out, table.concat(log_errors(inst), "\n"))
            end
            say("%s: %s (%.2f s)", inst.backend, trim(out:gsub("HTTP200", "")), now() - t0)
        end

        local results = {}
        for _, op in ipairs({ "GET", "PUT" }) do
            if s.warmup > 0 then
                for _, inst in ipairs(insts) do
                    run_wrk(s, inst, op, s.warmup)
                end
            end
            for rep = 1, s.reps do
                local order = {}
                for i = 1, #insts do
                    order[i] = rep % 2 == 1 and insts[i] or insts[#insts + 1 - i]
                end
                for _, inst in ipairs(order) do
                    local before = {}
                    for _, other in ipairs(insts) do
                        before[other] = cpu_ticks(other)
                    end
                    local r = run_wrk(s, inst, op, s.duration)
                    -- The workers' CPU per request (all their threads): less
                    -- moved by other load on the machine than requests/s.
                    r.cpu_us = (cpu_ticks(inst) - before[inst]) * 1e6 / s.clk_tck / r.requests
                    -- CPU the idle instances used meanwhile (armdb's barrier
                    -- thread, for one): it would be taken from the one measured.
                    local idle = 0
                    for _, other in ipairs(insts) do
                        if other ~= inst then
                            idle = idle + cpu_ticks(other) - before[other]
                        end
                    end
                    local key = op .. " " .. inst.backend
                    results[key] = results[key] or {}
                    table.insert(results[key], r)
                    say("rep %d %s %-7s %10.0f req/s  p50 %5d us  p99 %6d us  workers %.1f us cpu/req"
                        .. "  (others' cpu %d ticks)", rep, op, inst.backend, r.rps, r.p50, r.p99, r.cpu_us, idle)
                end
            end
        end

        -- Every worker must read back every key, whichever worker wrote it.
        for _, inst in ipairs(insts) do
            local pids = {}
            for _ = 1, 12 do
                local out = http(inst, "/check")
                local pid = out:match("pid=(%d+)")
                if not pid or not out:find("missing=0 wrong=0 failed=0") or not out:find("HTTP200") then
                    die("check of %s failed: %s", inst.backend, trim(out))
                end
                pids[pid] = trim(out:gsub("HTTP200", ""))
            end
            for _, line in pairs(pids) do
                say("%s check: %s", inst.backend, line)
            end
        end
        s.results = results
    end)

    local stopped_ok = true
    for _, inst in ipairs(insts) do
        if not stop(inst) then
            stopped_ok = false
        end
    end
    if not ok then
        error(err, 0)
    end
    if not stopped_ok then
        die("an nginx did not stop on QUIT")
    end
    local problems = {}
    for _, inst in ipairs(insts) do
        for _, line in ipairs(log_errors(inst)) do
            problems[#problems + 1] = inst.backend .. ": " .. line
        end
        for line in (read_file(inst.prefix .. "/logs/error.log") or ""):gmatch("[^\n]+") do
            local w = line:match("httpbench: (worker .*)")
            if w then
                say("%s", (w:gsub(", client.*$", "")))
            end
        end
    end
    for _, inst in ipairs(insts) do
        if inst.shm and read_file(inst.shm) then
            problems[#problems + 1] = inst.shm .. " is left behind after both workers closed the store"
        end
    end
    if #problems > 0 then
        die("errors in nginx's logs:\n%s", table.concat(problems, "\n"))
    end

    -- ---- the table ----
    local r = s.results
    local function med(op, b, field)
        local xs = {}
        for _, x in ipairs(r[op .. " " .. b] or {}) do
            xs[#xs + 1] = x[field]
        end
        return #xs > 0 and median(xs) or nil
    end
    local function fmt_int(x)
        local str = string.format("%.0f", x)
        return (str:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
    end
    print(string.format("HTTP, nginx 2 workers, wrk -t2 -c32 -d%ds, %d keys of 16 B, 100-byte values; medians of %d",
        s.duration, s.keys, s.reps))
    print("")
    print("| backend | GET req/s | GET p99 us | GET cpu us/req | PUT req/s | PUT p99 us | PUT cpu us/req |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for _, b in ipairs(s.backends) do
        print(string.format("| %s | %s | %s | %.1f | %s | %s | %.1f |", LABEL[b],
            fmt_int(med("GET", b, "rps")), fmt_int(med("GET", b, "p99")), med("GET", b, "cpu_us"),
            fmt_int(med("PUT", b, "rps")), fmt_int(med("PUT", b, "p99")), med("PUT", b, "cpu_us")))
    end
    print("")
    if by_name.armdb and #insts > 1 then
        print("| ratio | GET | PUT |")
        print("|---|---:|---:|")
        for _, peer in ipairs({ "shdict", "lmdb", "empty" }) do
            if by_name[peer] then
                print(string.format("| armdb / %s | %.2fx | %.2fx |", LABEL[peer],
                    med("GET", "armdb", "rps") / med("GET", peer, "rps"),
                    med("PUT", "armdb", "rps") / med("PUT", peer, "rps")))
            end
        end
        print("")
    end
    print("every run (req/s):")
    for _, op in ipairs({ "GET", "PUT" }) do
        for _, b in ipairs(s.backends) do
            local xs = {}
            for _, x in ipairs(r[op .. " " .. b]) do
                xs[#xs + 1] = fmt_int(x.rps)
            end
            print(string.format("  %s %-20s %s", op, LABEL[b], table.concat(xs, "  ")))
        end
    end
    say("done in %.0f s", now() - started)
end

local work = arg[1]
if not work or work == "" then
    io.stderr:write("usage: luajit bench/http/driver.lua WORKDIR\n")
    os.exit(2)
end
local ok, err = pcall(main, work)
if not ok then
    say("%s", type(err) == "table" and err.msg or tostring(err))
    os.exit(1)
end
