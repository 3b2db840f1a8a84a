/*
 * core.c - the core benchmark: armdb against LMDB and LevelDB on the same
 * keys, values and machine, in one run.
 *
 * N random 16-byte keys, 100-byte values, one thread (four writers in one
 * of the durable tests), in a fresh directory under $TMPDIR (or /tmp) that
 * is removed at the end. Every figure is
 * measured BENCH_REPS times (the order of the engines is reversed on every
 * other repetition, so none always runs on a cooler or warmer machine) and
 * reported as median, min and max. The table goes to stdout, progress to
 * stderr, and everything, raw runs included, to a JSON file.
 *
 *   bench-core [JSON_PATH]    (default: bench/results/core-YYYY-MM-DD.json)
 *
 * Environment:
 *   BENCH_KEYS       keys per fill (default 1000000)
 *   BENCH_REPS       repetitions of every figure (default 3)
 *   BENCH_SYNC_KEYS  keys of the durable-put tests (default min(20000, keys))
 *   BENCH_COLD_KEYS  lookups of each cold-read test (default keys / 1000,
 *                    at least 100): a small sample, so that most of them
 *                    miss the page cache rather than hit pages that earlier
 *                    lookups of the same test (or the kernel's readahead
 *                    for them) brought in
 *   TMPDIR           where the stores are made
 *
 * Every read is checked: the value must be the one written, else the run
 * aborts. A benchmark of wrong answers measures nothing.
 */
#define _GNU_SOURCE
#include "armdb.h"

#include <leveldb/c.h>
#include <lmdb.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROG "bench-core"
#include "common.h"

enum {
    KEY_LEN = 16,
    VAL_LEN = 100,
    POOL_SIZE = 1 << 20, /* values are 100-byte windows into this random pool */
    MAX_REPS = 15,
    SYNC_THREADS = 4,
    LMDB_BATCH = 1000,
};

#define COLD_CACHE (8ull << 20) /* cache_size / LRU size of the cold tests */

/* ---- failures ---- */

#define LDB_OK(err)                                                                                          \
    do {                                                                                                     \
        if (err)                                                                                             \
            DIE("leveldb: %s", err);                                                                         \
    } while (0)

/* ---- the data set ---- */

static size_t g_nkeys, g_sync_keys, g_cold_keys;
static int g_reps;
static unsigned char *g_keys;           /* g_nkeys * KEY_LEN random bytes */
static unsigned char g_pool[POOL_SIZE]; /* random bytes the values are cut from */
static uint64_t g_hot_cache;            /* armdb cache_size / LevelDB LRU, hot tests */

static const unsigned char *key_of(size_t i) { return g_keys + i * KEY_LEN; }
static const unsigned char *val_of(size_t i)
{
    return g_pool + (size_t)((i * 2654435761ull) % (POOL_SIZE - VAL_LEN));
}

static void check_val(size_t i, const void *v, size_t vlen)
{
    if (vlen != VAL_LEN || memcmp(v, val_of(i), VAL_LEN) != 0)
        DIE("key %zu: wrong value read back (%zu bytes)", i, vlen);
}

static void make_data(void)
{
    uint64_t s = 0x61726d6462ull; /* fixed seed: every run uses the same keys */
    g_keys = malloc(g_nkeys * KEY_LEN);
    if (!g_keys)
        DIE("out of memory for %zu keys", g_nkeys);
    for (size_t i = 0; i < g_nkeys * KEY_LEN; i += 8) {
        uint64_t r = splitmix64(&s);
        memcpy(g_keys + i, &r, 8);
    }
    for (size_t i = 0; i < POOL_SIZE; i += 8) {
        uint64_t r = splitmix64(&s);
        memcpy(g_pool + i, &r, 8);
    }
}

/* ---- results ---- */

enum unit { OPS, MS, BYTES, COUNT, PER };

enum row {
    R_FILL_ARMDB,
    R_FILL_ARMDB_INTERVAL,
    R_FILL_LMDB,
    R_FILL_LMDB_BATCH,
    R_FILL_LEVELDB,
    R_FIRST_ARMDB,
    R_FIRST_LMDB,
    R_FIRST_LEVELDB,
    R_HOT_ARMDB,
    R_HOT_LMDB,
    R_HOT_LMDB_ONETXN,
    R_HOT_LEVELDB,
    R_HOT_MANY32,
    R_HOT_MANY256,
    R_HOT_HIT_ARMDB,
    R_COLD_ARMDB,
    R_COLD_LMDB,
    R_COLD_LMDB_NORA,
    R_COLD_LEVELDB,
    R_COLD_MANY32,
    R_COLD_MANY256,
    R_COLD_MISS_ARMDB,
    R_COLD_IO_ARMDB,
    R_COLD_IO_LMDB,
    R_COLD_IO_LEVELDB,
    R_COLD_KIB_ARMDB,
    R_COLD_KIB_LMDB,
    R_COLD_KIB_LEVELDB,
    R_SYNC_ARMDB,
    R_SYNC_ARMDB_MT,
    R_SYNC_LMDB,
    R_REOPEN_ARMDB,
    R_REOPEN_LMDB,
    R_REOPEN_LEVELDB,
    R_HINTS,
    R_SCANNED,
    R_INDEX_BPK,
    R_DISK_ARMDB,
    R_DISK_LMDB,
    R_DISK_LEVELDB,
    R_COUNT
};

/* role: 'A' the armdb figure of its section, 'P' a peer counted for "best
 * peer", 'p' a peer variant shown with its own ratio but not counted for
 * best (it is not a per-operation figure), ' ' no ratio. */
struct row_def {
    const char *id, *section, *label;
    enum unit unit;
    char role;
};

/* Sections of the table, in print order. */
#define S_FILL "fill, puts/s (no sync)"
#define S_FIRST "first read pass right after the fill, gets/s"
#define S_HOT "hot gets/s (random order, all keys)"
#define S_COLD "cold gets/s (reopen, caches dropped, 8 MiB cache)"
#define S_SYNC "durable puts/s (each put waits for fdatasync)"
#define S_REOPEN "reopen after a clean close, caches dropped"
#define S_SPACE "memory and disk"

static const struct row_def g_def[R_COUNT] = {
    [R_FILL_ARMDB] = {"fill.armdb.none", S_FILL, "armdb  sync=none, hot-pass cache", OPS, 'A'},
    [R_FILL_ARMDB_INTERVAL] = {"fill.armdb.interval", S_FILL, "armdb  defaults: sync=interval, 64 MiB cache",
                               OPS, ' '},
    [R_FILL_LMDB] = {"fill.lmdb.txn_per_put", S_FILL, "LMDB   one txn per put", OPS, 'P'},
    [R_FILL_LMDB_BATCH] = {"fill.lmdb.txn_per_1000", S_FILL, "LMDB   txns of 1000 puts (batched)", OPS, 'p'},
    [R_FILL_LEVELDB] = {"fill.leveldb", S_FILL, "LevelDB sync=false", OPS, 'P'},
    [R_FIRST_ARMDB] = {"first_pass.armdb", S_FIRST, "armdb", OPS, 'A'},
    [R_FIRST_LMDB] = {"first_pass.lmdb", S_FIRST, "LMDB   txn per get", OPS, 'P'},
    [R_FIRST_LEVELDB] = {"first_pass.leveldb", S_FIRST, "LevelDB", OPS, 'P'},
    [R_HOT_ARMDB] = {"hot_get.armdb", S_HOT, "armdb  armdb_get", OPS, 'A'},
    [R_HOT_LMDB] = {"hot_get.lmdb.txn_per_get", S_HOT, "LMDB   read txn per get (renew/reset)", OPS, 'P'},
    [R_HOT_LMDB_ONETXN] = {"hot_get.lmdb.one_txn", S_HOT, "LMDB   one read txn for the whole pass", OPS, 'p'},
    [R_HOT_LEVELDB] = {"hot_get.leveldb", S_HOT, "LevelDB", OPS, 'P'},
    [R_HOT_MANY32] = {"hot_get_many32.armdb", S_HOT, "armdb  get_many x32", OPS, ' '},
    [R_HOT_MANY256] = {"hot_get_many256.armdb", S_HOT, "armdb  get_many x256", OPS, ' '},
    [R_COLD_ARMDB] = {"cold_get.armdb", S_COLD, "armdb  armdb_get", OPS, 'A'},
    [R_COLD_LMDB] = {"cold_get.lmdb", S_COLD, "LMDB   read txn per get", OPS, 'P'},
    [R_COLD_LMDB_NORA] = {"cold_get.lmdb.nordahead", S_COLD, "LMDB   same, MDB_NORDAHEAD", OPS, 'p'},
    [R_COLD_LEVELDB] = {"cold_get.leveldb", S_COLD, "LevelDB", OPS, 'P'},
    [R_COLD_MANY32] = {"cold_get_many32.armdb", S_COLD, "armdb  get_many x32", OPS, ' '},
    [R_COLD_MANY256] = {"cold_get_many256.armdb", S_COLD, "armdb  get_many x256", OPS, ' '},
    [R_HOT_HIT_ARMDB] = {"hot_get.armdb.cache_hit_pct", S_HOT, "armdb  block cache hits, % of pages read",
                         PER, ' '},
    [R_COLD_MISS_ARMDB] = {"cold_get.armdb.cache_misses_per_get", S_COLD,
                           "armdb  cache misses (pages) per get", PER, ' '},
    [R_COLD_IO_ARMDB] = {"cold_get.armdb.device_reads_per_get", S_COLD, "armdb  device reads per get", PER,
                         ' '},
    [R_COLD_IO_LMDB] = {"cold_get.lmdb.device_reads_per_get", S_COLD, "LMDB   device reads per get", PER,
                        ' '},
    [R_COLD_IO_LEVELDB] = {"cold_get.leveldb.device_reads_per_get", S_COLD, "LevelDB device reads per get",
                           PER, ' '},
    [R_COLD_KIB_ARMDB] = {"cold_get.armdb.kib_read_per_get", S_COLD,
                          "armdb  KiB read from the device per get", PER, ' '},
    [R_COLD_KIB_LMDB] = {"cold_get.lmdb.kib_read_per_get", S_COLD, "LMDB   KiB read from the device per get",
                         PER, ' '},
    [R_COLD_KIB_LEVELDB] = {"cold_get.leveldb.kib_read_per_get", S_COLD,
                            "LevelDB KiB read from the device per get", PER, ' '},
    [R_SYNC_ARMDB] = {"durable_put.armdb.1t", S_SYNC, "armdb  sync=always, 1 thread", OPS, 'A'},
    [R_SYNC_ARMDB_MT] = {"durable_put.armdb.4t", S_SYNC, "armdb  sync=always, 4 threads", OPS, ' '},
    [R_SYNC_LMDB] = {"durable_put.lmdb.1t", S_SYNC, "LMDB   sync txn per put, 1 thread", OPS, 'P'},
    [R_REOPEN_ARMDB] = {"reopen_ms.armdb", S_REOPEN, "armdb  armdb_open, ms", MS, ' '},
    [R_REOPEN_LMDB] = {"reopen_ms.lmdb", S_REOPEN, "LMDB   mdb_env_open, ms", MS, ' '},
    [R_REOPEN_LEVELDB] = {"reopen_ms.leveldb", S_REOPEN, "LevelDB leveldb_open, ms", MS, ' '},
    [R_HINTS] = {"reopen.armdb.hints_loaded", S_REOPEN, "armdb  data files indexed from hints", COUNT, ' '},
    [R_SCANNED] = {"reopen.armdb.files_scanned", S_REOPEN, "armdb  data files scanned", COUNT, ' '},
    [R_INDEX_BPK] = {"index_bytes_per_key.armdb", S_SPACE, "armdb  index bytes per key", BYTES, ' '},
    [R_DISK_ARMDB] = {"disk_bytes.armdb", S_SPACE, "armdb  bytes on disk", BYTES, ' '},
    [R_DISK_LMDB] = {"disk_bytes.lmdb", S_SPACE, "LMDB   bytes on disk", BYTES, ' '},
    [R_DISK_LEVELDB] = {"disk_bytes.leveldb", S_SPACE, "LevelDB bytes on disk", BYTES, ' '},
};

static double g_runs[R_COUNT][MAX_REPS];
static int g_nruns[R_COUNT];

static void record(enum row r, double v)
{
    if (g_nruns[r] < MAX_REPS)
        g_runs[r][g_nruns[r]++] = v;
}

struct summary {
    double med, min, max;
    bool have;
};

static struct summary summarize(enum row r)
{
    struct summary s = {0, 0, 0, false};
    int n = g_nruns[r];
    if (n == 0)
        return s;
    double v[MAX_REPS];
    memcpy(v, g_runs[r], (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    s.min = v[0];
    s.max = v[n - 1];
    s.have = true;
    return s;
}

/* The armdb row of r's section, and its best counted peer. */
static enum row section_armdb(enum row r)
{
    for (int i = 0; i < R_COUNT; i++)
        if (g_def[i].role == 'A' && strcmp(g_def[i].section, g_def[r].section) == 0)
            return (enum row)i;
    return R_COUNT;
}

static enum row best_peer(enum row a)
{
    enum row best = R_COUNT;
    double bv = -1;
    for (int i = 0; i < R_COUNT; i++) {
        if (g_def[i].role != 'P' || strcmp(g_def[i].section, g_def[a].section) != 0)
            continue;
        struct summary s = summarize((enum row)i);
        if (s.have && s.med > bv) {
            bv = s.med;
            best = (enum row)i;
        }
    }
    return best;
}

/* armdb / peer for a rate row, or 0 when it has none. */
static double ratio_of(enum row r, enum row *vs)
{
    *vs = R_COUNT;
    if (g_def[r].role == ' ')
        return 0;
    enum row a = section_armdb(r);
    enum row p = g_def[r].role == 'A' ? best_peer(r) : r;
    if (a == R_COUNT || p == R_COUNT)
        return 0;
    struct summary sa = summarize(a), sp = summarize(p);
    if (!sa.have || !sp.have || sp.med <= 0)
        return 0;
    *vs = p;
    return sa.med / sp.med;
}

/* ---- device counters ---- */

/* The block device under the temp dir, as /proc/diskstats names it by
 * major:minor; 0:0 when there is none (tmpfs, overlay, btrfs subvolume). */

struct io_count {
    uint64_t reads, sectors;
    bool ok;
};

/* Reads completed and sectors read so far by the whole device: other
 * processes' reads count too, so the figure is an upper bound. */
static struct io_count io_now(void)
{
    struct io_count c = {0, 0, false};
    FILE *f = g_dev_major || g_dev_minor ? fopen("/proc/diskstats", "r") : NULL;
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        unsigned ma, mi;
        unsigned long long rd, merged, sect;
        if (sscanf(line, "%u %u %*s %llu %llu %llu", &ma, &mi, &rd, &merged, &sect) == 5 &&
            ma == g_dev_major && mi == g_dev_minor) {
            c = (struct io_count){rd, sect, true};
            break;
        }
    }
    if (f)
        fclose(f);
    return c;
}

/* Record device reads and KiB per lookup between a and now. */
static void record_io(enum row reads, enum row kib, struct io_count a, size_t lookups)
{
    struct io_count b = io_now();
    if (!a.ok || !b.ok)
        return;
    record(reads, (double)(b.reads - a.reads) / (double)lookups);
    record(kib, (double)(b.sectors - a.sectors) * 512 / 1024 / (double)lookups);
}

/* ---- armdb ---- */

static armdb *armdb_start(const char *dir, uint32_t sync_mode, uint64_t cache, bool create)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.sync_mode = sync_mode;
    o.cache_size = cache;
    o.flags = create ? ARMDB_CREATE : 0;
    armdb *db;
    ARMDB_OK(armdb_open(dir, &o, &db));
    return db;
}

static double armdb_fill(armdb *db, size_t n)
{
    double t = now_s();
    for (size_t i = 0; i < n; i++)
        ARMDB_OK(armdb_put(db, key_of(i), KEY_LEN, val_of(i), VAL_LEN));
    return (double)n / (now_s() - t);
}

static double armdb_gets(armdb *db, const uint32_t *order, size_t n)
{
    unsigned char buf[VAL_LEN * 2];
    double t = now_s();
    for (size_t i = 0; i < n; i++) {
        size_t vlen;
        ARMDB_OK(armdb_get(db, key_of(order[i]), KEY_LEN, buf, sizeof buf, &vlen));
        check_val(order[i], buf, vlen);
    }
    return (double)n / (now_s() - t);
}

static double armdb_gets_many(armdb *db, const uint32_t *order, size_t n, size_t batch)
{
    unsigned char *keys = malloc(batch * KEY_LEN), *out = malloc(batch * VAL_LEN);
    size_t *offs = malloc(batch * sizeof *offs), *vlens = malloc(batch * sizeof *vlens);
    int *rcs = malloc(batch * sizeof *rcs);
    if (!keys || !out || !offs || !vlens || !rcs)
        DIE("out of memory");
    double spent = 0;
    for (size_t i = 0; i < n; i += batch) {
        size_t b = n - i < batch ? n - i : batch;
        /* Gathering the keys is the caller's work in any batched API; it
         * is left out of the time. */
        for (size_t j = 0; j < b; j++)
            memcpy(keys + j * KEY_LEN, key_of(order[i + j]), KEY_LEN);
        double t = now_s();
        ARMDB_OK(armdb_get_many(db, keys, KEY_LEN, b, out, batch * VAL_LEN, offs, vlens, rcs));
        spent += now_s() - t;
        for (size_t j = 0; j < b; j++) {
            if (rcs[j] != 0)
                DIE("get_many: key %u: %s", order[i + j], armdb_strerror(rcs[j]));
            check_val(order[i + j], out + offs[j], vlens[j]);
        }
    }
    free(keys), free(out), free(offs), free(vlens), free(rcs);
    return (double)n / spent;
}

static void armdb_close_ok(armdb *db) { ARMDB_OK(armdb_close(db)); }

struct sync_arg {
    armdb *db;
    size_t from, to;
    pthread_barrier_t *go;
};

static void *sync_worker(void *p)
{
    struct sync_arg *a = p;
    pthread_barrier_wait(a->go);
    for (size_t i = a->from; i < a->to; i++)
        ARMDB_OK(armdb_put(a->db, key_of(i), KEY_LEN, val_of(i), VAL_LEN));
    return NULL;
}

/* Durable puts/s with `threads` writers sharing one handle in sync=always. */
static double armdb_durable(int threads)
{
    const char *dir = store_dir("armdb-sync");
    armdb *db = armdb_start(dir, ARMDB_SYNC_ALWAYS, 0, true);
    pthread_t th[SYNC_THREADS];
    struct sync_arg args[SYNC_THREADS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    for (int t = 0; t < threads; t++) {
        args[t] = (struct sync_arg){db, g_sync_keys * (size_t)t / (size_t)threads,
                                    g_sync_keys * (size_t)(t + 1) / (size_t)threads, &go};
        if (pthread_create(&th[t], NULL, sync_worker, &args[t]) != 0)
            DIE("pthread_create");
    }
    pthread_barrier_wait(&go);
    double t0 = now_s();
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
    double rate = (double)g_sync_keys / (now_s() - t0);
    pthread_barrier_destroy(&go);
    armdb_close_ok(db);
    rm_tree(dir);
    return rate;
}

static armdb_stat g_armdb_stat; /* of the last fill handle: backend, shards */

static void bench_armdb(const uint32_t *order, const uint32_t *order2)
{
    const char *dir = store_dir("armdb");
    size_t n = g_nkeys, cold = g_cold_keys;

    fprintf(stderr, "  armdb: fill (sync=none)\n");
    armdb *db = armdb_start(dir, ARMDB_SYNC_NONE, g_hot_cache, true);
    record(R_FILL_ARMDB, armdb_fill(db, n));
    ARMDB_OK(armdb_stats(db, &g_armdb_stat));
    fprintf(stderr, "  armdb: gets\n");
    record(R_FIRST_ARMDB, armdb_gets(db, order, n));
    armdb_stat s0, s1;
    ARMDB_OK(armdb_stats(db, &s0));
    record(R_HOT_ARMDB, armdb_gets(db, order2, n));
    ARMDB_OK(armdb_stats(db, &s1));
    uint64_t pages = (s1.cache_hits - s0.cache_hits) + (s1.cache_misses - s0.cache_misses);
    if (pages)
        record(R_HOT_HIT_ARMDB, 100.0 * (double)(s1.cache_hits - s0.cache_hits) / (double)pages);
    record(R_HOT_MANY32, armdb_gets_many(db, order, n, 32));
    record(R_HOT_MANY256, armdb_gets_many(db, order2, n, 256));
    armdb_close_ok(db);
    record(R_DISK_ARMDB, (double)disk_usage(dir));

    fprintf(stderr, "  armdb: reopen, cold gets\n");
    drop_caches(dir);
    double t = now_s();
    db = armdb_start(dir, ARMDB_SYNC_NONE, COLD_CACHE, false);
    record(R_REOPEN_ARMDB, (now_s() - t) * 1e3);
    armdb_stat st;
    ARMDB_OK(armdb_stats(db, &st));
    if (st.keys != n)
        DIE("armdb reopened with %" PRIu64 " keys, %zu written", st.keys, n);
    record(R_HINTS, (double)st.hints_loaded);
    record(R_SCANNED, (double)st.files_scanned);
    record(R_INDEX_BPK, (double)st.index_bytes_per_key);
    struct io_count io = io_now();
    record(R_COLD_ARMDB, armdb_gets(db, order, cold));
    record_io(R_COLD_IO_ARMDB, R_COLD_KIB_ARMDB, io, cold);
    ARMDB_OK(armdb_stats(db, &s1));
    record(R_COLD_MISS_ARMDB, (double)(s1.cache_misses - st.cache_misses) / (double)cold);
    armdb_close_ok(db);

    static const size_t batches[2] = {32, 256};
    static const enum row rows[2] = {R_COLD_MANY32, R_COLD_MANY256};
    for (int b = 0; b < 2; b++) {
        drop_caches(dir);
        db = armdb_start(dir, ARMDB_SYNC_NONE, COLD_CACHE, false);
        record(rows[b], armdb_gets_many(db, order, cold, batches[b]));
        armdb_close_ok(db);
    }
    rm_tree(dir);

    fprintf(stderr, "  armdb: fill (sync=interval)\n");
    dir = store_dir("armdb-interval");
    db = armdb_start(dir, ARMDB_SYNC_INTERVAL, 0, true);
    record(R_FILL_ARMDB_INTERVAL, armdb_fill(db, n));
    armdb_close_ok(db);
    rm_tree(dir);

    fprintf(stderr, "  armdb: durable puts (%zu keys, 1 and %d threads)\n", g_sync_keys, SYNC_THREADS);
    record(R_SYNC_ARMDB, armdb_durable(1));
    record(R_SYNC_ARMDB_MT, armdb_durable(SYNC_THREADS));
}

/* ---- LMDB ---- */

struct lmdb {
    MDB_env *env;
    MDB_dbi dbi;
};

static struct lmdb lmdb_start(const char *dir, unsigned flags)
{
    struct lmdb l;
    size_t map = ((g_nkeys * 512 + (256u << 20)) + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
    MDB_OK(mdb_env_create(&l.env));
    MDB_OK(mdb_env_set_mapsize(l.env, map));
    MDB_OK(mdb_env_open(l.env, dir, flags, 0644));
    MDB_txn *txn;
    MDB_OK(mdb_txn_begin(l.env, NULL, 0, &txn));
    MDB_OK(mdb_dbi_open(txn, NULL, 0, &l.dbi));
    MDB_OK(mdb_txn_commit(txn));
    return l;
}

static void lmdb_stop(struct lmdb *l) { mdb_env_close(l->env); }

/* Puts/s with one write transaction per `batch` puts. */
static double lmdb_fill(struct lmdb *l, size_t n, size_t batch)
{
    MDB_txn *txn = NULL;
    double t = now_s();
    for (size_t i = 0; i < n; i++) {
        if (!txn)
            MDB_OK(mdb_txn_begin(l->env, NULL, 0, &txn));
        MDB_val k = {KEY_LEN, (void *)key_of(i)}, v = {VAL_LEN, (void *)val_of(i)};
        MDB_OK(mdb_put(txn, l->dbi, &k, &v, 0));
        if ((i + 1) % batch == 0 || i + 1 == n) {
            MDB_OK(mdb_txn_commit(txn));
            txn = NULL;
        }
    }
    return (double)n / (now_s() - t);
}

/* Gets/s, each in its own read transaction (renewed, as a server would per
 * request), or all in one; the value is copied out, as armdb_get does. */
static double lmdb_gets(struct lmdb *l, const uint32_t *order, size_t n, bool one_txn)
{
    unsigned char buf[VAL_LEN * 2];
    MDB_txn *txn;
    MDB_OK(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn));
    if (!one_txn)
        mdb_txn_reset(txn);
    double t = now_s();
    for (size_t i = 0; i < n; i++) {
        if (!one_txn)
            MDB_OK(mdb_txn_renew(txn));
        MDB_val k = {KEY_LEN, (void *)key_of(order[i])}, v;
        MDB_OK(mdb_get(txn, l->dbi, &k, &v));
        if (v.mv_size > sizeof buf)
            DIE("LMDB: value of %zu bytes", v.mv_size);
        memcpy(buf, v.mv_data, v.mv_size);
        if (!one_txn)
            mdb_txn_reset(txn);
        check_val(order[i], buf, v.mv_size);
    }
    double rate = (double)n / (now_s() - t);
    mdb_txn_abort(txn);
    return rate;
}

static void bench_lmdb(const uint32_t *order, const uint32_t *order2)
{
    const unsigned nosync = MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP;
    const char *dir = store_dir("lmdb");
    size_t n = g_nkeys;

    fprintf(stderr, "  LMDB: fill (txn per put)\n");
    struct lmdb l = lmdb_start(dir, nosync);
    record(R_FILL_LMDB, lmdb_fill(&l, n, 1));
    fprintf(stderr, "  LMDB: gets\n");
    record(R_FIRST_LMDB, lmdb_gets(&l, order, n, false));
    record(R_HOT_LMDB, lmdb_gets(&l, order2, n, false));
    record(R_HOT_LMDB_ONETXN, lmdb_gets(&l, order, n, true));
    MDB_OK(mdb_env_sync(l.env, 1));
    lmdb_stop(&l);
    record(R_DISK_LMDB, (double)disk_usage(dir));

    fprintf(stderr, "  LMDB: reopen, cold gets\n");
    drop_caches(dir);
    double t = now_s();
    l = lmdb_start(dir, nosync);
    record(R_REOPEN_LMDB, (now_s() - t) * 1e3);
    struct io_count io = io_now();
    record(R_COLD_LMDB, lmdb_gets(&l, order, g_cold_keys, false));
    record_io(R_COLD_IO_LMDB, R_COLD_KIB_LMDB, io, g_cold_keys);
    lmdb_stop(&l);
    /* The kernel reads around every page fault of the map (read_ahead_kb);
     * LMDB's own switch for random reads turns that off. */
    drop_caches(dir);
    l = lmdb_start(dir, nosync | MDB_NORDAHEAD);
    record(R_COLD_LMDB_NORA, lmdb_gets(&l, order, g_cold_keys, false));
    lmdb_stop(&l);
    rm_tree(dir);

    fprintf(stderr, "  LMDB: fill (txns of %d)\n", LMDB_BATCH);
    dir = store_dir("lmdb-batch");
    l = lmdb_start(dir, nosync);
    record(R_FILL_LMDB_BATCH, lmdb_fill(&l, n, LMDB_BATCH));
    lmdb_stop(&l);
    rm_tree(dir);

    fprintf(stderr, "  LMDB: durable puts (%zu keys)\n", g_sync_keys);
    dir = store_dir("lmdb-sync");
    l = lmdb_start(dir, 0); /* the default: every commit is synced */
    record(R_SYNC_LMDB, lmdb_fill(&l, g_sync_keys, 1));
    lmdb_stop(&l);
    rm_tree(dir);
}

/* ---- LevelDB ---- */

struct ldb {
    leveldb_t *db;
    leveldb_options_t *opt;
    leveldb_cache_t *cache;
    leveldb_filterpolicy_t *bloom;
};

static struct ldb ldb_start(const char *dir, uint64_t cache)
{
    struct ldb l;
    char *err = NULL;
    l.opt = leveldb_options_create();
    l.cache = leveldb_cache_create_lru((size_t)cache);
    l.bloom = leveldb_filterpolicy_create_bloom(10);
    leveldb_options_set_create_if_missing(l.opt, 1);
    leveldb_options_set_cache(l.opt, l.cache);
    leveldb_options_set_filter_policy(l.opt, l.bloom);
    l.db = leveldb_open(l.opt, dir, &err);
    LDB_OK(err);
    return l;
}

static void ldb_stop(struct ldb *l)
{
    leveldb_close(l->db);
    leveldb_options_destroy(l->opt);
    leveldb_cache_destroy(l->cache);
    leveldb_filterpolicy_destroy(l->bloom);
}

static double ldb_fill(struct ldb *l, size_t n)
{
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(wo, 0);
    char *err = NULL;
    double t = now_s();
    for (size_t i = 0; i < n; i++) {
        leveldb_put(l->db, wo, (const char *)key_of(i), KEY_LEN, (const char *)val_of(i), VAL_LEN, &err);
        LDB_OK(err);
    }
    double rate = (double)n / (now_s() - t);
    leveldb_writeoptions_destroy(wo);
    return rate;
}

/* Gets/s through the C API, which returns each value in a malloc()ed copy. */
static double ldb_gets(struct ldb *l, const uint32_t *order, size_t n)
{
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    char *err = NULL;
    double t = now_s();
    for (size_t i = 0; i < n; i++) {
        size_t vlen;
        char *v = leveldb_get(l->db, ro, (const char *)key_of(order[i]), KEY_LEN, &vlen, &err);
        LDB_OK(err);
        if (!v)
            DIE("LevelDB: key %u not found", order[i]);
        check_val(order[i], v, vlen);
        leveldb_free(v);
    }
    double rate = (double)n / (now_s() - t);
    leveldb_readoptions_destroy(ro);
    return rate;
}

static void bench_leveldb(const uint32_t *order, const uint32_t *order2)
{
    const char *dir = store_dir("leveldb");
    fprintf(stderr, "  LevelDB: fill\n");
    struct ldb l = ldb_start(dir, g_hot_cache);
    record(R_FILL_LEVELDB, ldb_fill(&l, g_nkeys));
    fprintf(stderr, "  LevelDB: gets\n");
    record(R_FIRST_LEVELDB, ldb_gets(&l, order, g_nkeys));
    record(R_HOT_LEVELDB, ldb_gets(&l, order2, g_nkeys));
    ldb_stop(&l);
    record(R_DISK_LEVELDB, (double)disk_usage(dir));

    fprintf(stderr, "  LevelDB: reopen, cold gets\n");
    drop_caches(dir);
    double t = now_s();
    l = ldb_start(dir, COLD_CACHE);
    record(R_REOPEN_LEVELDB, (now_s() - t) * 1e3);
    struct io_count io = io_now();
    record(R_COLD_LEVELDB, ldb_gets(&l, order, g_cold_keys));
    record_io(R_COLD_IO_LEVELDB, R_COLD_KIB_LEVELDB, io, g_cold_keys);
    ldb_stop(&l);
    rm_tree(dir);
}

/* ---- output ---- */

static const char *fmt_num(double v, enum unit u, char *buf, size_t cap)
{
    if (u == MS || u == PER) {
        snprintf(buf, cap, u == MS ? "%.1f" : "%.2f", v);
        return buf;
    }
    char digits[32], *o = buf;
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t n = strlen(digits);
    for (size_t i = 0; i < n && (size_t)(o - buf) + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0)
            *o++ = ',';
        *o++ = digits[i];
    }
    *o = 0;
    return buf;
}

static const char *engine_of(enum row r)
{
    const char *l = g_def[r].label;
    return strncmp(l, "armdb", 5) == 0 ? "armdb" : strncmp(l, "LMDB", 4) == 0 ? "LMDB" : "LevelDB";
}

/* A label with its column padding squeezed out, for use inside a sentence. */
static const char *squeezed(const char *label, char *buf, size_t cap)
{
    size_t o = 0;
    for (const char *p = label; *p && o + 1 < cap; p++)
        if (!(*p == ' ' && p[1] == ' ') && !(*p == ' ' && o && buf[o - 1] == ' '))
            buf[o++] = *p;
    buf[o] = 0;
    return buf;
}

static void print_table(void)
{
    const char *sec = "";
    char a[48], b[48], c[48], d[96];
    printf("%-42s %14s %14s %14s   %s\n", "", "median", "min", "max", "armdb / peer");
    for (int i = 0; i < R_COUNT; i++) {
        struct summary s = summarize((enum row)i);
        if (!s.have)
            continue;
        if (strcmp(sec, g_def[i].section) != 0) {
            sec = g_def[i].section;
            printf("\n%s\n", sec);
        }
        printf("  %-40s %14s %14s %14s", g_def[i].label, fmt_num(s.med, g_def[i].unit, a, sizeof a),
               fmt_num(s.min, g_def[i].unit, b, sizeof b), fmt_num(s.max, g_def[i].unit, c, sizeof c));
        enum row vs;
        double ratio = ratio_of((enum row)i, &vs);
        if (ratio > 0 && g_def[i].role == 'A')
            printf("   %.2fx vs best peer (%s)", ratio, squeezed(g_def[vs].label, d, sizeof d));
        else if (ratio > 0)
            printf("   %.2fx", ratio);
        printf("\n");
    }
}

struct goal {
    const char *text;
    enum row armdb, peer;
    double need;
};

static const struct goal g_goals[] = {
    {"puts at least 10x LevelDB (sync=none, hot-pass cache)", R_FILL_ARMDB, R_FILL_LEVELDB, 10},
    {"puts at least 10x LevelDB (armdb defaults)", R_FILL_ARMDB_INTERVAL, R_FILL_LEVELDB, 10},
    {"puts at least 10x LMDB (one txn per put)", R_FILL_ARMDB, R_FILL_LMDB, 10},
    {"puts at least 10x LMDB (armdb defaults)", R_FILL_ARMDB_INTERVAL, R_FILL_LMDB, 10},
    {"puts at least 10x LMDB (txns of 1000 puts)", R_FILL_ARMDB, R_FILL_LMDB_BATCH, 10},
    {"hot gets at least 3x LMDB (read txn per get)", R_HOT_ARMDB, R_HOT_LMDB, 3},
    {"hot gets at least 3x LMDB (one read txn for the pass)", R_HOT_ARMDB, R_HOT_LMDB_ONETXN, 3},
};
enum { NGOALS = sizeof g_goals / sizeof g_goals[0] };

static double goal_ratio(const struct goal *g)
{
    struct summary a = summarize(g->armdb), p = summarize(g->peer);
    return a.have && p.have && p.med > 0 ? a.med / p.med : 0;
}

static void print_goals(void)
{
    char a[48], b[48];
    printf("\ngoals\n");
    for (int i = 0; i < NGOALS; i++) {
        const struct goal *g = &g_goals[i];
        double r = goal_ratio(g);
        printf("  %-54s %-7s %.2fx (%s vs %s)\n", g->text, r >= g->need ? "MET" : "NOT MET", r,
               fmt_num(summarize(g->armdb).med, OPS, a, sizeof a),
               fmt_num(summarize(g->peer).med, OPS, b, sizeof b));
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static const char *unit_name(enum unit u)
{
    return u == OPS ? "ops/s" : u == MS ? "ms" : u == BYTES ? "bytes" : u == PER ? "per get" : "count";
}

static void write_json(const char *path, const char *date, double wall, bool dropped_all)
{
    char dirbuf[PATH_MAX];
    snprintf(dirbuf, sizeof dirbuf, "%s", path);
    char *slash = strrchr(dirbuf, '/');
    if (slash) {
        *slash = 0;
        for (char *p = dirbuf + 1; *p; p++) /* mkdir -p */
            if (*p == '/') {
                *p = 0;
                mkdir(dirbuf, 0755);
                *p = '/';
            }
        mkdir(dirbuf, 0755);
    }
    FILE *f = fopen(path, "w");
    if (!f)
        DIE("cannot write %s: %s", path, strerror(errno));
    fprintf(f, "{\n  \"benchmark\": \"core\",\n  \"date\": ");
    json_str(f, date);
    fprintf(f, ",\n  \"armdb_version\": ");
    json_str(f, ARMDB_VERSION_STRING);
    fprintf(f, ",\n  \"machine\": {\"cpu\": ");
    json_str(f, g_m.cpu);
    fprintf(f, ", \"cores\": %ld, \"memory_bytes\": %" PRIu64 ", \"kernel\": ", g_m.cores, g_m.mem);
    json_str(f, g_m.kernel);
    fprintf(f, ", \"filesystem\": ");
    json_str(f, g_m.fs);
    fprintf(f, ", \"readahead_kb\": %ld", g_m.readahead_kb);
    fprintf(f, ", \"load_before\": [%.2f, %.2f, %.2f], \"load_after\": [%.2f, %.2f, %.2f]},\n",
            g_m.load_before[0], g_m.load_before[1], g_m.load_before[2], g_m.load_after[0], g_m.load_after[1],
            g_m.load_after[2]);
    fprintf(
        f,
        "  \"config\": {\"keys\": %zu, \"key_len\": %d, \"value_len\": %d, \"reps\": %d, \"sync_keys\": %zu, "
        "\"sync_threads\": %d, \"cold_keys\": %zu, \"hot_cache_bytes\": %" PRIu64
        ", \"cold_cache_bytes\": %llu, \"lmdb_batch\": %d, \"page_cache_dropped\": %s, "
        "\"armdb_shards\": %u, \"armdb_io_backend\": %s, \"armdb_direct_io\": %s, \"wall_seconds\": %.1f},\n",
        g_nkeys, KEY_LEN, VAL_LEN, g_reps, g_sync_keys, SYNC_THREADS, g_cold_keys, g_hot_cache, COLD_CACHE,
        LMDB_BATCH, dropped_all ? "\"all (drop_caches)\"" : "\"store files (fadvise DONTNEED)\"",
        g_armdb_stat.shards, g_armdb_stat.io_backend == ARMDB_IO_URING ? "\"io_uring\"" : "\"pwrite\"",
        g_armdb_stat.direct_io ? "true" : "false", wall);
    fprintf(f, "  \"results\": [\n");
    bool first = true;
    for (int i = 0; i < R_COUNT; i++) {
        struct summary s = summarize((enum row)i);
        if (!s.have)
            continue;
        fprintf(f, "%s    {\"id\": ", first ? "" : ",\n");
        first = false;
        json_str(f, g_def[i].id);
        fprintf(f, ", \"engine\": ");
        json_str(f, engine_of((enum row)i));
        fprintf(f, ", \"what\": ");
        json_str(f, g_def[i].section);
        fprintf(f, ", \"variant\": ");
        json_str(f, g_def[i].label);
        fprintf(f, ", \"unit\": \"%s\", \"median\": %.3f, \"min\": %.3f, \"max\": %.3f, \"runs\": [",
                unit_name(g_def[i].unit), s.med, s.min, s.max);
        for (int j = 0; j < g_nruns[i]; j++)
            fprintf(f, "%s%.3f", j ? ", " : "", g_runs[i][j]);
        fprintf(f, "]");
        enum row vs;
        double r = ratio_of((enum row)i, &vs);
        if (r > 0) {
            fprintf(f, ", \"armdb_ratio\": %.3f, \"ratio_vs\": ", r);
            json_str(f, g_def[vs].id);
        }
        fprintf(f, "}");
    }
    fprintf(f, "\n  ],\n  \"goals\": [\n");
    for (int i = 0; i < NGOALS; i++) {
        double r = goal_ratio(&g_goals[i]);
        fprintf(f, "    {\"goal\": ");
        json_str(f, g_goals[i].text);
        fprintf(f, ", \"ratio\": %.3f, \"need\": %.1f, \"met\": %s}%s\n", r, g_goals[i].need,
                r >= g_goals[i].need ? "true" : "false", i + 1 < NGOALS ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    if (fclose(f) != 0)
        DIE("cannot write %s", path);
}

/* ---- main ---- */

static size_t env_size(const char *name, size_t dflt, size_t lo, size_t hi)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        DIE("%s=%s: expected a number from %zu to %zu", name, s, lo, hi);
    return (size_t)v;
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: bench-core [JSON_PATH]   (env BENCH_KEYS, BENCH_REPS, BENCH_SYNC_KEYS, "
                        "BENCH_COLD_KEYS, TMPDIR)\n");
        return 2;
    }
    g_nkeys = env_size("BENCH_KEYS", 1000000, 1000, UINT32_MAX);
    g_reps = (int)env_size("BENCH_REPS", 3, 1, MAX_REPS);
    g_sync_keys = env_size("BENCH_SYNC_KEYS", g_nkeys < 20000 ? g_nkeys : 20000, SYNC_THREADS, g_nkeys);
    size_t cold = g_nkeys / 1000 < 100 ? 100 : g_nkeys / 1000;
    g_cold_keys = env_size("BENCH_COLD_KEYS", cold < g_nkeys ? cold : g_nkeys, 1, g_nkeys);
    /* Room for every entry several times over: the data set fits. */
    g_hot_cache = (uint64_t)g_nkeys * 256 < (64u << 20) ? (64u << 20) : (uint64_t)g_nkeys * 256;

    char date[32], stamp[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d", localtime(&now));
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S %z", localtime(&now));
    char json[PATH_MAX];
    if (argc == 2)
        snprintf(json, sizeof json, "%s", argv[1]);
    else
        snprintf(json, sizeof json, "bench/results/core-%s.json", date);

    tmp_create("armdb-bench");

    machine_probe();
    g_drop = drop_all_caches() ? DROP_ALL : DROP_FADVISE;
    bool dropped_all = g_drop == DROP_ALL;
    make_data();

    printf("armdb core benchmark, %s\n", stamp);
    printf("machine: %s, %ld cores, %.1f GiB RAM, %s\n", g_m.cpu, g_m.cores, (double)g_m.mem / (1u << 30),
           g_m.kernel);
    printf("temp dir: %s (%s), device readahead %ld KiB\n", g_m.fs, g_m.fsdev, g_m.readahead_kb);
    printf("load average at start: %.2f %.2f %.2f\n", g_m.load_before[0], g_m.load_before[1],
           g_m.load_before[2]);
    printf("keys: %zu x %d bytes, values %d bytes, one thread; %d repetitions (median, min, max)\n", g_nkeys,
           KEY_LEN, VAL_LEN, g_reps);
    printf("durable puts: %zu keys; cold reads: %zu lookups after each reopen\n", g_sync_keys, g_cold_keys);
    printf("page cache before cold tests: %s\n",
           dropped_all ? "dropped (sync; echo 3 > /proc/sys/vm/drop_caches)"
                       : "NOT dropped system-wide (not root): the store's files evicted with "
                         "posix_fadvise(DONTNEED)");
    fflush(stdout);

    double wall = now_s();
    for (int rep = 0; rep < g_reps; rep++) {
        uint32_t *order = shuffled(g_nkeys, 1000 + (uint64_t)rep);
        uint32_t *order2 = shuffled(g_nkeys, 2000 + (uint64_t)rep);
        fprintf(stderr, "repetition %d of %d%s\n", rep + 1, g_reps,
                rep % 2 ? " (engines in reverse order)" : "");
        if (rep % 2 == 0) {
            bench_armdb(order, order2);
            bench_lmdb(order, order2);
            bench_leveldb(order, order2);
        } else {
            bench_leveldb(order, order2);
            bench_lmdb(order, order2);
            bench_armdb(order, order2);
        }
        free(order);
        free(order2);
    }
    wall = now_s() - wall;
    if (getloadavg(g_m.load_after, 3) != 3)
        memset(g_m.load_after, 0, sizeof g_m.load_after);

    printf("armdb: %u shards, write backend %s, O_DIRECT %s, hot cache_size %" PRIu64 " MiB, cold %llu MiB\n",
           g_armdb_stat.shards, g_armdb_stat.io_backend == ARMDB_IO_URING ? "io_uring" : "pwrite",
           g_armdb_stat.direct_io ? "on" : "off", g_hot_cache >> 20, COLD_CACHE >> 20);
    printf("\n");
    print_table();
    print_goals();
    printf("\nload average at end: %.2f %.2f %.2f; %.0f s in all\n", g_m.load_after[0], g_m.load_after[1],
           g_m.load_after[2], wall);
    write_json(json, stamp, wall, dropped_all);
    printf("results: %s\n", json);
    return 0;
}
