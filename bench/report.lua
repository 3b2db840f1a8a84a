-- bench/report.lua DIR: the readable part of a `make bench` run.
--
-- Reads what the harnesses left in DIR (engines.json from
-- build/bench-engines, device.json from bench/device.sh, ngx.json from
-- bench/ngx/run; any may be missing) and writes DIR/summary.md: the
-- machine, armdb against the best peer for every workload and value size,
-- armdb against the device's ceiling, the Lua/OpenResty figures, and each
-- aim of the suite with its ratio. With gnuplot installed it also draws
-- DIR/throughput-<size>.png (every engine on every workload) and
-- DIR/latency.png (the latency percentiles of fio and wrk).
local cjson = require("cjson")

local dir = arg[1]
if not dir then
    io.stderr:write("usage: luajit bench/report.lua RESULTS_DIR\n")
    os.exit(2)
end

local function load(name)
    local f = io.open(dir .. "/" .. name, "rb")
    if not f then
        return nil
    end
    local text = f:read("*a")
    f:close()
    local ok, doc = pcall(cjson.decode, text)
    if not ok then
        io.stderr:write("report: ", name, " is not JSON: ", tostring(doc), "\n")
        os.exit(1)
    end
    return doc
end

local engines, device, ngx = load("engines.json"), load("device.json"), load("ngx.json")
if not (engines or device or ngx) then
    io.stderr:write("report: no engines.json, device.json or ngx.json in ", dir, "\n")
    os.exit(1)
end

local out = {}
local function say(fmt, ...)
    out[#out + 1] = select("#", ...) > 0 and string.format(fmt, ...) or fmt
end

local function num(v)
    if v == nil then
        return "-"
    end
    if v >= 100 then
        local s = string.format("%.0f", v)
        return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
    end
    return string.format("%.3g", v)
end

-- Lower is better for these units; higher for the rest (ops/s, keys/s, ranges/s, MiB/s).
local LOWER_BETTER = { ms = true, bytes = true, ["bytes/key"] = true, us = true, ["pages/get"] = true }
-- Rates drawn in the throughput charts (scans count keys or ranges).
local RATES = { ["ops/s"] = true, ["keys/s"] = true, ["ranges/s"] = true }
-- armdb's rows: the store of most workloads, then the special stores (an
-- older engines.json may lack them; the encrypted ones run only when asked
-- for). None of them is a peer.
local ARMDB_ROWS = {
    { "armdb", "" },
    { "armdb-enc", " (encrypted, XChaCha20-Poly1305)" },
    { "armdb-aes", " (encrypted, AES-256-GCM)" },
    { "armdb-inline", " (inline values)" },
    { "armdb-ordered", " (ordered store)" },
}

-- ---- engines: armdb against the best peer ----

local rows = engines and engines.results or {}
local PEERS = { lmdb = true, rocksdb = true, leveldb = true }

-- figure[size][workload|variant][engine] = row
local figure, sizes, order = {}, {}, {}
for _, r in ipairs(rows) do
    local size = r.value_size or 0
    if not figure[size] then
        figure[size] = {}
        sizes[#sizes + 1] = size
    end
    local key = r.workload .. (r.variant ~= "" and r.variant and ("/" .. r.variant) or "")
    if not figure[size][key] then
        figure[size][key] = { unit = r.unit }
        if not order[key] then
            order[#order + 1] = key
            order[key] = true
        end
    end
    figure[size][key][r.engine] = r
end
table.sort(sizes)

local function best_peer(f)
    local best
    for engine, r in pairs(f) do
        if PEERS[engine] and r.median then
            local better = not best
                or (LOWER_BETTER[f.unit] and r.median < best.median)
                or (not LOWER_BETTER[f.unit] and r.median > best.median)
            if better then
                best = r
            end
        end
    end
    return best
end

-- armdb's advantage: > 1 means armdb is better, whichever way the unit goes.
local function advantage(a, p, unit)
    if not (a and p and a.median and p.median) or a.median == 0 or p.median == 0 then
        return nil
    end
    return LOWER_BETTER[unit] and p.median / a.median or a.median / p.median
end

local function get(size, key, engine)
    return figure[size] and figure[size][key] and figure[size][key][engine]
end

say("# armdb benchmark run")
say("")
local m = (engines or device or ngx).machine or {}
if type(m) == "table" then
    local parts = {}
    for k, v in pairs(m) do
        if type(v) ~= "table" then
            parts[#parts + 1] = k .. ": " .. tostring(v)
        end
    end
    table.sort(parts)
    say("Machine: %s.", table.concat(parts, "; "))
end
if engines and engines.config then
    local parts = {}
    for k, v in pairs(engines.config) do
        if type(v) ~= "table" then
            parts[#parts + 1] = k .. "=" .. tostring(v)
        end
    end
    table.sort(parts)
    say("")
    say("Engines harness settings: %s.", table.concat(parts, ", "))
end

if #rows > 0 then
    for _, size in ipairs(sizes) do
        say("")
        say("## Engines, %d-byte values (medians; armdb / best peer: above 1 is armdb ahead)", size)
        say("")
        say("| workload | unit | armdb | LMDB | RocksDB | LevelDB | best peer | armdb / best peer |")
        say("|---|---|---:|---:|---:|---:|---|---:|")
        for _, key in ipairs(order) do
            local f = figure[size][key]
            if f then
                for _, row in ipairs(ARMDB_ROWS) do
                    local a = f[row[1]]
                    if a then
                        local best = best_peer(f)
                        local adv = advantage(a, best, f.unit)
                        local cell = function(e) return num(f[e] and f[e].median) end
                        say("| %s%s | %s | %s | %s | %s | %s | %s | %s |", key, row[2], f.unit, num(a.median),
                            cell("lmdb"), cell("rocksdb"), cell("leveldb"), best and best.engine or "-",
                            adv and string.format("%.2fx", adv) or "-")
                    end
                end
            end
        end
    end
end

-- ---- the device's ceiling ----

local dev = {}
for _, r in ipairs(device and device.results or {}) do
    dev[r.id] = r
end

local function entry_bytes(v) -- an entry on disk: header 16, key 16, value, padding to 8
    return math.ceil((32 + v) / 8) * 8
end

local ceiling = {}
if device then
    say("")
    say("## armdb against the device (fio on the same filesystem, same run)")
    say("")
    say("| figure | armdb | device | armdb / device |")
    say("|---|---:|---:|---:|")
    for _, size in ipairs(sizes) do
        local fill = get(size, "fillrandom", "armdb")
        if fill and dev["seq_write.bw"] then
            local mibs = fill.median * entry_bytes(size) / 1048576
            local r = mibs / dev["seq_write.bw"].median
            ceiling["write" .. size] = r
            say("| write bandwidth, fillrandom %d B (MiB/s) | %s | %s | %.2f |", size, num(mibs),
                num(dev["seq_write.bw"].median), r)
        end
    end
    local pairs_ = {
        { "cold gets (ops/s) vs 4 KiB random read QD1", "readrandom_cold", "randread_qd1.ops", "cold" },
        { "cold get_many x256 (keys/s) vs QD32", "multiget_cold/batch256", "randread_qd32.ops", "batch" },
        { "durable puts, 1 thread (ops/s) vs fdatasync", "durable/threads1", "fdatasync.ops", "sync" },
    }
    local size = sizes[1]
    for _, p in ipairs(pairs_) do
        local a, d = get(size, p[2], "armdb"), dev[p[3]]
        if a and d then
            ceiling[p[4]] = a.median / d.median
            say("| %s, %d B values | %s | %s | %.2f |", p[1], size, num(a.median), num(d.median), ceiling[p[4]])
        end
    end
end

-- ---- Lua and OpenResty ----

local ngx_fig = {}
if ngx then
    for _, r in ipairs(ngx.figures or {}) do
        ngx_fig[r.id] = r
    end
    say("")
    say("## Lua in nginx: armdb against ngx.shared.DICT (one worker)")
    say("")
    say("| figure | armdb | ngx.shared.DICT | armdb / DICT |")
    say("|---|---:|---:|---:|")
    for _, r in ipairs(ngx.ratios or {}) do
        -- "point.put.armdb_store/shdict": the armdb figure and the DICT's
        local a_id = r.id:match("^(.-)/") or r.id
        local d_id = a_id:gsub("armdb_%a+", "shdict")
        local a = ngx_fig[a_id] or ngx_fig[a_id .. ".rps"]
        local d = ngx_fig[d_id] or ngx_fig[d_id .. ".rps"]
        say("| %s | %s | %s | %.2f |", r.what or r.id, num(a and a.median), num(d and d.median), r.value or 0)
    end
end

-- ---- the aims ----

local function ratio_of(size, key, engine_a, engine_b)
    local a, b = get(size, key, engine_a), get(size, key, engine_b)
    return a and b and b.median > 0 and a.median / b.median or nil
end

local aims = {}
local function aim(text, value, need, lower)
    aims[#aims + 1] = { text = text, value = value, need = need, lower = lower }
end
local s0 = sizes[1]
if s0 then
    local f = figure[s0]["fillrandom"]
    local best = f and best_peer(f)
    aim("fillrandom >= 10x the best of LMDB, LevelDB, RocksDB",
        best and f.armdb and f.armdb.median / best.median, 10)
    aim("hot readrandom >= 3x LMDB", ratio_of(s0, "readrandom_hot", "armdb", "lmdb"), 3)
    aim("hot readrandom, fixed-size inline values >= 5x LMDB",
        ratio_of(s0, "readrandom_hot", "armdb-inline", "lmdb"), 5)
    local d4, l1 = get(s0, "durable/threads4", "armdb"), get(s0, "durable/threads1", "lmdb")
    aim("durable writes, 4 threads >= 20x LMDB sync-per-op commits", d4 and l1 and d4.median / l1.median, 20)
    local ix = get(s0, "index_bytes_per_key", "armdb")
    aim("index memory <= key length + 32 bytes per key (48)", ix and ix.median, 48, true)
    local reopen = get(s0, "reopen", "armdb")
    local keys = engines and engines.config and tonumber(engines.config.keys)
    aim("reopen from hints >= 10M keys/s", reopen and keys and keys / (reopen.median / 1000), 1e7)
end
aim("cold readrandom >= 0.9x fio 4 KiB QD1 IOPS", ceiling.cold, 0.9)
aim("get_many >= 0.8x fio QD32 IOPS", ceiling.batch, 0.8)
local g_a, g_d = ngx_fig["http.GET.armdb_store.rps"], ngx_fig["http.GET.shdict.rps"]
aim("HTTP GET through armdb >= 0.9x ngx.shared.DICT", g_a and g_d and g_a.median / g_d.median, 0.9)

say("")
say("## Aims")
say("")
say("| aim | this run | met |")
say("|---|---:|---|")
for _, a in ipairs(aims) do
    local met = a.value and ((a.lower and a.value <= a.need) or (not a.lower and a.value >= a.need))
    say("| %s | %s | %s |", a.text, a.value and num(a.value) or "not measured",
        a.value == nil and "-" or (met and "met" or "**not met**"))
end

local f = assert(io.open(dir .. "/summary.md", "wb"))
f:write(table.concat(out, "\n"), "\n")
f:close()
io.stderr:write("report: ", dir, "/summary.md\n")

-- ---- charts ----

if os.execute("command -v gnuplot >/dev/null 2>&1") ~= 0 then
    io.stderr:write("report: gnuplot not installed, no charts\n")
    return
end

local function plot(name, script, data)
    local dat = dir .. "/" .. name .. ".dat"
    local g = assert(io.open(dat, "wb"))
    g:write(data)
    g:close()
    local gp = dir .. "/" .. name .. ".gp"
    g = assert(io.open(gp, "wb"))
    g:write(string.format("set terminal pngcairo size 1200,600 noenhanced\nset output '%s/%s.png'\n", dir, name))
    g:write((script:gsub("DATA", dat)))
    g:close()
    if os.execute("gnuplot '" .. gp .. "'") ~= 0 then
        io.stderr:write("report: gnuplot failed on ", gp, "\n")
    else
        os.remove(gp)
        os.remove(dat)
        io.stderr:write("report: ", dir, "/", name, ".png\n")
    end
end

local BARS = [[
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key outside right top
set grid ytics
set xtics rotate by -30
]]

local ENGINES = { "armdb", "armdb-enc", "armdb-aes", "armdb-inline", "armdb-ordered", "lmdb", "rocksdb", "leveldb" }
for _, size in ipairs(sizes) do
    -- The engines with a figure at this size, and the workloads measured as rates.
    local present, keys = {}, {}
    for _, key in ipairs(order) do
        local fg = figure[size][key]
        if fg and RATES[fg.unit] then
            keys[#keys + 1] = key
            for _, e in ipairs(ENGINES) do
                present[e] = present[e] or (fg[e] ~= nil and fg[e].median ~= nil)
            end
        end
    end
    local cols = {}
    for _, e in ipairs(ENGINES) do
        if present[e] then
            cols[#cols + 1] = e
        end
    end
    local lines = { "workload " .. table.concat(cols, " ") }
    for _, key in ipairs(keys) do
        local fg = figure[size][key]
        local cells = { '"' .. key .. '"' }
        for _, e in ipairs(cols) do
            cells[#cells + 1] = fg[e] and fg[e].median and string.format("%.1f", fg[e].median) or "NaN"
        end
        lines[#lines + 1] = table.concat(cells, " ")
    end
    if #keys > 0 and #cols > 0 then
        plot("throughput-" .. size, BARS .. string.format([[
set title "Throughput, %d-byte values, 16-byte keys (median; log scale)"
set ylabel "per second (operations; scans: keys; scan_range100: ranges)"
set logscale y
plot for [i=2:%d] 'DATA' using i:xtic(1) title columnheader(i)
]], size, #cols + 1), table.concat(lines, "\n") .. "\n")
    end
end

local lat = { "figure p50 p99 p99.9" }
for _, p in ipairs({ { "fio randread QD1", "randread_qd1.lat_" }, { "fio randread QD32", "randread_qd32.lat_" },
    { "fio fdatasync", "fdatasync.lat_" } }) do
    local a, b, c = dev[p[2] .. "p50"], dev[p[2] .. "p99"], dev[p[2] .. "p99_9"]
    if a and b and c then
        lat[#lat + 1] = string.format('"%s" %.1f %.1f %.1f', p[1], a.median, b.median, c.median)
    end
end
for _, p in ipairs({ { "GET armdb", "http.GET.armdb_store" }, { "GET DICT", "http.GET.shdict" },
    { "PUT armdb", "http.PUT.armdb_store" }, { "PUT DICT", "http.PUT.shdict" } }) do
    local a, b, c = ngx_fig[p[2] .. ".latency_p50"], ngx_fig[p[2] .. ".latency_p99"],
        ngx_fig[p[2] .. ".latency_p99.9"]
    if a and b and c then
        lat[#lat + 1] = string.format('"wrk %s" %.1f %.1f %.1f', p[1], a.median, b.median, c.median)
    end
end
if #lat > 1 then
    plot("latency", BARS .. [[
set title "Latency percentiles (median of the runs; log scale)"
set ylabel "microseconds"
set logscale y
plot for [i=2:4] 'DATA' using i:xtic(1) title columnheader(i)
]], table.concat(lat, "\n") .. "\n")
end
