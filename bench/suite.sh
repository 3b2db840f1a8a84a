#!/bin/sh
# make bench: every harness of the suite in one run, then the report.
#
#   bench/suite.sh [RESULTS_DIR]
#
# Runs, in this order, each into RESULTS_DIR (default
# bench/results/run-YYYY-MM-DD-HHMM): the device's ceiling with fio
# (device.json), armdb against LMDB, RocksDB and LevelDB (engines.json),
# armdb's Lua API against ngx.shared.DICT in nginx and over HTTP
# (ngx.json), the binding against the C API (lua-vs-c.md), and then
# bench/report.lua: summary.md and the PNG charts. Progress goes to the
# terminal, each harness's own log to RESULTS_DIR/NAME.log.
#
# BENCH_KEYS (default 1M; 10M for the large run), BENCH_REPS (default 3)
# and TMPDIR (where stores and fio's files are made) apply to all of them;
# BENCH_ONLY="device engines ngx lua" runs a part; BENCH_ENGINES_ARGS adds
# options of build/bench-engines (bench/engines.md), and each harness reads
# its own variables too (bench/device.md, bench/ngx/README.md): a quick
# look is BENCH_KEYS=20k BENCH_REPS=1 DEVICE_SIZE=64M DEVICE_RUNTIME=2
# BENCH_NGX_DURATION=2 BENCH_ENGINES_ARGS="--sync-keys 500 --sizes 100". Run it as root on a
# quiet machine: the cold tests then drop the page cache.
set -eu
cd "$(dirname "$0")/.."
out=${1:-bench/results/run-$(date +%Y-%m-%d-%H%M)}
keys=${BENCH_KEYS:-1000000}
case $keys in
*[kK]) keys=$(( ${keys%?} * 1000 )) ;;
*[mM]) keys=$(( ${keys%?} * 1000000 )) ;;
esac
reps=${BENCH_REPS:-3}
only=${BENCH_ONLY:-device engines ngx lua}
mkdir -p "$out"
echo "bench: results in $out (keys $keys, repetitions $reps)"

want() { case " $only " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
step() {
    name=$1; shift
    echo "bench: $name ... (log: $out/$name.log)"
    start=$(date +%s)
    if ! "$@" 2>"$out/$name.log"; then
        echo "bench: $name failed; the end of its log:" >&2
        tail -20 "$out/$name.log" >&2
        exit 1
    fi
    echo "bench: $name done in $(( $(date +%s) - start )) s"
}

if want device; then
    step device sh -c 'DEVICE_REPS=$1 bench/device.sh "${TMPDIR:-/tmp}" >"$2/device.json"' sh "$reps" "$out"
fi
if want engines; then
    # shellcheck disable=SC2086 # BENCH_ENGINES_ARGS is a list of options
    step engines sh -c 'build/bench-engines --keys "$1" --reps "$2" $4 >"$3/engines.json"' sh "$keys" "$reps" "$out" \
        "${BENCH_ENGINES_ARGS:-}"
fi
if want ngx; then
    step ngx sh -c 'BENCH_REPS=$2 bench/ngx/run "$1" >"$3/ngx.json"' sh "$keys" "$reps" "$out"
fi
if want lua; then
    step lua sh -c 'luajit bench/lua_ops.lua "$1" "$2" >"$3/lua-vs-c.md"' sh "$keys" "$reps" "$out"
fi
luajit bench/report.lua "$out"
echo "bench: summary in $out/summary.md"
