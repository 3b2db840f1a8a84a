#!/usr/bin/env bash
# device.sh - the device ceiling: what the disk under armdb's stores can do,
# measured with fio in the same run as the engines (issue 6, point 2), so
# that armdb's write bandwidth and cold reads can be given as a fraction of it.
#
#   bench/device.sh [DIR]    (default: $TMPDIR, else /tmp: where the engines'
#                             stores are made)
#
# Prints one JSON document on stdout; progress goes to stderr. The figures,
# each measured DEVICE_REPS times (median, min, max and the raw values):
#   seq_write.*   sequential write bandwidth, O_DIRECT, 1 MiB blocks, a fresh
#                 file of DEVICE_SIZE (stops early after DEVICE_RUNTIME s)
#   randread_qd1.*, randread_qd32.*
#                 4 KiB random reads, O_DIRECT, queue depth 1 and 32, over a
#                 file of DEVICE_SIZE laid out once before the first run:
#                 IOPS and latency p50/p99/p99.9 (DEVICE_RUNTIME s each)
#   fdatasync.*   4 KiB appends, each followed by fdatasync: ops/s and the
#                 fdatasync latency p50/p99/p99.9 (DEVICE_RUNTIME s)
# The order of the four jobs is reversed on every other repetition, as the
# engines' order is in the other harnesses. See bench/device.md.
#
# Environment:
#   DEVICE_SIZE       file size, fio-style binary suffix K/M/G/T (default 1G);
#                     a whole number of MiB
#   DEVICE_RUNTIME    seconds per job and repetition (default 10)
#   DEVICE_REPS       repetitions (default 3, 1..15)
#   DEVICE_SEQ_DEPTH  queue depth of the sequential write (default 1; armdb
#                     has at most one buffer write in flight per shard)
#   DEVICE_IOENGINE   force fio's engine for the reads and the sequential write
#                     (default: io_uring if this fio and kernel run it, else
#                     libaio, else psync)
#
# Needs fio, and luajit with lua-cjson (both project dependencies) to read
# fio's JSON. Files go to a fresh directory under DIR, removed at the end,
# also on failure or ^C.
set -eu

die() {
    printf 'device.sh: %s\n' "$*" >&2
    exit 1
}
say() {
    printf 'device: %s\n' "$*" >&2
}

# A size such as 64M or 1G (binary, as fio reads it) in bytes.
parse_size() {
    local v=$1 n mult=1
    case $v in
    *[kK]) mult=1024 n=${v%?} ;;
    *[mM]) mult=$((1024 * 1024)) n=${v%?} ;;
    *[gG]) mult=$((1024 * 1024 * 1024)) n=${v%?} ;;
    *[tT]) mult=$((1024 * 1024 * 1024 * 1024)) n=${v%?} ;;
    *) n=$v ;;
    esac
    case $n in
    '' | *[!0-9]*) return 1 ;;
    esac
    [ "${#n}" -le 12 ] || return 1
    echo $((10#$n * mult))
}

# An integer in [lo, hi], or die naming the variable.
check_int() {
    local name=$1 v=$2 lo=$3 hi=$4
    case $v in
    '' | *[!0-9]*) die "$name must be an integer $lo..$hi, got '$v'" ;;
    esac
    if [ "${#v}" -gt 6 ] || [ "$((10#$v))" -lt "$lo" ] || [ "$((10#$v))" -gt "$hi" ]; then
        die "$name must be an integer $lo..$hi, got '$v'"
    fi
}

[ $# -le 1 ] || die "usage: bench/device.sh [DIR]"
base=${1:-${TMPDIR:-/tmp}}
[ -d "$base" ] || die "$base is not a directory"
base=$(cd "$base" && pwd -P)

size_arg=${DEVICE_SIZE:-1G}
size=$(parse_size "$size_arg") || die "DEVICE_SIZE must be a size such as 64M or 1G, got '$size_arg'"
mib=$((1024 * 1024))
if [ "$size" -lt "$mib" ] || [ $((size % mib)) -ne 0 ]; then
    die "DEVICE_SIZE must be a whole number of MiB, at least 1M, got '$size_arg'"
fi
runtime=${DEVICE_RUNTIME:-10}
check_int DEVICE_RUNTIME "$runtime" 1 3600
runtime=$((10#$runtime))
reps=${DEVICE_REPS:-3}
check_int DEVICE_REPS "$reps" 1 15
reps=$((10#$reps))
seq_depth=${DEVICE_SEQ_DEPTH:-1}
check_int DEVICE_SEQ_DEPTH "$seq_depth" 1 256
seq_depth=$((10#$seq_depth))

command -v fio >/dev/null || die "fio is not installed (apt-get install fio)"
command -v luajit >/dev/null || die "luajit is not installed (apt-get install luajit2)"
luajit -e 'require("cjson")' 2>/dev/null || die "lua-cjson is not installed (apt-get install lua-cjson)"

# The randread file stays for the whole run; a seq_write or fdatasync file
# exists beside it during its own job only.
avail=$(df -P -B1 "$base" | awk 'NR == 2 { print $4 }')
need=$((2 * size + 64 * mib))
[ "${avail:-0}" -ge "$need" ] ||
    die "$base has $((${avail:-0} / mib)) MiB free, the run needs $((need / mib)) MiB (lower DEVICE_SIZE)"

work=
fio_pid=
cleanup() {
    if [ -n "$fio_pid" ] && kill -0 "$fio_pid" 2>/dev/null; then
        kill "$fio_pid" 2>/dev/null || :
        wait "$fio_pid" 2>/dev/null || :
    fi
    if [ -n "$work" ]; then
        rm -rf -- "$work"
    fi
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
work=$(mktemp -d "$base/armdb-device.XXXXXX")
mkdir "$work/out"

# fio runs in the background so that a signal reaches the traps at once
# (bash waits for a foreground child before running a trap); its own
# stdout, with --output set, holds only notes, so it goes to stderr.
run_fio() {
    local out=$1
    shift
    fio --output-format=json --output="$out" --eta=never "$@" >&2 &
    fio_pid=$!
    local rc=0
    wait "$fio_pid" || rc=$?
    fio_pid=
    return "$rc"
}

# Reads fio's JSON output: `line FILE JOB` prints one progress line, `report
# DIR` the whole document from DIR/REP-JOB.json and the DEV_* variables.
cat >"$work/parse.lua" <<'LUA'
local cjson = require("cjson")

local function die(msg)
    io.stderr:write("device.sh: ", msg, "\n")
    os.exit(1)
end

local MIB = 1048576

-- The one job of a fio output file (numjobs > 1 is reported as one group).
local function load(path)
    local f, err = io.open(path, "rb")
    if not f then
        die(err)
    end
    local s = f:read("*a")
    f:close()
    -- fio may print notes ahead of the document.
    local start = s:find("{", 1, true)
    if not start then
        die(path .. ": no JSON in fio's output")
    end
    local ok, doc = pcall(cjson.decode, s:sub(start))
    if not ok then
        die(path .. ": " .. tostring(doc))
    end
    local job = type(doc.jobs) == "table" and doc.jobs[1]
    if type(job) ~= "table" then
        die(path .. ": no job in fio's output")
    end
    if job.error ~= 0 then
        die(path .. ": fio reports error " .. tostring(job.error))
    end
    return job
end

local function pct(path, lat, p)
    local v = type(lat) == "table" and type(lat.percentile) == "table" and lat.percentile[p]
    if type(v) ~= "number" then
        die(path .. ": no latency percentile " .. p)
    end
    return v / 1000
end

local function done(path, dir, kind)
    if type(dir) ~= "table" or type(dir.io_bytes) ~= "number" or dir.io_bytes <= 0 then
        die(path .. ": " .. kind .. " did no I/O")
    end
    return dir
end

-- The figures of one job, in output order: id suffix, what, unit, value.
local function figures(kind, path)
    local job = load(path)
    if kind == "seq_write" then
        local w = done(path, job.write, kind)
        return { { "bw", "sequential write bandwidth", "MiB/s", w.bw_bytes / MIB } }
    end
    local ops, lat, what
    if kind == "fdatasync" then
        ops = done(path, job.write, kind).iops
        lat = job.sync and job.sync.lat_ns
        what = { "4 KiB writes, each followed by fdatasync", "fdatasync latency" }
    else
        local r = done(path, job.read, kind)
        ops, lat = r.iops, r.lat_ns
        local qd = kind:match("qd(%d+)$")
        what = { "4 KiB random reads, queue depth " .. qd, "4 KiB random read latency, queue depth " .. qd }
    end
    return {
        { "ops", what[1], "ops/s", ops },
        { "lat_p50", what[2] .. ", p50", "us", pct(path, lat, "50.000000") },
        { "lat_p99", what[2] .. ", p99", "us", pct(path, lat, "99.000000") },
        { "lat_p99_9", what[2] .. ", p99.9", "us", pct(path, lat, "99.900000") },
    }
end

local function jstr(s)
    local esc = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return '"' .. (tostring(s):gsub('[%c"\\]', function(c)
        return esc[c] or string.format("\\u%04x", c:byte())
    end)) .. '"'
end

local function jnum(v)
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then
        return string.format("%d", v)
    end
    return string.format("%.3f", v)
end

-- An environment variable as a JSON string, number or null.
local function env(name, as_number)
    local v = os.getenv(name)
    if v == nil or v == "" then
        return "null"
    end
    if as_number then
        local n = tonumber(v)
        return n and jnum(n) or "null"
    end
    return jstr(v)
end

local function env_list(name)
    local t = {}
    for w in (os.getenv(name) or ""):gmatch("%S+") do
        t[#t + 1] = tonumber(w) and jnum(tonumber(w)) or jstr(w)
    end
    return "[" .. table.concat(t, ", ") .. "]"
end

local JOBS = { "seq_write", "randread_qd1", "randread_qd32", "fdatasync" }

-- What armdb's figure is divided by, per device figure (see bench/device.md).
local COMPARE = {
    ["seq_write.bw"] = "armdb sequential write bandwidth (fill bytes written to the device per second) / this",
    ["randread_qd1.ops"] = "armdb cold gets/s / this",
    ["randread_qd32.ops"] = "armdb cold get_many keys/s / this",
    ["fdatasync.ops"] = "armdb sync=always puts/s, 1 thread / this",
}

local function variant(kind)
    local engine = os.getenv("DEV_ENGINE") or "?"
    if kind == "seq_write" then
        return string.format("O_DIRECT, 1 MiB blocks, queue depth %s, %s, a fresh file",
            os.getenv("DEV_SEQ_DEPTH") or "?", engine)
    elseif kind == "fdatasync" then
        return "O_DIRECT, 4 KiB appends to a fresh file, psync, fdatasync after each"
    end
    local qd = tonumber(kind:match("qd(%d+)$"))
    if engine == "psync" and qd > 1 then
        return string.format("O_DIRECT, 4 KiB, psync, %d jobs of depth 1", qd)
    end
    return string.format("O_DIRECT, 4 KiB, queue depth %d, %s", qd, engine)
end

local function report(dir)
    local reps = tonumber(os.getenv("DEV_REPS"))
    local rows = {}
    for _, kind in ipairs(JOBS) do
        local per = {}
        for r = 1, reps do
            for i, fig in ipairs(figures(kind, string.format("%s/%d-%s.json", dir, r, kind))) do
                per[i] = per[i] or { fig = fig, runs = {} }
                per[i].runs[r] = fig[4]
            end
        end
        for _, p in ipairs(per) do
            local sorted = {}
            for i, v in ipairs(p.runs) do
                sorted[i] = v
            end
            table.sort(sorted)
            local n = #sorted
            local med = n % 2 == 1 and sorted[(n + 1) / 2] or (sorted[n / 2] + sorted[n / 2 + 1]) / 2
            local runs = {}
            for i, v in ipairs(p.runs) do
                runs[i] = string.format("%.3f", v)
            end
            local id = kind .. "." .. p.fig[1]
            rows[#rows + 1] = string.format(
                '    {"id": %s, "engine": "fio", "what": %s, "variant": %s, "unit": %s, '
                    .. '"median": %.3f, "min": %.3f, "max": %.3f, "runs": [%s]%s}',
                jstr(id), jstr(p.fig[2]), jstr(variant(kind)), jstr(p.fig[3]), med, sorted[1], sorted[n],
                table.concat(runs, ", "), COMPARE[id] and ', "compare": ' .. jstr(COMPARE[id]) or "")
        end
    end
    local out = {
        "{",
        '  "benchmark": "device",',
        '  "date": ' .. env("DEV_DATE") .. ",",
        '  "machine": {"cpu": ' .. env("DEV_CPU") .. ', "cores": ' .. env("DEV_CORES", true)
            .. ', "memory_bytes": ' .. env("DEV_MEM", true) .. ', "kernel": ' .. env("DEV_KERNEL")
            .. ', "load_before": ' .. env_list("DEV_LOAD_BEFORE") .. ', "load_after": '
            .. env_list("DEV_LOAD_AFTER") .. "},",
        '  "device": {"dir": ' .. env("DEV_DIR") .. ', "source": ' .. env("DEV_SOURCE") .. ', "disk": '
            .. env("DEV_DISK") .. ', "model": ' .. env("DEV_MODEL") .. ', "rotational": '
            .. env("DEV_ROTATIONAL", true) .. ', "scheduler": ' .. env("DEV_SCHEDULER")
            .. ', "logical_block_size": ' .. env("DEV_LBS", true) .. ', "filesystem": ' .. env("DEV_FSTYPE")
            .. ', "mount_options": ' .. env("DEV_MOUNTOPTS") .. "},",
        '  "fio": {"version": ' .. env("DEV_FIO_VERSION") .. ', "ioengine": ' .. env("DEV_ENGINE")
            .. ', "ioengine_fdatasync": "psync"},',
        '  "config": {"size_bytes": ' .. env("DEV_SIZE", true) .. ', "runtime_s": ' .. env("DEV_RUNTIME", true)
            .. ', "reps": ' .. env("DEV_REPS", true) .. ', "seq_write_depth": ' .. env("DEV_SEQ_DEPTH", true)
            .. ', "layout_seconds": ' .. env("DEV_LAYOUT_S", true) .. ', "wall_seconds": '
            .. env("DEV_WALL", true) .. "},",
        '  "results": [',
        table.concat(rows, ",\n"),
        "  ]",
        "}",
    }
    io.write(table.concat(out, "\n"), "\n")
end

local mode = arg[1]
if mode == "line" then
    local parts = {}
    for _, fig in ipairs(figures(arg[3], arg[2])) do
        parts[#parts + 1] = string.format("%s %.1f %s", fig[1], fig[4], fig[3])
    end
    io.write(arg[3], ": ", table.concat(parts, ", "), "\n")
elseif mode == "report" then
    report(arg[2])
else
    die("parse.lua: unknown mode " .. tostring(mode))
end
LUA

# --- what is measured -------------------------------------------------------

fio_version=$(fio --version)
src=$(findmnt -n -o SOURCE -T "$base" 2>/dev/null | head -n 1) || src=
fstype=$(findmnt -n -o FSTYPE -T "$base" 2>/dev/null | head -n 1) || fstype=
[ -n "$fstype" ] || fstype=$(stat -f -c %T "$base")
mountopts=$(findmnt -n -o OPTIONS -T "$base" 2>/dev/null | head -n 1) || mountopts=
# The whole disk behind the filesystem (the parent of a partition; the top of
# a device-mapper or md stack is left as it is), and what sysfs says of it.
disk='' model='' rotational='' scheduler='' lbs=''
case $src in
/dev/*)
    dev=$(readlink -f "$src")
    disk=$(lsblk -ndo PKNAME "$dev" 2>/dev/null | head -n 1) || disk=
    [ -n "$disk" ] || disk=$(basename "$dev")
    if [ -d "/sys/block/$disk" ]; then
        model=$(lsblk -ndo MODEL "/dev/$disk" 2>/dev/null | sed 's/ *$//') || model=
        rotational=$(cat "/sys/block/$disk/queue/rotational" 2>/dev/null) || rotational=
        scheduler=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "/sys/block/$disk/queue/scheduler" 2>/dev/null) || scheduler=
        lbs=$(cat "/sys/block/$disk/queue/logical_block_size" 2>/dev/null) || lbs=
    fi
    ;;
esac

# The engine of the reads and the sequential write: the first of io_uring,
# libaio, psync that runs a small O_DIRECT read job here (a kernel may have
# io_uring disabled, a fio build may lack an engine).
probe() {
    run_fio "$work/probe.json" --name=probe --filename="$work/probe" --size=1M --bs=4k \
        --rw=randread --direct=1 --ioengine="$1" --iodepth=4 2>"$work/probe.err"
}
if [ -n "${DEVICE_IOENGINE:-}" ]; then
    engine=$DEVICE_IOENGINE
    probe "$engine" || die "fio cannot run ioengine=$engine with O_DIRECT in $base: $(tail -n 3 "$work/probe.err")"
else
    engine=
    for e in io_uring libaio psync; do
        if probe "$e"; then
            engine=$e
            break
        fi
    done
    [ -n "$engine" ] ||
        die "fio cannot read with O_DIRECT in $base (a filesystem without O_DIRECT?): $(tail -n 3 "$work/probe.err")"
fi
rm -f -- "$work/probe"

say "$base on ${src:-?} ($fstype), disk ${disk:-?}; $fio_version, ioengine $engine"
say "$((size / mib)) MiB files, ${runtime} s per job, $reps repetitions"

load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
date_start=$(date '+%Y-%m-%d %H:%M:%S %z')
t0=$(date +%s%N)

# Laid out once, every block written, so that reads hit allocated blocks.
say "laying out the random-read file"
run_fio "$work/layout.json" --name=layout --filename="$work/randread" --size="$size" --bs=1M \
    --rw=write --direct=1 --ioengine=psync --fallocate=none ||
    die "fio failed to lay out $work/randread"
t1=$(date +%s%N)

common=(--direct=1 --lat_percentiles=1 --percentile_list=50:99:99.9)

job_seq_write() {
    local rc=0
    rm -f -- "$work/seqwrite"
    run_fio "$1" --name=seq_write --filename="$work/seqwrite" --size="$size" --bs=1M --rw=write \
        --ioengine="$engine" --iodepth="$seq_depth" --fallocate=none --runtime="$runtime" "${common[@]}" ||
        rc=$?
    rm -f -- "$work/seqwrite"
    return "$rc"
}
job_randread() {
    local qd=$1 out=$2
    local par=(--iodepth="$qd")
    # A synchronous engine keeps one I/O in flight per job: depth 32 is then
    # 32 jobs, reported as one group.
    if [ "$engine" = psync ] && [ "$qd" -gt 1 ]; then
        par=(--iodepth=1 --numjobs="$qd" --group_reporting)
    fi
    run_fio "$out" --name="randread_qd$qd" --filename="$work/randread" --size="$size" --bs=4k \
        --rw=randread --ioengine="$engine" "${par[@]}" --norandommap --randrepeat=0 \
        --time_based --runtime="$runtime" "${common[@]}"
}
job_randread_qd1() { job_randread 1 "$1"; }
job_randread_qd32() { job_randread 32 "$1"; }
job_fdatasync() {
    local rc=0
    rm -f -- "$work/fdatasync"
    run_fio "$1" --name=fdatasync --filename="$work/fdatasync" --size="$size" --bs=4k --rw=write \
        --ioengine=psync --fdatasync=1 --fallocate=none --runtime="$runtime" "${common[@]}" || rc=$?
    rm -f -- "$work/fdatasync"
    return "$rc"
}

for ((r = 1; r <= reps; r++)); do
    if [ $((r % 2)) -eq 1 ]; then
        order=(seq_write randread_qd1 randread_qd32 fdatasync)
    else
        order=(fdatasync randread_qd32 randread_qd1 seq_write)
    fi
    for j in "${order[@]}"; do
        out="$work/out/$r-$j.json"
        "job_$j" "$out" || die "fio failed in $j (repetition $r)"
        line=$(luajit "$work/parse.lua" line "$out" "$j") || exit 1
        say "rep $r/$reps $line"
    done
done

t2=$(date +%s%N)
doc=$(
    DEV_DATE=$date_start \
        DEV_CPU=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1) \
        DEV_CORES=$(nproc) \
        DEV_MEM=$(awk '/^MemTotal:/ { printf "%.0f", $2 * 1024 }' /proc/meminfo) \
        DEV_KERNEL=$(uname -srm) \
        DEV_LOAD_BEFORE=$load_before \
        DEV_LOAD_AFTER=$(cut -d ' ' -f 1-3 /proc/loadavg) \
        DEV_DIR=$base DEV_SOURCE=$src DEV_DISK=$disk DEV_MODEL=$model DEV_ROTATIONAL=$rotational \
        DEV_SCHEDULER=$scheduler DEV_LBS=$lbs DEV_FSTYPE=$fstype DEV_MOUNTOPTS=$mountopts \
        DEV_FIO_VERSION=$fio_version DEV_ENGINE=$engine \
        DEV_SIZE=$size DEV_RUNTIME=$runtime DEV_REPS=$reps DEV_SEQ_DEPTH=$seq_depth \
        DEV_LAYOUT_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') \
        DEV_WALL=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') \
        luajit "$work/parse.lua" report "$work/out"
) || exit 1
printf '%s\n' "$doc"
say "done in $(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.0f", (b - a) / 1e9 }') s"
