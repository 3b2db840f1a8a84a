-- bench/nginx_wrk.lua: the load of bench/ngx and bench/http, for
-- `wrk -s nginx_wrk.lua URL -- OP KEYS PREFIX`.
--
--   OP      GET or PUT
--   KEYS    how many keys were loaded (indexes 0 .. KEYS-1)
--   PREFIX  the path before the key: /a/ (armdb) or /d/ (ngx.shared.DICT)
--           for bench/ngx; /get/ or /put/ for bench/http
--
-- Every request names a key drawn uniformly from the loaded set: the key
-- of index i is http_key(i), as in bench/ngx/ngxbench.lua and
-- bench/http/httpbench.lua (keep the three in step). A PUT sends a fixed
-- 100-byte body, overwriting that key. Each thread seeds its generator
-- with its number, so every engine or backend gets the same key sequences.
-- done() prints one line "NGINX_BENCH_WRK {...}" on stdout (read by
-- nginx_bench.wrk_result): requests, duration, bytes, errors and latency
-- (mean, stdev, max and percentiles) in microseconds.
--
-- wrk runs this in one Lua state per thread (and one more for setup and
-- done): the globals below are per state.
-- luacheck: globals wrk setup init request done

local op, nkeys, prefix
local counter = 0

local function http_key(i)
    return string.format("%08x%08x", (i * 40503 + 12345) % 4294967296, i)
end

function setup(thread)
    counter = counter + 1
    thread:set("thread_no", counter)
end

function init(args)
    op, nkeys, prefix = args[1], tonumber(args[2]), args[3]
    if (op ~= "GET" and op ~= "PUT") or not nkeys or nkeys < 1 or not prefix then
        error("usage: wrk -s nginx_wrk.lua URL -- GET|PUT KEYS PREFIX")
    end
    math.randomseed(12345 + (rawget(_G, "thread_no") or 1))
    wrk.method = op
    if op == "PUT" then
        wrk.body = string.rep("w", 100)
        wrk.headers["Content-Type"] = "application/octet-stream"
    end
end

function request()
    return wrk.format(nil, prefix .. http_key(math.random(0, nkeys - 1)))
end

function done(summary, latency)
    local e = summary.errors
    local p = {}
    for _, q in ipairs({ 50, 90, 99, 99.9 }) do
        p[#p + 1] = string.format('"%s":%d', tostring(q), latency:percentile(q))
    end
    io.write(string.format('NGINX_BENCH_WRK {"requests":%d,"duration_us":%d,"bytes":%d,'
        .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
        .. '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,%s}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.mean, latency.stdev, latency.max, table.concat(p, ",")))
end
