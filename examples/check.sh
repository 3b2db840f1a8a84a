#!/bin/sh
# check.sh SCRATCH_DIR: run import_events.lua and backup_nightly.lua (`make
# examples`) on a database in SCRATCH_DIR (started over) and check that
# each run exits 0 and prints what it should. The library and modules are
# those of the environment (make sets ARMDB_LIB and LUA_PATH to the build
# tree and the checkout). Exits 0 if all is as expected, 1 otherwise,
# saying which run and which line.
set -u
here=$(cd "$(dirname "$0")" && pwd -P)
armdb="$here/../bin/armdb"
scratch=${1:?usage: check.sh SCRATCH_DIR}
rm -rf "$scratch" && mkdir -p "$scratch" || exit 1
failed=0

# run NAME CMD...: run CMD, keep its output in $scratch/NAME.out, fail unless it exits 0.
run() {
    name=$1
    shift
    out="$scratch/$name.out"
    if ! "$@" >"$out" 2>&1; then
        echo "examples: $name exited $? ($*):"
        cat "$out"
        failed=1
    fi
}

# expect NAME LINE...: each LINE must be a line of NAME's output (exactly).
expect() {
    name=$1
    shift
    for line in "$@"; do
        if ! grep -qxF -- "$line" "$scratch/$name.out"; then
            echo "examples: $name: expected the line"
            printf "  %s\n" "$line"
            echo "in its output:"
            sed 's/^/  | /' "$scratch/$name.out"
            failed=1
        fi
    done
}

# expect_start NAME PREFIX: a line of NAME's output starts with PREFIX.
expect_start() {
    if ! cut -c1-${#2} "$scratch/$1.out" | grep -qxF -- "$2"; then
        echo "examples: $1: expected a line starting with"
        printf "  %s\n" "$2"
        echo "in its output:"
        sed 's/^/  | /' "$scratch/$1.out"
        failed=1
    fi
}

# The committed data file is what its generator makes.
luajit "$here/data/make_events.lua" >"$scratch/events.jsonl" || failed=1
if ! cmp -s "$scratch/events.jsonl" "$here/data/events.jsonl"; then
    echo "examples: data/events.jsonl differs from what data/make_events.lua writes"
    failed=1
fi

data="$scratch/data"
run import luajit "$here/import_events.lua" "$data"
expect import \
    "  lines     3005 read, 3000 imported, 5 rejected" \
    '  rejected  events.jsonl:979: no "key" or "key_hex"' \
    "  rejected  events.jsonl:1506: key is not an integer" \
    "  rejected  events.jsonl:2214: codec u64: -2210 is out of range 0..2^64-1" \
    '  rejected  events.jsonl:2793: no "value" or "value_hex"' \
    "  stored    3000 events" \
    "  ids       100001 to 103000 (key order), 400 users, 162 of them bought" \
    "ok"
expect_start import "  rejected  events.jsonl:413: malformed JSON: " # then cjson's words
# Again, through `armdb run`: the same keys, nothing more.
run import-again "$armdb" run "$here/import_events.lua" "$data"
expect import-again "  stored    3000 events" "ok"

backups="$scratch/backups"
run backup-1 luajit "$here/backup_nightly.lua" "$data" "$backups" --keep 2 --date 2026-01-01
expect backup-1 "  check     ok: 3000 keys equal, 0 written since the backup" \
    "  kept      1 of at most 2: 2026-01-01" "ok"
grep -q "^  backup    full, gsn " "$scratch/backup-1.out" || { echo "examples: backup-1 was not full"; failed=1; }

# Rerun the same day: brought up to date, nothing to apply.
run backup-2 luajit "$here/backup_nightly.lua" "$data" "$backups" --keep 2 --date 2026-01-01
expect backup-2 "  kept      1 of at most 2: 2026-01-01" "ok"
grep -q "^  backup    incremental (rerun), gsn [0-9]*, 0 changes applied$" "$scratch/backup-2.out" \
    || { echo "examples: backup-2 was not an empty incremental:"; cat "$scratch/backup-2.out"; failed=1; }

# Writes, then the next days: incremental from the day before, the oldest pruned.
"$armdb" put "$data/events" 200001 '{"type":"signup"}' >/dev/null || failed=1
"$armdb" del "$data/events" 100001 >/dev/null || failed=1
run backup-3 "$armdb" run "$here/backup_nightly.lua" "$data" "$backups" --keep 2 --date 2026-01-02
expect backup-3 "  check     ok: 3000 keys equal, 0 written since the backup" \
    "  kept      2 of at most 2: 2026-01-01 2026-01-02" "ok"
grep -q "^  backup    incremental (from 2026-01-01), gsn [0-9]*, 2 changes applied$" "$scratch/backup-3.out" \
    || { echo "examples: backup-3 was not incremental with 2 changes:"; cat "$scratch/backup-3.out"; failed=1; }
run backup-4 luajit "$here/backup_nightly.lua" "$data" "$backups" --keep 2 --date 2026-01-03
expect backup-4 "  kept      2 of at most 2: 2026-01-02 2026-01-03" "  removed   2026-01-01" "ok"

# The newest backup restores to the source's keys.
run restore "$armdb" restore "$backups/2026-01-03" "$scratch/restored" --check "$data"
run restored-get "$armdb" get "$scratch/restored/events" 200001
expect restored-get '{"type":"signup"}'

if [ "$failed" = 0 ]; then
    echo "examples: import_events.lua and backup_nightly.lua ok"
fi
exit "$failed"
