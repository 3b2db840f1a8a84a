/*
 * engines.c - armdb against LMDB, RocksDB and LevelDB: the same workloads,
 * the same keys and values, in one run (issue 6, point 1).
 *
 * For each value size (100 B, 1 KiB, 4 KiB by default; keys are 16 random
 * bytes) and each engine: fillrandom, fillseq, overwrite, readrandom with a
 * hot cache and with a cold one, batched reads, a 90/10 read/write mix,
 * durable writes with 1 and 4 threads, reopen time, bytes on disk, resident
 * memory per key, armdb's index bytes per key, and scans in key order (full,
 * reverse, short ranges; armdb on an ordered store, the "armdb-ordered"
 * row). Two encrypted armdb rows run the same workloads as "armdb" when
 * named in --engines: "armdb-enc" (XChaCha20-Poly1305) and "armdb-aes"
 * (AES-256-GCM), stores created with a fixed 32-byte test key. Every
 * figure is measured
 * REPS times; the engines run in one order in even repetitions and in the
 * reverse order in odd ones, so machine drift hits all alike. The result is
 * one JSON document on stdout (median, min, max and the raw runs of every
 * figure); progress goes to stderr. bench/engines.md says exactly what each
 * workload does and why it is fair.
 *
 *   bench-engines [--keys N] [--reps N] [--sizes 100,1024,4096]
 *                 [--only WORKLOAD,..] [--engines armdb,lmdb,rocksdb,leveldb]
 *                 (also armdb-inline, armdb-ordered, armdb-enc, armdb-aes)
 *                 [--sync-keys N] [--cold-keys N] [--scan-ranges N]
 *                 [--durable-threads 1,4] [--drop all|fadvise]
 *
 * Stores are made in a fresh directory under $TMPDIR (or /tmp), removed at
 * the end, also on failure or ^C. Every value read is compared with the one
 * written; a wrong or missing value aborts the run (exit 1, no JSON).
 */
#define _GNU_SOURCE
#include "armdb.h"

#include <leveldb/c.h>
#include <lmdb.h>
#include <rocksdb/c.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROG "bench-engines"
#include "common.h"

enum {
    KEY_LEN = 16,
    POOL_SIZE = 1 << 20, /* values are windows into this random pool */
    MAX_VAL = 65536,
    MAX_REPS = 15,
    MAX_SIZES = 8,
    SYNC_THREADS = 4,
    MIX_WRITE_PCT = 10,
    INLINE_VLEN = 100, /* the fixed-length armdb row */
    MAX_ROWS = 4096,
    VERIFY_SAMPLE = 1000, /* keys read back (untimed) after a fill nothing else reads */
    SCAN_RANGE_LEN = 100, /* pairs of each short range */
    SCAN_RANGES = 20000,  /* short ranges per test: 2M pairs, a few seconds at 4 KiB */
};

#define COLD_CACHE (8ull << 20) /* cache of every engine in the cold tests */

static const size_t g_batches[2] = {32, 256};
/* Cold batched reads read at least this many batches of the larger size:
 * a sample of a few batches measures the first reads after an open, not a
 * rate to set against fio's seconds-long queue-depth runs. */
#define MGET_COLD_MIN_BATCHES 16


/* ---- failures ---- */

#define ERR_OK(what, err)                                                                                    \
    do {                                                                                                     \
        if (err)                                                                                             \
            DIE("%s: %s", what, err);                                                                        \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        DIE("out of memory (%zu bytes)", n);
    return p;
}

/* ---- clock, randomness, data set ---- */

static double g_t0; /* start of the run, for the progress lines */

/* A progress line on stderr, stamped with the seconds since the start. */
static void progress(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "[%7.1f s] ", now_s() - g_t0);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static size_t g_nkeys, g_sync_keys, g_cold_keys, g_scan_ranges;
static unsigned g_durable_threads = 3; /* bit 0: the 1-thread durable test, bit 1: the 4-thread one */
static int g_reps;
static size_t g_sizes[MAX_SIZES];
static int g_nsizes;
static int g_leveldb_files = 10000; /* lowered to what RLIMIT_NOFILE allows */
static size_t g_vlen;                   /* value size of the current round */
static unsigned char *g_keys;           /* g_nkeys * KEY_LEN random bytes */
static unsigned char g_pool[POOL_SIZE]; /* random bytes the values are cut from */
static uint8_t *g_gen;                  /* per key: which value it holds now */

/* Keys of each cold batched-read test. */
static size_t g_mget_cold_keys(void)
{
    size_t k = g_cold_keys > MGET_COLD_MIN_BATCHES * g_batches[1] ? g_cold_keys : MGET_COLD_MIN_BATCHES * g_batches[1];
    return k < g_nkeys ? k : g_nkeys;
}

static const unsigned char *key_of(size_t i) { return g_keys + i * KEY_LEN; }

/* Value `gen` of key i: a window of the random pool, so values do not
 * compress and each (key, generation) has its own bytes. */
static const unsigned char *val_of(size_t i, unsigned gen)
{
    return g_pool + (size_t)((i * 2654435761ull + gen * 40503ull) % (POOL_SIZE - g_vlen));
}

static void check_val(size_t i, const void *v, size_t vlen)
{
    if (vlen != g_vlen || memcmp(v, val_of(i, g_gen[i]), g_vlen) != 0)
        DIE("key %zu: wrong value read back (%zu bytes, %zu expected)", i, vlen, g_vlen);
}

static void make_data(void)
{
    uint64_t s = 0x61726d6462ull; /* fixed seed: every run uses the same keys */
    g_keys = xmalloc(g_nkeys * KEY_LEN);
    g_gen = xmalloc(g_nkeys);
    for (size_t i = 0; i < g_nkeys * KEY_LEN; i += 8) {
        uint64_t r = splitmix64(&s);
        memcpy(g_keys + i, &r, 8);
    }
    for (size_t i = 0; i < POOL_SIZE; i += 8) {
        uint64_t r = splitmix64(&s);
        memcpy(g_pool + i, &r, 8);
    }
}

static int cmp_key_idx(const void *a, const void *b)
{
    return memcmp(key_of(*(const uint32_t *)a), key_of(*(const uint32_t *)b), KEY_LEN);
}

/* The key indexes in ascending key order (bytewise, as all four compare). */
static uint32_t *sorted_order(void)
{
    uint32_t *o = xmalloc(g_nkeys * sizeof *o);
    for (size_t i = 0; i < g_nkeys; i++)
        o[i] = (uint32_t)i;
    qsort(o, g_nkeys, sizeof *o, cmp_key_idx);
    return o;
}

/* The 90/10 mix: key index in the low 31 bits, bit 31 set for a write. */
static uint32_t *mix_ops(size_t n, uint64_t seed)
{
    uint32_t *o = xmalloc(n * sizeof *o);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = splitmix64(&seed);
        o[i] = (uint32_t)((r >> 8) % g_nkeys) | ((r & 0xff) % 100 < MIX_WRITE_PCT ? 0x80000000u : 0);
    }
    return o;
}

/* ---- resident memory ---- */

struct rss {
    uint64_t vm, anon; /* bytes: VmRSS (anon + file + shmem), RssAnon */
};

static struct rss rss_now(void)
{
    struct rss r = {0, 0};
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            r.vm = kb * 1024;
        else if (sscanf(line, "RssAnon: %llu kB", &kb) == 1)
            r.anon = kb * 1024;
    }
    if (f)
        fclose(f);
    return r;
}

/* ---- results ---- */

struct row {
    char workload[24], variant[24], engine[16], unit[16];
    size_t vsize;
    double runs[MAX_REPS];
    int n;
};

static struct row g_rows[MAX_ROWS];
static int g_nrows;

static void record(const char *workload, const char *variant, const char *engine, const char *unit, double v)
{
    struct row *r = NULL;
    for (int i = 0; i < g_nrows && !r; i++)
        if (g_rows[i].vsize == g_vlen && !strcmp(g_rows[i].workload, workload) &&
            !strcmp(g_rows[i].variant, variant) && !strcmp(g_rows[i].engine, engine))
            r = &g_rows[i];
    if (!r) {
        if (g_nrows == MAX_ROWS)
            DIE("too many result rows");
        r = &g_rows[g_nrows++];
        snprintf(r->workload, sizeof r->workload, "%s", workload);
        snprintf(r->variant, sizeof r->variant, "%s", variant);
        snprintf(r->engine, sizeof r->engine, "%s", engine);
        snprintf(r->unit, sizeof r->unit, "%s", unit);
        r->vsize = g_vlen;
    }
    if (r->n < MAX_REPS)
        r->runs[r->n++] = v;
}

/* ---- workloads ---- */

enum workload {
    W_FILLRANDOM = 1 << 0,
    W_FILLSEQ = 1 << 1,
    W_OVERWRITE = 1 << 2,
    W_READ_HOT = 1 << 3,
    W_READ_COLD = 1 << 4,
    W_MGET_HOT = 1 << 5,
    W_MGET_COLD = 1 << 6,
    W_MIX = 1 << 7,
    W_DURABLE = 1 << 8,
    W_REOPEN = 1 << 9,
    W_DISK = 1 << 10,
    W_RSS = 1 << 11,
    W_SCAN_FULL = 1 << 12,
    W_SCAN_REVERSE = 1 << 13,
    W_SCAN_RANGE = 1 << 14,
    W_SCANS = W_SCAN_FULL | W_SCAN_REVERSE | W_SCAN_RANGE,
};

static const char *const g_wnames[] = {"fillrandom",      "fillseq",      "overwrite",     "readrandom_hot",
                                       "readrandom_cold", "multiget_hot", "multiget_cold", "mix",
                                       "durable",         "reopen",       "disk",          "rss",
                                       "scan_full",       "scan_reverse", "scan_range100"};
enum { NWORK = sizeof g_wnames / sizeof g_wnames[0] };
static unsigned g_only = (1u << NWORK) - 1;

static bool want(unsigned w) { return (g_only & w) != 0; }

/* ---- the engines behind one interface ---- */

struct eopts {
    uint64_t cache;      /* armdb cache_size, RocksDB block cache, LevelDB LRU */
    bool durable;        /* every write synced before it returns */
    uint32_t fixed_vlen; /* armdb only: value_len (inline values) */
    bool ordered;        /* armdb only: ARMDB_ORDERED (the others are always ordered) */
};

/* A batch of keys for get_batch; values come back packed into out. */
struct batch {
    size_t n;
    const unsigned char *keys; /* n * KEY_LEN bytes */
    const char **kptrs;        /* RocksDB: pointers into keys */
    size_t *ksizes;
    unsigned char *out;
    size_t cap;
    size_t *offs, *vlens;
    int *rcs;
    rocksdb_pinnableslice_t **slices;
    char **errs;
};

struct engine {
    const char *name;
    void *(*open)(const char *dir, const struct eopts *o);
    void (*close)(void *h);
    /* Thread-safe (the durable test calls it from 4 threads at once). */
    void (*put)(void *h, const unsigned char *k, const unsigned char *v, size_t vlen);
    /* Copies the value into buf; a missing key aborts the run. */
    void (*get)(void *h, const unsigned char *k, unsigned char *buf, size_t cap, size_t *vlen);
    void (*get_batch)(void *h, struct batch *b);
    /* A cursor in ascending key order from the first key >= lo (lo NULL:
     * from the first key), or descending from the last key (lo NULL only).
     * One open cursor per handle at a time, on the main thread. */
    void *(*scan_open)(void *h, const unsigned char *lo, bool reverse);
    /* The next pair (pointers valid until the next call), false at the end. */
    bool (*scan_next)(void *c, const void **k, size_t *klen, const void **v, size_t *vlen);
    void (*scan_close)(void *c);
};

/* -- armdb -- */

/* The key of the encrypted rows: fixed, so every run seals the same way. */
static const unsigned char g_test_key[32] = {
    0x61, 0x72, 0x6d, 0x64, 0x62, 0x2d, 0x62, 0x65, 0x6e, 0x63, 0x68, 0x2d, 0x6b, 0x65, 0x79, 0x00,
    0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
};

/* key NULL: a plain store; else encrypted with it (flags may add
 * ARMDB_CIPHER_AES). The same options create the store and reopen it. */
static void *armdb_open_with(const char *dir, const struct eopts *o, const unsigned char *key, uint32_t flags)
{
    armdb_options op;
    armdb_options_init(&op);
    op.key_len = KEY_LEN;
    op.value_len = o->fixed_vlen;
    op.sync_mode = o->durable ? ARMDB_SYNC_ALWAYS : ARMDB_SYNC_NONE;
    op.cache_size = o->cache;
    op.flags = ARMDB_CREATE | (o->ordered ? ARMDB_ORDERED : 0) | flags;
    op.encryption_key = key;
    armdb *db;
    ARMDB_OK(armdb_open(dir, &op, &db));
    return db;
}

static void *armdb_e_open(const char *dir, const struct eopts *o) { return armdb_open_with(dir, o, NULL, 0); }

static void *armdb_enc_e_open(const char *dir, const struct eopts *o)
{
    return armdb_open_with(dir, o, g_test_key, 0);
}

static void *armdb_aes_e_open(const char *dir, const struct eopts *o)
{
    return armdb_open_with(dir, o, g_test_key, ARMDB_CIPHER_AES);
}

static void armdb_e_close(void *h) { ARMDB_OK(armdb_close(h)); }

static void armdb_e_put(void *h, const unsigned char *k, const unsigned char *v, size_t vlen)
{
    ARMDB_OK(armdb_put(h, k, KEY_LEN, v, vlen));
}

static void armdb_e_get(void *h, const unsigned char *k, unsigned char *buf, size_t cap, size_t *vlen)
{
    ARMDB_OK(armdb_get(h, k, KEY_LEN, buf, cap, vlen));
}

static void armdb_e_get_batch(void *h, struct batch *b)
{
    ARMDB_OK(armdb_get_many(h, b->keys, KEY_LEN, b->n, b->out, b->cap, b->offs, b->vlens, b->rcs));
}

/* An iterator per scan or range: lo as the lower bound, no upper bound (a
 * short range stops by count, as the peers' cursors do). */
static void *armdb_e_scan_open(void *h, const unsigned char *lo, bool reverse)
{
    armdb_iter *it;
    ARMDB_OK(armdb_iter_open(h, lo, lo ? KEY_LEN : 0, NULL, 0, reverse ? ARMDB_ITER_REVERSE : 0, &it));
    return it;
}

static bool armdb_e_scan_next(void *c, const void **k, size_t *klen, const void **v, size_t *vlen)
{
    int rc = armdb_iter_next(c, k, klen, v, vlen);
    if (rc == ARMDB_NOTFOUND)
        return false;
    ARMDB_OK(rc);
    return true;
}

static void armdb_e_scan_close(void *c) { armdb_iter_close(c); }

/* -- LMDB -- */

struct lmdb {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *rtxn;          /* the main thread's read txn, reset between uses */
    MDB_cursor *cur;        /* the scans' cursor, renewed with rtxn */
    MDB_cursor_op op, step; /* the scan's next cursor op; the one after it */
    MDB_val lo;             /* MDB_SET_RANGE's key */
    bool nosync;
};

static void *lmdb_e_open(const char *dir, const struct eopts *o)
{
    struct lmdb *l = xmalloc(sizeof *l);
    /* Room for every value on its own overflow pages, rewritten several
     * times over; the map is sparse, so only what is used takes space. */
    size_t map = g_nkeys * (3 * g_vlen + 1024) + (512u << 20);
    map = (map + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
    l->nosync = !o->durable;
    MDB_OK(mdb_env_create(&l->env));
    MDB_OK(mdb_env_set_mapsize(l->env, map));
    MDB_OK(mdb_env_open(l->env, dir, l->nosync ? MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP : 0, 0644));
    MDB_txn *txn;
    MDB_OK(mdb_txn_begin(l->env, NULL, 0, &txn));
    MDB_OK(mdb_dbi_open(txn, NULL, 0, &l->dbi));
    MDB_OK(mdb_txn_commit(txn));
    MDB_OK(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &l->rtxn));
    mdb_txn_reset(l->rtxn);
    l->cur = NULL;
    return l;
}

static void lmdb_e_close(void *h)
{
    struct lmdb *l = h;
    if (l->cur)
        mdb_cursor_close(l->cur);
    mdb_txn_abort(l->rtxn);
    if (l->nosync)
        MDB_OK(mdb_env_sync(l->env, 1)); /* a clean close leaves the data on disk */
    mdb_env_close(l->env);
    free(l);
}

/* One write transaction per put (synced on commit when durable). */
static void lmdb_e_put(void *h, const unsigned char *k, const unsigned char *v, size_t vlen)
{
    struct lmdb *l = h;
    MDB_txn *txn;
    MDB_OK(mdb_txn_begin(l->env, NULL, 0, &txn));
    MDB_val kv = {KEY_LEN, (void *)k}, vv = {vlen, (void *)v};
    MDB_OK(mdb_put(txn, l->dbi, &kv, &vv, 0));
    MDB_OK(mdb_txn_commit(txn));
}

static void lmdb_copy(struct lmdb *l, const unsigned char *k, unsigned char *buf, size_t cap, size_t *vlen)
{
    MDB_val kv = {KEY_LEN, (void *)k}, vv;
    MDB_OK(mdb_get(l->rtxn, l->dbi, &kv, &vv));
    if (vv.mv_size > cap)
        DIE("LMDB: value of %zu bytes", vv.mv_size);
    memcpy(buf, vv.mv_data, vv.mv_size);
    *vlen = vv.mv_size;
}

/* A read transaction renewed and reset around each get (what a server does
 * per request); the value is copied out of the map, as armdb copies it. */
static void lmdb_e_get(void *h, const unsigned char *k, unsigned char *buf, size_t cap, size_t *vlen)
{
    struct lmdb *l = h;
    MDB_OK(mdb_txn_renew(l->rtxn));
    lmdb_copy(l, k, buf, cap, vlen);
    mdb_txn_reset(l->rtxn);
}

/* A loop of gets in one read transaction per batch. */
static void lmdb_e_get_batch(void *h, struct batch *b)
{
    struct lmdb *l = h;
    size_t off = 0;
    MDB_OK(mdb_txn_renew(l->rtxn));
    for (size_t i = 0; i < b->n; i++) {
        lmdb_copy(l, b->keys + i * KEY_LEN, b->out + off, b->cap - off, &b->vlens[i]);
        b->offs[i] = off;
        b->rcs[i] = 0;
        off += b->vlens[i];
    }
    mdb_txn_reset(l->rtxn);
}

/* A scan or range in a read transaction renewed for it, with one cursor
 * renewed in it (LMDB's way to reuse a read-only cursor): MDB_FIRST,
 * MDB_LAST or MDB_SET_RANGE, then MDB_NEXT or MDB_PREV. */
static void *lmdb_e_scan_open(void *h, const unsigned char *lo, bool reverse)
{
    struct lmdb *l = h;
    MDB_OK(mdb_txn_renew(l->rtxn));
    if (l->cur)
        MDB_OK(mdb_cursor_renew(l->rtxn, l->cur));
    else
        MDB_OK(mdb_cursor_open(l->rtxn, l->dbi, &l->cur));
    l->op = lo ? MDB_SET_RANGE : reverse ? MDB_LAST : MDB_FIRST;
    l->step = reverse ? MDB_PREV : MDB_NEXT;
    l->lo = (MDB_val){KEY_LEN, (void *)lo};
    return l;
}

static bool lmdb_e_scan_next(void *c, const void **k, size_t *klen, const void **v, size_t *vlen)
{
    struct lmdb *l = c;
    MDB_val kv = l->lo, vv;
    int rc = mdb_cursor_get(l->cur, &kv, &vv, l->op);
    l->op = l->step;
    if (rc == MDB_NOTFOUND)
        return false;
    MDB_OK(rc);
    *k = kv.mv_data, *klen = kv.mv_size;
    *v = vv.mv_data, *vlen = vv.mv_size;
    return true;
}

static void lmdb_e_scan_close(void *c)
{
    struct lmdb *l = c;
    mdb_txn_reset(l->rtxn);
}

/* -- RocksDB -- */

struct rdb {
    rocksdb_t *db;
    rocksdb_options_t *opt;
    rocksdb_block_based_table_options_t *bbto;
    rocksdb_cache_t *cache;
    rocksdb_column_family_handle_t *cf;
    rocksdb_writeoptions_t *wo;
    rocksdb_readoptions_t *ro;
    rocksdb_iterator_t *it; /* the open scan */
    bool started, reverse;
};

static char g_rocksdb_version[32] = "unknown";

/* RocksDB's version is in its C++ header only; its OPTIONS file says it. */
static void rocksdb_version_from(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "OPTIONS-", 8) != 0)
            continue;
        char path[PATH_MAX + 300], line[256];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, " rocksdb_version=%31s", g_rocksdb_version) == 1)
                break;
        if (f)
            fclose(f);
        break;
    }
    if (d)
        closedir(d);
}

static void *rocksdb_e_open(const char *dir, const struct eopts *o)
{
    struct rdb *r = xmalloc(sizeof *r);
    char *err = NULL;
    r->opt = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(r->opt, 1);
    rocksdb_options_set_compression(r->opt, rocksdb_no_compression);
    r->bbto = rocksdb_block_based_options_create();
    r->cache = rocksdb_cache_create_lru((size_t)o->cache);
    rocksdb_block_based_options_set_block_cache(r->bbto, r->cache);
    /* The table options take ownership of the policy. */
    rocksdb_block_based_options_set_filter_policy(r->bbto, rocksdb_filterpolicy_create_bloom(10));
    rocksdb_options_set_block_based_table_factory(r->opt, r->bbto);
    const char *names[1] = {"default"};
    const rocksdb_options_t *cfo[1] = {r->opt};
    r->db = rocksdb_open_column_families(r->opt, dir, 1, names, cfo, &r->cf, &err);
    ERR_OK("rocksdb_open", err);
    r->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->wo, o->durable);
    r->ro = rocksdb_readoptions_create();
    if (!strcmp(g_rocksdb_version, "unknown"))
        rocksdb_version_from(dir);
    return r;
}

static void rocksdb_e_close(void *h)
{
    struct rdb *r = h;
    rocksdb_column_family_handle_destroy(r->cf);
    rocksdb_close(r->db);
    rocksdb_writeoptions_destroy(r->wo);
    rocksdb_readoptions_destroy(r->ro);
    rocksdb_options_destroy(r->opt);
    rocksdb_block_based_options_destroy(r->bbto);
    rocksdb_cache_destroy(r->cache);
    free(r);
}

static void rocksdb_e_put(void *h, const unsigned char *k, const unsigned char *v, size_t vlen)
{
    struct rdb *r = h;
    char *err = NULL;
    rocksdb_put(r->db, r->wo, (const char *)k, KEY_LEN, (const char *)v, vlen, &err);
    ERR_OK("rocksdb_put", err);
}

/* Get into a pinnable slice (no malloc of the value) and copy it out. */
static void rocksdb_e_get(void *h, const unsigned char *k, unsigned char *buf, size_t cap, size_t *vlen)
{
    struct rdb *r = h;
    char *err = NULL;
    rocksdb_pinnableslice_t *s = rocksdb_get_pinned(r->db, r->ro, (const char *)k, KEY_LEN, &err);
    ERR_OK("rocksdb_get_pinned", err);
    if (!s)
        DIE("RocksDB: key not found");
    const char *v = rocksdb_pinnableslice_value(s, vlen);
    if (*vlen > cap)
        DIE("RocksDB: value of %zu bytes", *vlen);
    memcpy(buf, v, *vlen);
    rocksdb_pinnableslice_destroy(s);
}

/* MultiGet (the batched implementation) into pinnable slices, copied out. */
static void rocksdb_e_get_batch(void *h, struct batch *b)
{
    struct rdb *r = h;
    rocksdb_batched_multi_get_cf(r->db, r->ro, r->cf, b->n, b->kptrs, b->ksizes, b->slices, b->errs, false);
    size_t off = 0;
    for (size_t i = 0; i < b->n; i++) {
        ERR_OK("rocksdb_batched_multi_get_cf", b->errs[i]);
        if (!b->slices[i])
            DIE("RocksDB: key not found in a batch");
        size_t vl;
        const char *v = rocksdb_pinnableslice_value(b->slices[i], &vl);
        if (vl > b->cap - off)
            DIE("RocksDB: value of %zu bytes", vl);
        memcpy(b->out + off, v, vl);
        b->offs[i] = off;
        b->vlens[i] = vl;
        b->rcs[i] = 0;
        off += vl;
        rocksdb_pinnableslice_destroy(b->slices[i]);
    }
}

/* An iterator per scan or range (default ReadOptions): Seek, SeekToFirst
 * or SeekToLast, then Next or Prev; keys and values are slices into its
 * blocks. */
static void *rocksdb_e_scan_open(void *h, const unsigned char *lo, bool reverse)
{
    struct rdb *r = h;
    r->it = rocksdb_create_iterator(r->db, r->ro);
    if (lo)
        rocksdb_iter_seek(r->it, (const char *)lo, KEY_LEN);
    else if (reverse)
        rocksdb_iter_seek_to_last(r->it);
    else
        rocksdb_iter_seek_to_first(r->it);
    r->started = false;
    r->reverse = reverse;
    return r;
}

static bool rocksdb_e_scan_next(void *c, const void **k, size_t *klen, const void **v, size_t *vlen)
{
    struct rdb *r = c;
    if (r->started && r->reverse)
        rocksdb_iter_prev(r->it);
    else if (r->started)
        rocksdb_iter_next(r->it);
    r->started = true;
    if (!rocksdb_iter_valid(r->it)) {
        char *err = NULL;
        rocksdb_iter_get_error(r->it, &err);
        ERR_OK("rocksdb_iter", err);
        return false;
    }
    *k = rocksdb_iter_key(r->it, klen);
    *v = rocksdb_iter_value(r->it, vlen);
    return true;
}

static void rocksdb_e_scan_close(void *c)
{
    struct rdb *r = c;
    rocksdb_iter_destroy(r->it);
    r->it = NULL;
}

/* -- LevelDB -- */

struct ldb {
    leveldb_t *db;
    leveldb_options_t *opt;
    leveldb_cache_t *cache;
    leveldb_filterpolicy_t *bloom;
    leveldb_writeoptions_t *wo;
    leveldb_readoptions_t *ro;
    leveldb_iterator_t *it; /* the open scan */
    bool started, reverse;
};

static void *leveldb_e_open(const char *dir, const struct eopts *o)
{
    struct ldb *l = xmalloc(sizeof *l);
    char *err = NULL;
    l->opt = leveldb_options_create();
    l->cache = leveldb_cache_create_lru((size_t)o->cache);
    l->bloom = leveldb_filterpolicy_create_bloom(10);
    leveldb_options_set_create_if_missing(l->opt, 1);
    leveldb_options_set_cache(l->opt, l->cache);
    leveldb_options_set_filter_policy(l->opt, l->bloom);
    leveldb_options_set_compression(l->opt, leveldb_no_compression);
    /* Room in the table cache for every table of the largest data set (4 GB
     * in 2 MiB tables), as RocksDB's default keeps all its files open. */
    leveldb_options_set_max_open_files(l->opt, g_leveldb_files);
    l->db = leveldb_open(l->opt, dir, &err);
    ERR_OK("leveldb_open", err);
    l->wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(l->wo, o->durable);
    l->ro = leveldb_readoptions_create();
    return l;
}

static void leveldb_e_close(void *h)
{
    struct ldb *l = h;
    leveldb_close(l->db);
    leveldb_writeoptions_destroy(l->wo);
    leveldb_readoptions_destroy(l->ro);
    leveldb_options_destroy(l->opt);
    leveldb_cache_destroy(l->cache);
    leveldb_filterpolicy_destroy(l->bloom);
    free(l);
}

static void leveldb_e_put(void *h, const unsigned char *k, const unsigned char *v, size_t vlen)
{
    struct ldb *l = h;
    char *err = NULL;
    leveldb_put(l->db, l->wo, (const char *)k, KEY_LEN, (const char *)v, vlen, &err);
    ERR_OK("leveldb_put", err);
}

/* The C API returns each value in a malloc()ed copy: copied out and freed. */
static void leveldb_e_get(void *h, const unsigned char *k, unsigned char *buf, size_t cap, size_t *vlen)
{
    struct ldb *l = h;
    char *err = NULL;
    char *v = leveldb_get(l->db, l->ro, (const char *)k, KEY_LEN, vlen, &err);
    ERR_OK("leveldb_get", err);
    if (!v)
        DIE("LevelDB: key not found");
    if (*vlen > cap)
        DIE("LevelDB: value of %zu bytes", *vlen);
    memcpy(buf, v, *vlen);
    leveldb_free(v);
}

/* A loop of gets (LevelDB has no batched read). */
static void leveldb_e_get_batch(void *h, struct batch *b)
{
    size_t off = 0;
    for (size_t i = 0; i < b->n; i++) {
        leveldb_e_get(h, b->keys + i * KEY_LEN, b->out + off, b->cap - off, &b->vlens[i]);
        b->offs[i] = off;
        b->rcs[i] = 0;
        off += b->vlens[i];
    }
}

/* An iterator per scan or range, as for RocksDB. */
static void *leveldb_e_scan_open(void *h, const unsigned char *lo, bool reverse)
{
    struct ldb *l = h;
    l->it = leveldb_create_iterator(l->db, l->ro);
    if (lo)
        leveldb_iter_seek(l->it, (const char *)lo, KEY_LEN);
    else if (reverse)
        leveldb_iter_seek_to_last(l->it);
    else
        leveldb_iter_seek_to_first(l->it);
    l->started = false;
    l->reverse = reverse;
    return l;
}

static bool leveldb_e_scan_next(void *c, const void **k, size_t *klen, const void **v, size_t *vlen)
{
    struct ldb *l = c;
    if (l->started && l->reverse)
        leveldb_iter_prev(l->it);
    else if (l->started)
        leveldb_iter_next(l->it);
    l->started = true;
    if (!leveldb_iter_valid(l->it)) {
        char *err = NULL;
        leveldb_iter_get_error(l->it, &err);
        ERR_OK("leveldb_iter", err);
        return false;
    }
    *k = leveldb_iter_key(l->it, klen);
    *v = leveldb_iter_value(l->it, vlen);
    return true;
}

static void leveldb_e_scan_close(void *c)
{
    struct ldb *l = c;
    leveldb_iter_destroy(l->it);
    l->it = NULL;
}

/* armdb-enc and armdb-aes run only when named in --engines (not by default). */
enum {
    E_ARMDB,
    E_ARMDB_INLINE,
    E_ARMDB_ORDERED,
    E_LMDB,
    E_ROCKSDB,
    E_LEVELDB,
    E_ARMDB_ENC,
    E_ARMDB_AES,
    E_COUNT
};

#define ARMDB_E_REST                                                                                         \
    armdb_e_close, armdb_e_put, armdb_e_get, armdb_e_get_batch, armdb_e_scan_open, armdb_e_scan_next,        \
        armdb_e_scan_close
#define ARMDB_E_FNS armdb_e_open, ARMDB_E_REST

static const struct engine g_eng[E_COUNT] = {
    [E_ARMDB] = {"armdb", ARMDB_E_FNS},
    [E_ARMDB_INLINE] = {"armdb-inline", ARMDB_E_FNS},
    [E_ARMDB_ORDERED] = {"armdb-ordered", ARMDB_E_FNS},
    [E_LMDB] = {"lmdb", lmdb_e_open, lmdb_e_close, lmdb_e_put, lmdb_e_get, lmdb_e_get_batch, lmdb_e_scan_open,
                lmdb_e_scan_next, lmdb_e_scan_close},
    [E_ROCKSDB] = {"rocksdb", rocksdb_e_open, rocksdb_e_close, rocksdb_e_put, rocksdb_e_get,
                   rocksdb_e_get_batch, rocksdb_e_scan_open, rocksdb_e_scan_next, rocksdb_e_scan_close},
    [E_LEVELDB] = {"leveldb", leveldb_e_open, leveldb_e_close, leveldb_e_put, leveldb_e_get,
                   leveldb_e_get_batch, leveldb_e_scan_open, leveldb_e_scan_next, leveldb_e_scan_close},
    [E_ARMDB_ENC] = {"armdb-enc", armdb_enc_e_open, ARMDB_E_REST},
    [E_ARMDB_AES] = {"armdb-aes", armdb_aes_e_open, ARMDB_E_REST},
};
static unsigned g_engines = (1u << E_ARMDB) | (1u << E_LMDB) | (1u << E_ROCKSDB) | (1u << E_LEVELDB);

/* ---- timed loops (clock around the calls only) ---- */

/* Puts/s of keys[order[0..n)] (order NULL: index order), each key getting
 * its next value generation when `next_gen`. */
static double run_puts(const struct engine *e, void *h, const uint32_t *order, size_t n, bool next_gen)
{
    double t = now_s();
    for (size_t j = 0; j < n; j++) {
        size_t i = order ? order[j] : j;
        if (next_gen)
            g_gen[i]++;
        e->put(h, key_of(i), val_of(i, g_gen[i]), g_vlen);
    }
    return (double)n / (now_s() - t);
}

/* Gets/s of keys[order[0..n)], each value checked (inside the time). */
static double run_gets(const struct engine *e, void *h, const uint32_t *order, size_t n)
{
    size_t cap = g_vlen * 2;
    unsigned char *buf = xmalloc(cap);
    double t = now_s();
    for (size_t j = 0; j < n; j++) {
        size_t vlen;
        e->get(h, key_of(order[j]), buf, cap, &vlen);
        check_val(order[j], buf, vlen);
    }
    double rate = (double)n / (now_s() - t);
    free(buf);
    return rate;
}

/* Keys/s read in batches; gathering the keys and checking the values are
 * outside the time (the caller's work in any batched API). */
static double run_batches(const struct engine *e, void *h, const uint32_t *order, size_t n, size_t batch)
{
    struct batch b;
    unsigned char *keys = xmalloc(batch * KEY_LEN);
    b.keys = keys;
    b.kptrs = xmalloc(batch * sizeof *b.kptrs);
    b.ksizes = xmalloc(batch * sizeof *b.ksizes);
    b.cap = batch * g_vlen;
    b.out = xmalloc(b.cap);
    b.offs = xmalloc(batch * sizeof *b.offs);
    b.vlens = xmalloc(batch * sizeof *b.vlens);
    b.rcs = xmalloc(batch * sizeof *b.rcs);
    b.slices = xmalloc(batch * sizeof *b.slices);
    b.errs = xmalloc(batch * sizeof *b.errs);
    double spent = 0;
    for (size_t i = 0; i < n; i += batch) {
        b.n = n - i < batch ? n - i : batch;
        for (size_t j = 0; j < b.n; j++) {
            memcpy(keys + j * KEY_LEN, key_of(order[i + j]), KEY_LEN);
            b.kptrs[j] = (const char *)keys + j * KEY_LEN;
            b.ksizes[j] = KEY_LEN;
            b.rcs[j] = -1;
        }
        double t = now_s();
        e->get_batch(h, &b);
        spent += now_s() - t;
        for (size_t j = 0; j < b.n; j++) {
            if (b.rcs[j] != 0)
                DIE("%s: batch read of key %u: %s", e->name, order[i + j], armdb_strerror(b.rcs[j]));
            check_val(order[i + j], b.out + b.offs[j], b.vlens[j]);
        }
    }
    free(keys), free(b.kptrs), free(b.ksizes), free(b.out), free(b.offs), free(b.vlens), free(b.rcs);
    free(b.slices), free(b.errs);
    return (double)n / spent;
}

/* Ops/s of the 90/10 mix: reads checked, writes give the key its next value. */
static double run_mix(const struct engine *e, void *h, const uint32_t *ops, size_t n)
{
    size_t cap = g_vlen * 2;
    unsigned char *buf = xmalloc(cap);
    double t = now_s();
    for (size_t j = 0; j < n; j++) {
        size_t i = ops[j] & 0x7fffffffu;
        if (ops[j] & 0x80000000u) {
            g_gen[i]++;
            e->put(h, key_of(i), val_of(i, g_gen[i]), g_vlen);
        } else {
            size_t vlen;
            e->get(h, key_of(i), buf, cap, &vlen);
            check_val(i, buf, vlen);
        }
    }
    double rate = (double)n / (now_s() - t);
    free(buf);
    return rate;
}

/* Untimed: read back a sample of keys[order[0..n)] to prove the writes landed. */
static void verify_sample(const struct engine *e, void *h, const uint32_t *order, size_t n)
{
    size_t step = n / VERIFY_SAMPLE ? n / VERIFY_SAMPLE : 1;
    size_t cap = g_vlen * 2, vlen;
    unsigned char *buf = xmalloc(cap);
    for (size_t j = 0; j < n; j += step) {
        size_t i = order ? order[j] : j;
        e->get(h, key_of(i), buf, cap, &vlen);
        check_val(i, buf, vlen);
    }
    free(buf);
}

/* The pair a scan returned must be key i with its current value. */
static void check_pair(const struct engine *e, size_t i, const void *k, size_t klen, const void *v,
                       size_t vlen)
{
    if (klen != KEY_LEN || memcmp(k, key_of(i), KEY_LEN) != 0)
        DIE("%s: scan out of key order (key %zu expected)", e->name, i);
    check_val(i, v, vlen);
}

/* Keys/s of one scan of every key, ascending or descending; seq is the key
 * order. Each key and value is compared with what was written (inside the
 * time: it reads every byte of the value, the same for all engines). */
static double run_scan_full(const struct engine *e, void *h, const uint32_t *seq, bool reverse)
{
    size_t n = g_nkeys, j = 0, klen, vlen;
    const void *k, *v;
    double t = now_s();
    void *c = e->scan_open(h, NULL, reverse);
    for (; e->scan_next(c, &k, &klen, &v, &vlen); j++) {
        if (j == n)
            DIE("%s: scan returned more than the %zu keys written", e->name, n);
        check_pair(e, seq[reverse ? n - 1 - j : j], k, klen, v, vlen);
    }
    e->scan_close(c);
    double s = now_s() - t;
    if (j != n)
        DIE("%s: scan returned %zu keys, %zu written", e->name, j, n);
    return (double)n / s;
}

/* Ranges/s of short ranges: from key seq[starts[r]] (a key in the store),
 * the next SCAN_RANGE_LEN pairs, checked as above; the cursor is opened and
 * closed for each range, inside the time. */
static double run_scan_ranges(const struct engine *e, void *h, const uint32_t *seq, const uint32_t *starts,
                              size_t nr)
{
    size_t klen, vlen;
    const void *k, *v;
    double t = now_s();
    for (size_t r = 0; r < nr; r++) {
        const uint32_t *expect = seq + starts[r];
        void *c = e->scan_open(h, key_of(expect[0]), false);
        for (size_t j = 0; j < SCAN_RANGE_LEN; j++) {
            if (!e->scan_next(c, &k, &klen, &v, &vlen))
                DIE("%s: range ended after %zu keys", e->name, j);
            check_pair(e, expect[j], k, klen, v, vlen);
        }
        e->scan_close(c);
    }
    return (double)nr / (now_s() - t);
}

/* Start positions (in key order) of the short ranges: uniform over the keys
 * that have SCAN_RANGE_LEN - 1 keys after them, so every range is full. */
static uint32_t *range_starts(size_t n, uint64_t seed)
{
    uint32_t *o = xmalloc(n * sizeof *o);
    for (size_t i = 0; i < n; i++)
        o[i] = (uint32_t)(splitmix64(&seed) % (g_nkeys - SCAN_RANGE_LEN + 1));
    return o;
}

struct put_arg {
    const struct engine *e;
    void *h;
    size_t from, to;
    pthread_barrier_t *go;
};

static void *put_worker(void *p)
{
    struct put_arg *a = p;
    pthread_barrier_wait(a->go);
    for (size_t i = a->from; i < a->to; i++)
        a->e->put(a->h, key_of(i), val_of(i, 0), g_vlen);
    return NULL;
}

/* Durable puts/s of g_sync_keys keys by `threads` writers on one handle. */
static double run_durable(const struct engine *e, int threads)
{
    const char *dir = store_dir("durable");
    struct eopts o = {0, true, 0, false};
    o.cache = 64u << 20;
    void *h = e->open(dir, &o);
    pthread_t th[SYNC_THREADS];
    struct put_arg args[SYNC_THREADS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    for (int t = 0; t < threads; t++) {
        args[t] = (struct put_arg){e, h, g_sync_keys * (size_t)t / (size_t)threads,
                                   g_sync_keys * (size_t)(t + 1) / (size_t)threads, &go};
        if (pthread_create(&th[t], NULL, put_worker, &args[t]) != 0)
            DIE("pthread_create");
    }
    pthread_barrier_wait(&go);
    double t0 = now_s();
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
    double rate = (double)g_sync_keys / (now_s() - t0);
    pthread_barrier_destroy(&go);
    memset(g_gen, 0, g_sync_keys);
    verify_sample(e, h, NULL, g_sync_keys);
    e->close(h);
    rm_tree(dir);
    return rate;
}

/* ---- one engine, one value size, one repetition ---- */

static uint64_t g_hot_cache;    /* of the current value size */
static armdb_stat g_armdb_stat; /* of the last armdb fill: backend, shards */

struct orders {
    const uint32_t *a, *b, *seq, *mix; /* two read orders, key order, mix ops */
    const uint32_t *ranges;            /* positions in seq where short ranges start */
};

static double stat_pct(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 0;
}

static void run_engine(int ei, const struct orders *ord)
{
    const struct engine *e = &g_eng[ei];
    const char *en = e->name;
    bool is_armdb = ei == E_ARMDB || ei == E_ARMDB_INLINE || ei == E_ARMDB_ORDERED || ei == E_ARMDB_ENC ||
                    ei == E_ARMDB_AES;
    bool inline_row = ei == E_ARMDB_INLINE;
    bool ordered_row = ei == E_ARMDB_ORDERED;
    bool extra_row = inline_row || ordered_row; /* rows of a few workloads only */
    /* armdb scans in key order on its ordered row only (the encrypted rows'
     * stores are unordered, as the armdb row's); the peers always. */
    bool scans = want(W_SCANS) && (ordered_row || !is_armdb);
    bool hot_reads = want(W_READ_HOT | W_MGET_HOT) && !ordered_row;
    size_t n = g_nkeys, cold = g_cold_keys;
    unsigned need_fill = W_FILLRANDOM | W_RSS | (scans ? W_SCANS : 0);
    if (!ordered_row)
        need_fill |= W_READ_HOT | W_MGET_HOT | W_DISK;
    if (!extra_row)
        need_fill |= W_READ_COLD | W_MGET_COLD | W_REOPEN | W_OVERWRITE | W_MIX;
    struct eopts hot = {g_hot_cache, false, inline_row ? INLINE_VLEN : 0, ordered_row};
    struct eopts cold_o = {COLD_CACHE, false, 0, false};

    if (want(need_fill)) {
        const char *dir = store_dir(en);
        memset(g_gen, 0, n);
        progress("  %s: fillrandom", en);
        malloc_trim(0);
        struct rss r0 = rss_now();
        void *h = e->open(dir, &hot);
        double rate = run_puts(e, h, NULL, n, false);
        struct rss r1 = rss_now();
        if (want(W_FILLRANDOM))
            record("fillrandom", "", en, "ops/s", rate);
        if (want(W_RSS)) {
            record("rss_per_key", "VmRSS", en, "bytes/key", ((double)r1.vm - (double)r0.vm) / (double)n);
            record("rss_per_key", "RssAnon", en, "bytes/key",
                   ((double)r1.anon - (double)r0.anon) / (double)n);
        }
        if (is_armdb) {
            armdb_stat st;
            ARMDB_OK(armdb_stats(h, &st));
            if (ei == E_ARMDB || !g_armdb_stat.shards)
                g_armdb_stat = st;
            if (want(W_RSS))
                record("index_bytes_per_key", "", en, "bytes/key", (double)st.index_bytes_per_key);
        }
        if (hot_reads) {
            progress("  %s: readrandom hot", en);
            (void)run_gets(e, h, ord->a, n); /* untimed warm-up: fills the caches */
            armdb_stat s0, s1;
            if (is_armdb)
                ARMDB_OK(armdb_stats(h, &s0));
            rate = run_gets(e, h, ord->b, n);
            if (want(W_READ_HOT))
                record("readrandom_hot", "", en, "ops/s", rate);
            if (is_armdb && want(W_READ_HOT)) {
                ARMDB_OK(armdb_stats(h, &s1));
                uint64_t hits = s1.cache_hits - s0.cache_hits, miss = s1.cache_misses - s0.cache_misses;
                if (hits + miss)
                    record("readrandom_hot", "cache_hit_pct", en, "%", stat_pct(hits, hits + miss));
            }
            for (int bi = 0; bi < 2 && want(W_MGET_HOT) && !inline_row; bi++) {
                char var[16];
                snprintf(var, sizeof var, "batch%zu", g_batches[bi]);
                record("multiget_hot", var, en, "ops/s",
                       run_batches(e, h, bi ? ord->b : ord->a, n, g_batches[bi]));
            }
        }
        if (scans) {
            progress("  %s: scans", en);
            if (!hot_reads)
                (void)run_gets(e, h, ord->a, n); /* untimed warm-up, as for the hot reads */
            if (want(W_SCAN_FULL))
                record("scan_full", "", en, "keys/s", run_scan_full(e, h, ord->seq, false));
            if (want(W_SCAN_REVERSE))
                record("scan_reverse", "", en, "keys/s", run_scan_full(e, h, ord->seq, true));
            if (want(W_SCAN_RANGE))
                record("scan_range100", "", en, "ranges/s",
                       run_scan_ranges(e, h, ord->seq, ord->ranges, g_scan_ranges));
        }
        e->close(h);
        if (want(W_DISK) && !extra_row)
            record("disk", "", en, "bytes", (double)disk_usage(dir));

        if (want(W_REOPEN | W_READ_COLD) && !extra_row) {
            progress("  %s: reopen, readrandom cold", en);
            drop_caches(dir);
            double t = now_s();
            h = e->open(dir, &cold_o);
            if (want(W_REOPEN))
                record("reopen", "", en, "ms", (now_s() - t) * 1e3);
            armdb_stat s0, s1;
            if (is_armdb)
                ARMDB_OK(armdb_stats(h, &s0));
            if (is_armdb && s0.keys != n)
                DIE("armdb reopened with %" PRIu64 " keys, %zu written", s0.keys, n);
            rate = run_gets(e, h, ord->a, cold);
            if (want(W_READ_COLD)) {
                record("readrandom_cold", "", en, "ops/s", rate);
                if (is_armdb) {
                    ARMDB_OK(armdb_stats(h, &s1));
                    record("readrandom_cold", "cache_misses_per_get", en, "pages/get",
                           (double)(s1.cache_misses - s0.cache_misses) / (double)cold);
                }
            }
            e->close(h);
        }
        for (int bi = 0; bi < 2 && want(W_MGET_COLD) && !extra_row; bi++) {
            progress("  %s: multiget cold x%zu", en, g_batches[bi]);
            char var[16];
            snprintf(var, sizeof var, "batch%zu", g_batches[bi]);
            drop_caches(dir);
            h = e->open(dir, &cold_o);
            record("multiget_cold", var, en, "ops/s", run_batches(e, h, ord->a, g_mget_cold_keys(), g_batches[bi]));
            e->close(h);
        }
        if (want(W_OVERWRITE | W_MIX) && !extra_row) {
            progress("  %s: overwrite, mix", en);
            h = e->open(dir, &hot);
            rate = run_puts(e, h, ord->b, n, true);
            if (want(W_OVERWRITE))
                record("overwrite", "", en, "ops/s", rate);
            if (want(W_MIX)) {
                (void)run_gets(e, h, ord->a, n); /* untimed warm-up, as for the hot reads */
                record("mix", "read90_write10", en, "ops/s", run_mix(e, h, ord->mix, n));
            } else {
                verify_sample(e, h, ord->b, n);
            }
            e->close(h);
        }
        rm_tree(dir);
    }

    if (want(W_FILLSEQ) && !extra_row) {
        progress("  %s: fillseq", en);
        const char *dir = store_dir(en);
        memset(g_gen, 0, n);
        void *h = e->open(dir, &hot);
        record("fillseq", "", en, "ops/s", run_puts(e, h, ord->seq, n, false));
        verify_sample(e, h, ord->seq, n);
        e->close(h);
        rm_tree(dir);
    }

    if (want(W_DURABLE) && !extra_row) {
        static const char *const which[4] = {"", "1 thread", "4 threads", "1 and 4 threads"};
        progress("  %s: durable puts (%zu keys, %s)", en, g_sync_keys, which[g_durable_threads & 3]);
        if (g_durable_threads & 1)
            record("durable", "threads1", en, "ops/s", run_durable(e, 1));
        if (g_durable_threads & 2)
            record("durable", "threads4", en, "ops/s", run_durable(e, SYNC_THREADS));
    }
}

/* ---- JSON ---- */

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static uint64_t hot_cache_for(size_t vlen);

static void print_json(const char *date, double wall, const int *order, int norder)
{
    printf("{\n  \"benchmark\": \"engines\",\n  \"date\": ");
    json_str(date);
    printf(",\n  \"versions\": {\"armdb\": ");
    json_str(ARMDB_VERSION_STRING);
    printf(", \"lmdb\": ");
    json_str(MDB_VERSION_STRING);
    printf(", \"rocksdb\": ");
    json_str(g_rocksdb_version);
    printf(", \"leveldb\": \"%d.%d\"},\n", leveldb_major_version(), leveldb_minor_version());
    printf("  \"machine\": {\"cpu\": ");
    json_str(g_m.cpu);
    printf(", \"cores\": %ld, \"memory_bytes\": %" PRIu64 ", \"kernel\": ", g_m.cores, g_m.mem);
    json_str(g_m.kernel);
    printf(", \"filesystem\": ");
    json_str(g_m.fs);
    printf(", \"device\": ");
    json_str(g_m.fsdev);
    printf(", \"readahead_kb\": %ld", g_m.readahead_kb);
    printf(", \"load_before\": [%.2f, %.2f, %.2f], \"load_after\": [%.2f, %.2f, %.2f]},\n",
           g_m.load_before[0], g_m.load_before[1], g_m.load_before[2], g_m.load_after[0], g_m.load_after[1],
           g_m.load_after[2]);
    printf("  \"config\": {\"keys\": %zu, \"key_len\": %d, \"value_sizes\": [", g_nkeys, KEY_LEN);
    for (int i = 0; i < g_nsizes; i++)
        printf("%s%zu", i ? ", " : "", g_sizes[i]);
    printf("], \"reps\": %d, \"sync_keys\": %zu, \"sync_threads\": %d, \"cold_keys\": %zu, ", g_reps,
           g_sync_keys, SYNC_THREADS, g_cold_keys);
    if (g_durable_threads != 3)
        printf("\"durable_threads\": [%s], ", g_durable_threads == 1 ? "1" : "4");
    printf("\"multiget_cold_keys\": %zu, \"leveldb_max_open_files\": %d, ", g_mget_cold_keys(), g_leveldb_files);
    printf("\"mix_ops\": %zu, \"mix_write_pct\": %d, \"batches\": [%zu, %zu], ", g_nkeys, MIX_WRITE_PCT,
           g_batches[0], g_batches[1]);
    printf("\"scan_ranges\": %zu, \"scan_range_len\": %d, ", g_scan_ranges, SCAN_RANGE_LEN);
    printf("\"hot_cache_bytes\": {");
    for (int i = 0; i < g_nsizes; i++)
        printf("%s\"%zu\": %" PRIu64, i ? ", " : "", g_sizes[i], hot_cache_for(g_sizes[i]));
    printf("}, \"cold_cache_bytes\": %llu, \"durable_cache_bytes\": %u, ", COLD_CACHE, 64u << 20);
    printf("\"page_cache_drop\": %s, ", g_drop == DROP_ALL
                                            ? "\"all (sync; echo 3 > /proc/sys/vm/drop_caches)\""
                                            : "\"store files only (posix_fadvise DONTNEED)\"");
    printf("\"engine_order_even_reps\": [");
    for (int i = 0; i < norder; i++)
        printf("%s\"%s\"", i ? ", " : "", g_eng[order[i]].name);
    printf("], \"workloads\": [");
    bool first = true;
    for (int i = 0; i < NWORK; i++)
        if (g_only & (1u << i)) {
            printf("%s\"%s\"", first ? "" : ", ", g_wnames[i]);
            first = false;
        }
    printf("],\n    \"armdb\": {\"shards\": %u, \"io_backend\": \"%s\", \"direct_io\": %s, "
           "\"sync_mode\": \"none (durable: always)\", \"inline_value_len\": %d, "
           "\"scans\": \"armdb-ordered row: ARMDB_ORDERED store, an iterator per scan or range\"},\n",
           g_armdb_stat.shards, g_armdb_stat.io_backend == ARMDB_IO_URING ? "io_uring" : "pwrite",
           g_armdb_stat.direct_io ? "true" : "false", INLINE_VLEN);
    if (g_engines & ((1u << E_ARMDB_ENC) | (1u << E_ARMDB_AES)))
        printf("    \"armdb_encrypted\": \"armdb-enc: encryption_key (a fixed 32-byte test key), "
               "XChaCha20-Poly1305; armdb-aes: the same key and ARMDB_CIPHER_AES, AES-256-GCM; "
               "otherwise as the armdb row\",\n");
    printf("    \"lmdb\": \"MDB_NOSYNC|MDB_NOMETASYNC|MDB_WRITEMAP, one write txn per put, read txn "
           "renew/reset per get, per batch, per scan or range (cursor renewed in it) "
           "(durable: flags 0)\",\n");
    printf("    \"rocksdb\": \"defaults + bloom 10 bits/key, LRU block cache = armdb cache_size, "
           "compression off, WAL on, sync=0 (durable: sync=1), get_pinned, batched_multi_get_cf, "
           "an iterator per scan or range\",\n");
    printf("    \"leveldb\": \"defaults + bloom 10 bits/key, LRU cache = armdb cache_size, compression off, "
           "sync=0 (durable: sync=1), an iterator per scan or range\",\n");
    printf("    \"wall_seconds\": %.1f},\n", wall);
    printf("  \"results\": [\n");
    for (int i = 0; i < g_nrows; i++) {
        struct row *r = &g_rows[i];
        double v[MAX_REPS];
        memcpy(v, r->runs, (size_t)r->n * sizeof *v);
        qsort(v, (size_t)r->n, sizeof *v, cmp_double);
        double med = r->n % 2 ? v[r->n / 2] : (v[r->n / 2 - 1] + v[r->n / 2]) / 2;
        printf("    {\"workload\": \"%s\", \"variant\": \"%s\", \"engine\": \"%s\", \"value_size\": %zu, "
               "\"unit\": \"%s\", \"median\": %.3f, \"min\": %.3f, \"max\": %.3f, \"runs\": [",
               r->workload, r->variant, r->engine, r->vsize, r->unit, med, v[0], v[r->n - 1]);
        for (int j = 0; j < r->n; j++)
            printf("%s%.3f", j ? ", " : "", r->runs[j]);
        printf("]}%s\n", i + 1 < g_nrows ? "," : "");
    }
    printf("  ]\n}\n");
}

/* ---- main ---- */

/* The cache of the hot tests: room for every entry one and a half times
 * over (16-byte key, value, 64 bytes of headers and padding), at least
 * armdb's default of 64 MiB. */
static uint64_t hot_cache_for(size_t vlen)
{
    uint64_t c = (uint64_t)g_nkeys * (vlen + KEY_LEN + 64) * 3 / 2;
    c = (c + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
    return c < (64u << 20) ? (64u << 20) : c;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench-engines [--keys N] [--reps N] [--sizes 100,1024,4096] [--only WORKLOAD,..]\n"
            "                     [--engines armdb,lmdb,rocksdb,leveldb] [--sync-keys N] [--cold-keys N]\n"
            "                     [--scan-ranges N] [--durable-threads 1,4] [--drop all|fadvise]\n"
            "Engines: armdb (with its armdb-inline and armdb-ordered rows), lmdb, rocksdb, leveldb (the\n"
            "default); armdb-enc (XChaCha20-Poly1305) and armdb-aes (AES-256-GCM) run only when named.\n"
            "Naming armdb-inline, armdb-ordered, armdb-enc or armdb-aes runs only the armdb rows named.\n"
            "N may end in k or M (10M = 10,000,000). Workloads:");
    for (int i = 0; i < NWORK; i++)
        fprintf(stderr, " %s", g_wnames[i]);
    fprintf(stderr, "\nJSON on stdout, progress on stderr; stores under $TMPDIR (default /tmp).\n");
    exit(2);
}

static size_t parse_count(const char *opt, const char *s, size_t lo, size_t hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end == 'k' || *end == 'K')
        v *= 1000, end++;
    else if (*end == 'M' || *end == 'm')
        v *= 1000000, end++;
    if (errno || end == s || *end || v < lo || v > hi)
        DIE("%s %s: expected a number from %zu to %zu", opt, s, lo, hi);
    return (size_t)v;
}

/* A comma list of names into a bit mask; `names` has n entries. */
static unsigned parse_names(const char *opt, const char *s, const char *const *names, int n)
{
    unsigned m = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int i = 0;
        while (i < n && (!names[i] || strcmp(names[i], t) != 0))
            i++;
        if (i == n)
            DIE("%s: unknown name '%s'", opt, t);
        m |= 1u << i;
    }
    if (!m)
        DIE("%s: empty list", opt);
    return m;
}

int main(int argc, char **argv)
{
    size_t sync_keys = 0, cold_keys = 0;
    g_scan_ranges = SCAN_RANGES;
    const char *drop = NULL;
    g_nkeys = 1000000;
    g_reps = 3;
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)g_leveldb_files + 256)
            g_leveldb_files = rl.rlim_cur > 512 ? (int)rl.rlim_cur - 256 : 256;
    }
    g_nsizes = 3;
    g_sizes[0] = 100, g_sizes[1] = 1024, g_sizes[2] = 4096;
    static const char *const engine_names[E_COUNT] = {
        [E_ARMDB] = "armdb",         [E_ARMDB_INLINE] = "armdb-inline", [E_ARMDB_ORDERED] = "armdb-ordered",
        [E_LMDB] = "lmdb",           [E_ROCKSDB] = "rocksdb",           [E_LEVELDB] = "leveldb",
        [E_ARMDB_ENC] = "armdb-enc", [E_ARMDB_AES] = "armdb-aes",
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            usage();
        if (i + 1 >= argc || a[0] != '-')
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--keys"))
            g_nkeys = parse_count(a, v, 1000, 0x7fffffff);
        else if (!strcmp(a, "--reps"))
            g_reps = (int)parse_count(a, v, 1, MAX_REPS);
        else if (!strcmp(a, "--sync-keys"))
            sync_keys = parse_count(a, v, SYNC_THREADS, 100000000);
        else if (!strcmp(a, "--cold-keys"))
            cold_keys = parse_count(a, v, 1, 100000000);
        else if (!strcmp(a, "--scan-ranges"))
            g_scan_ranges = parse_count(a, v, 1, 100000000);
        else if (!strcmp(a, "--drop"))
            drop = v;
        else if (!strcmp(a, "--durable-threads")) {
            static const char *const nthreads[2] = {"1", "4"};
            g_durable_threads = parse_names(a, v, nthreads, 2);
        } else if (!strcmp(a, "--only"))
            g_only = parse_names(a, v, g_wnames, NWORK);
        else if (!strcmp(a, "--engines"))
            g_engines = parse_names(a, v, engine_names, E_COUNT);
        else if (!strcmp(a, "--sizes")) {
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            g_nsizes = 0;
            for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (g_nsizes == MAX_SIZES)
                    DIE("--sizes: at most %d sizes", MAX_SIZES);
                g_sizes[g_nsizes++] = parse_count(a, t, 1, MAX_VAL);
            }
            if (!g_nsizes)
                usage();
        } else
            usage();
    }
    g_sync_keys = sync_keys ? sync_keys : g_nkeys < 5000 ? g_nkeys : 5000;
    if (g_sync_keys > g_nkeys)
        DIE("--sync-keys %zu: more than --keys %zu", g_sync_keys, g_nkeys);
    size_t cold = g_nkeys / 1000 < 100 ? 100 : g_nkeys / 1000;
    g_cold_keys = cold_keys ? cold_keys : cold;
    if (g_cold_keys > g_nkeys)
        g_cold_keys = g_nkeys;

    tmp_create("armdb-engines");

    machine_probe();
    if (drop && strcmp(drop, "all") && strcmp(drop, "fadvise"))
        DIE("--drop %s: expected all or fadvise", drop);
    g_drop = (!drop || !strcmp(drop, "all")) && drop_all_caches() ? DROP_ALL : DROP_FADVISE;
    if (drop && !strcmp(drop, "all") && g_drop != DROP_ALL)
        DIE("--drop all: cannot write /proc/sys/vm/drop_caches (not root?)");
    make_data();
    uint32_t *seq = want(W_FILLSEQ | W_SCANS) ? sorted_order() : NULL;

    /* The engine order of even repetitions; odd ones run it backwards. The
     * encrypted rows sit beside armdb. "armdb" brings its inline and ordered
     * rows along, unless the list names one of the other armdb rows: then
     * only the armdb rows named run. */
    static const int display[E_COUNT] = {E_ARMDB,         E_ARMDB_ENC, E_ARMDB_AES, E_ARMDB_INLINE,
                                         E_ARMDB_ORDERED, E_LMDB,      E_ROCKSDB,   E_LEVELDB};
    unsigned named_rows = g_engines & ((1u << E_ARMDB_INLINE) | (1u << E_ARMDB_ORDERED) |
                                       (1u << E_ARMDB_ENC) | (1u << E_ARMDB_AES));
    bool armdb_on = (g_engines & (1u << E_ARMDB)) != 0;
    int order[E_COUNT], norder = 0;
    for (int k = 0; k < E_COUNT; k++) {
        int i = display[k];
        bool named = (g_engines & (1u << i)) != 0;
        bool with_armdb = named_rows ? named : armdb_on; /* the inline and ordered rows */
        bool on = i == E_ARMDB || i == E_ARMDB_ENC || i == E_ARMDB_AES
                      ? named && (g_only & ~(unsigned)W_SCANS)
                  : i == E_ARMDB_INLINE  ? with_armdb && want(W_FILLRANDOM | W_READ_HOT | W_RSS)
                  : i == E_ARMDB_ORDERED ? with_armdb && want(W_SCANS)
                                         : named;
        if (on)
            order[norder++] = i;
    }
    char date[64];
    time_t tnow = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %z", localtime(&tnow));
    fprintf(stderr, "bench-engines: %zu keys, sizes", g_nkeys);
    for (int i = 0; i < g_nsizes; i++)
        fprintf(stderr, " %zu", g_sizes[i]);
    fprintf(stderr, ", %d reps, page cache drop: %s, temp dir %s\n", g_reps,
            g_drop == DROP_ALL ? "all" : "fadvise", g_tmp);

    double wall = now_s();
    g_t0 = wall;
    for (int rep = 0; rep < g_reps; rep++) {
        struct orders ord;
        uint32_t *a = shuffled(g_nkeys, 1000 + (uint64_t)rep), *b = shuffled(g_nkeys, 2000 + (uint64_t)rep);
        uint32_t *mix = mix_ops(g_nkeys, 3000 + (uint64_t)rep);
        uint32_t *ranges = want(W_SCAN_RANGE) ? range_starts(g_scan_ranges, 4000 + (uint64_t)rep) : NULL;
        ord = (struct orders){a, b, seq, mix, ranges};
        for (int si = 0; si < g_nsizes; si++) {
            g_vlen = g_sizes[si];
            g_hot_cache = hot_cache_for(g_vlen);
            if (g_hot_cache > g_m.mem / 2)
                fprintf(stderr, "warning: the hot cache (%" PRIu64 " MiB) is over half of RAM\n",
                        g_hot_cache >> 20);
            progress("repetition %d of %d, %zu-byte values%s", rep + 1, g_reps, g_vlen,
                     rep % 2 ? " (engines in reverse order)" : "");
            for (int k = 0; k < norder; k++) {
                int ei = order[rep % 2 ? norder - 1 - k : k];
                if (ei == E_ARMDB_INLINE && g_vlen != INLINE_VLEN)
                    continue;
                double t = now_s();
                run_engine(ei, &ord);
                progress("  %s: %.1f s", g_eng[ei].name, now_s() - t);
            }
        }
        free(a), free(b), free(mix), free(ranges);
    }
    wall = now_s() - wall;
    if (getloadavg(g_m.load_after, 3) != 3)
        memset(g_m.load_after, 0, sizeof g_m.load_after);
    fprintf(stderr, "done in %.0f s\n", wall);
    print_json(date, wall, order, norder);
    if (fflush(stdout) != 0)
        DIE("cannot write the results: %s", strerror(errno));
    free(seq);
    return 0;
}
