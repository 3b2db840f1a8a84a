/*
 * cache_blocks.c - the block cache: hits and misses are counted, memory is
 * bounded by cache_size with evictions, a one-pass scan does not flush a
 * hot set (scan resistance), and values stay right when a tiny cache is
 * churned by readers while writers overwrite keys across rotations.
 */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>

#define KLEN 16
#define VLEN 3000 /* about one entry per 4096-byte page */

static void make_key(uint32_t i, unsigned char *k)
{
    memset(k, 0, KLEN);
    memcpy(k, &i, 4);
    memcpy(k + 8, "cachekey", 8);
}

/* Value version v of key i: its bytes encode (i, v). */
static void make_val(uint32_t i, uint32_t v, unsigned char *out, size_t n)
{
    for (size_t j = 0; j < n; j++)
        out[j] = (unsigned char)(i * 131 + v * 31 + j);
    memcpy(out, &i, 4);
    memcpy(out + 4, &v, 4);
}

static armdb *open_store(const char *dir, uint64_t cache, uint64_t max_file, uint32_t shards, uint32_t flags)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.shards = shards;
    o.cache_size = cache;
    o.max_file_size = max_file;
    o.flags = flags;
    armdb *db;
    t_key_options(&o);
    CHECK_OK(armdb_open(dir, &o, &db));
    return db;
}

static void get_check(armdb *db, uint32_t i, uint32_t v)
{
    unsigned char k[KLEN], want[VLEN], got[VLEN];
    size_t n;
    make_key(i, k);
    make_val(i, v, want, VLEN);
    CHECK_OK(armdb_get(db, k, KLEN, got, sizeof got, &n));
    CHECK(n == VLEN && memcmp(got, want, VLEN) == 0);
}

static armdb_stat stats(armdb *db)
{
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    return st;
}

static void fill(const char *store, uint32_t nkeys)
{
    armdb *db = open_store(store, 0, 0, 1, ARMDB_CREATE);
    unsigned char k[KLEN], v[VLEN];
    for (uint32_t i = 0; i < nkeys; i++) {
        make_key(i, k);
        make_val(i, 1, v, VLEN);
        CHECK_OK(armdb_put(db, k, KLEN, v, VLEN));
    }
    CHECK_OK(armdb_close(db));
}

/* Cold reads miss, the same reads again hit and touch no device. */
static void hits_and_misses(void)
{
    char *dir = t_tmpdir("cache");
    char *store = t_path(dir, "s");
    fill(store, 200);
    armdb *db = open_store(store, 4 << 20, 0, 1, 0);
    armdb_stat a = stats(db);
    CHECK(a.cache_hits == 0 && a.cache_misses == 0 && a.cache_bytes == 0);
    for (uint32_t i = 0; i < 200; i++)
        get_check(db, i, 1);
    armdb_stat b = stats(db);
    /* Every page of the data file was read from the device exactly once. */
    char *data = t_path(store, "000/00000001.data");
    struct stat fst;
    CHECK(stat(data, &fst) == 0);
    free(data);
    CHECK(b.cache_misses == (uint64_t)fst.st_size / 4096);
    CHECK(b.cache_bytes > 0 && b.cache_bytes <= 4 << 20);
    CHECK(b.cache_evictions == 0);
    for (uint32_t i = 0; i < 200; i++)
        get_check(db, i, 1);
    armdb_stat c = stats(db);
    CHECK(c.cache_misses == b.cache_misses);
    CHECK(c.cache_hits - b.cache_hits >= 200);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

/* A cache of 64 KiB holds 16 pages: reading 400 entries evicts, memory
 * stays within the bound, and every value is still right. */
static void eviction_bound(void)
{
    char *dir = t_tmpdir("cache");
    char *store = t_path(dir, "s");
    fill(store, 400);
    armdb *db = open_store(store, 64 << 10, 0, 1, 0);
    for (int pass = 0; pass < 3; pass++)
        for (uint32_t i = 0; i < 400; i++)
            get_check(db, (i * 7919) % 400, 1);
    armdb_stat st = stats(db);
    CHECK(st.cache_evictions > 0);
    CHECK(st.cache_bytes <= 64 << 10);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

/* 8 hot keys read after every 100 keys of a sweep that reads each of 2000
 * cold keys once (in an order that does not follow the file), with a
 * 64-page cache: about 75 cold pages go by between two reads of a hot
 * page, so an LRU or CLOCK cache loses the hot pages to the sweep; a
 * scan-resistant one keeps them: after warming up, hot reads hit. */
static void scan_resistance(void)
{
    char *dir = t_tmpdir("cache");
    char *store = t_path(dir, "s");
    fill(store, 2100);
    armdb *db = open_store(store, 64 * 4096, 0, 1, 0);
    for (int w = 0; w < 3; w++)
        for (uint32_t h = 0; h < 8; h++)
            get_check(db, 2000 + h, 1);
    uint64_t hot_reads = 0, hot_misses = 0;
    for (uint32_t i = 0; i < 2000; i++) {
        get_check(db, (i * 7919) % 2000, 1);
        if (i % 100 == 0) {
            for (uint32_t h = 0; h < 8; h++) {
                armdb_stat before = stats(db);
                get_check(db, 2000 + h, 1);
                armdb_stat after = stats(db);
                hot_reads++;
                hot_misses += after.cache_misses - before.cache_misses;
            }
        }
    }
    armdb_stat st = stats(db);
    CHECK(st.cache_evictions > 1000); /* the scan did churn the cache */
    CHECK(hot_reads == 160);
    if (hot_misses * 20 > hot_reads) {
        fprintf(stderr, "cache_blocks: %" PRIu64 " of %" PRIu64 " hot reads missed during a scan\n", hot_misses,
                hot_reads);
        exit(1);
    }
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

/* Writers overwrite keys (rotating files every 64 KiB) while readers churn
 * a 64 KiB cache: every value read is a version its key really had, and
 * the newest at the end. */
#define CW_KEYS 64
#define CW_OPS 3000
struct cw {
    armdb *db;
    uint32_t id;
    _Atomic uint32_t *versions; /* newest acknowledged version per key */
};

static void *writer(void *arg)
{
    struct cw *w = arg;
    unsigned char k[KLEN], v[VLEN];
    uint64_t seed = w->id + 1;
    for (int op = 0; op < CW_OPS; op++) {
        /* Writer w owns keys w, w + 2, ...: versions of a key only grow. */
        uint32_t i = (uint32_t)(t_rand(&seed) % (CW_KEYS / 2)) * 2 + w->id;
        uint32_t ver = atomic_load(&w->versions[i]) + 1;
        make_key(i, k);
        make_val(i, ver, v, VLEN);
        CHECK_OK(armdb_put(w->db, k, KLEN, v, VLEN));
        atomic_store(&w->versions[i], ver);
    }
    return NULL;
}

static void *reader(void *arg)
{
    struct cw *w = arg;
    unsigned char k[KLEN], got[VLEN], want[VLEN];
    uint64_t seed = 100 + w->id;
    for (int op = 0; op < CW_OPS * 2; op++) {
        uint32_t i = (uint32_t)(t_rand(&seed) % CW_KEYS);
        uint32_t floor = atomic_load(&w->versions[i]);
        size_t n;
        make_key(i, k);
        CHECK_OK(armdb_get(w->db, k, KLEN, got, sizeof got, &n));
        uint32_t gi, gv;
        memcpy(&gi, got, 4);
        memcpy(&gv, got + 4, 4);
        CHECK(n == VLEN && gi == i && gv >= floor);
        make_val(i, gv, want, VLEN);
        CHECK(memcmp(got, want, VLEN) == 0);
    }
    return NULL;
}

static void concurrent_rotation(void)
{
    char *dir = t_tmpdir("cache");
    char *store = t_path(dir, "s");
    armdb *db = open_store(store, 64 << 10, 64 << 10, 2, ARMDB_CREATE);
    static _Atomic uint32_t versions[CW_KEYS];
    unsigned char k[KLEN], v[VLEN];
    for (uint32_t i = 0; i < CW_KEYS; i++) {
        make_key(i, k);
        make_val(i, 1, v, VLEN);
        CHECK_OK(armdb_put(db, k, KLEN, v, VLEN));
        atomic_store(&versions[i], 1);
    }
    pthread_t th[4];
    struct cw w[4];
    for (uint32_t t = 0; t < 4; t++) {
        w[t] = (struct cw){.db = db, .id = t % 2, .versions = versions};
        CHECK(pthread_create(&th[t], NULL, t < 2 ? writer : reader, &w[t]) == 0);
    }
    for (int t = 0; t < 4; t++)
        CHECK(pthread_join(th[t], NULL) == 0);
    armdb_stat st = stats(db);
    CHECK(st.rotations > 10 && st.cache_evictions > 0);
    for (uint32_t i = 0; i < CW_KEYS; i++)
        get_check(db, i, atomic_load(&versions[i]));
    CHECK_OK(armdb_close(db));
    db = open_store(store, 64 << 10, 64 << 10, 2, 0);
    for (uint32_t i = 0; i < CW_KEYS; i++)
        get_check(db, i, atomic_load(&versions[i]));
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

int main(void)
{
    hits_and_misses();
    eviction_bound();
    scan_resistance();
    concurrent_rotation();
    return 0;
}
