/*
 * ordered.c - ordered stores: ranges, prefixes and reverse scans, merged
 * across shards, always equal to a sorted model.
 *
 *  - model: random puts and deletes on 4 shards with 64 KiB files, and
 *    after every few operations a scan with random bounds (lengths 0 to
 *    key_len, taken from real keys or made up), direction and prefix mode,
 *    compared key by key and value by value with the model; the store is
 *    reopened (the ordered index rebuilt from hints) and compacted on the
 *    way;
 *  - sparse: many keys inserted then nearly all deleted, so the tree is
 *    repacked, and still scans right;
 *  - errors: what unordered stores and bad bounds get;
 *  - concurrent: a writer changes keys while scans run; every key that is
 *    never touched is seen exactly once, in strict order, with its value;
 *  - snapshots: what an ARMDB_ITER_SNAPSHOT iterator returns is the store
 *    at its open, after overwrites, deletes, inserts and a compaction that
 *    removed the files it reads; and while a writer moves amounts between
 *    keys with batches, every snapshot sees the same total.
 *
 * Replay: ARMDB_SEED=<seed>; ARMDB_TEST_SCALE=<percent> scales the counts.
 */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#define KEY_LEN 8
#define NKEYS 2000
#define VAL_LEN 24

static uint64_t g_seed;
static uint64_t g_scale;

static uint64_t scaled(uint64_t n)
{
    uint64_t v = n * g_scale / 100;
    return v ? v : 1;
}

/* Key i: a small alphabet in the first two bytes, so prefixes of one and
 * two bytes select real groups; the rest spread the keys. */
static void make_key(uint32_t i, uint8_t *k)
{
    uint64_t h = t_mix(i, 0x5eed);
    k[0] = (uint8_t)('a' + i % 4);
    k[1] = (uint8_t)((i / 4) % 8);
    for (int b = 2; b < KEY_LEN; b++)
        k[b] = (uint8_t)(h >> (8 * b));
}

static void make_val(uint32_t i, uint64_t ver, uint8_t *v)
{
    memcpy(v, &i, 4);
    memcpy(v + 4, &ver, 8);
    t_fill(t_mix(i, ver), v + 12, VAL_LEN - 12);
}

static int key_cmp(const void *a, const void *b)
{
    return memcmp(a, b, KEY_LEN);
}

/* The test's own idea of the bound order: bytewise over the shorter
 * length, then the longer one after. */
static int bound_order(const uint8_t *key, const uint8_t *b, size_t blen, bool prefix)
{
    int c = memcmp(key, b, blen);
    if (c || prefix)
        return c;
    return blen < KEY_LEN ? 1 : 0;
}

struct model {
    uint8_t keys[NKEYS][KEY_LEN]; /* sorted */
    uint32_t id[NKEYS];           /* key number of keys[j] */
    bool present[NKEYS];          /* by key number */
    uint64_t ver[NKEYS];
};

static struct model g_m;

static void model_init(void)
{
    struct {
        uint8_t k[KEY_LEN];
        uint32_t i;
    } *tmp = malloc(sizeof *tmp * NKEYS);
    for (uint32_t i = 0; i < NKEYS; i++) {
        make_key(i, tmp[i].k);
        tmp[i].i = i;
    }
    qsort(tmp, NKEYS, sizeof *tmp, key_cmp);
    for (uint32_t j = 0; j < NKEYS; j++) {
        memcpy(g_m.keys[j], tmp[j].k, KEY_LEN);
        g_m.id[j] = tmp[j].i;
        if (j)
            CHECK(memcmp(g_m.keys[j - 1], g_m.keys[j], KEY_LEN) < 0);
    }
    free(tmp);
}

static bool wanted(const uint8_t *key, const uint8_t *lo, size_t lolen, const uint8_t *hi, size_t hilen,
                   unsigned flags)
{
    if (flags & ARMDB_ITER_PREFIX)
        return bound_order(key, lo, lolen, true) == 0;
    if (lo && bound_order(key, lo, lolen, false) < 0)
        return false;
    if (hi && bound_order(key, hi, hilen, false) >= 0)
        return false;
    return true;
}

static uint64_t g_scans, g_seen;

/* One scan against the model. */
static void check_scan(armdb *db, const uint8_t *lo, size_t lolen, const uint8_t *hi, size_t hilen,
                       unsigned flags)
{
    armdb_iter *it;
    CHECK_OK(armdb_iter_open(db, lo, lolen, hi, hilen, flags, &it));
    bool rev = flags & ARMDB_ITER_REVERSE;
    for (uint32_t n = 0; n < NKEYS; n++) {
        uint32_t j = rev ? NKEYS - 1 - n : n;
        uint32_t i = g_m.id[j];
        if (!g_m.present[i] || !wanted(g_m.keys[j], lo, lolen, hi, hilen, flags))
            continue;
        const void *k, *v;
        size_t kl, vl;
        int rc = armdb_iter_next(it, &k, &kl, &v, &vl);
        if (rc != 0 || memcmp(k, g_m.keys[j], KEY_LEN) != 0) {
            fprintf(stderr, "scan (lo %zu bytes, hi %zu bytes, flags %u): rc %d, expected key #%u\n",
                    lo ? lolen : 0, hi ? hilen : 0, flags, rc, i);
            CHECK(0);
        }
        uint8_t want[VAL_LEN];
        make_val(i, g_m.ver[i], want);
        CHECK(kl == KEY_LEN && vl == VAL_LEN && memcmp(v, want, VAL_LEN) == 0);
        g_seen++;
    }
    const void *k, *v;
    size_t kl, vl;
    CHECK_RC(armdb_iter_next(it, &k, &kl, &v, &vl), ARMDB_NOTFOUND);
    CHECK_RC(armdb_iter_next(it, &k, &kl, &v, &vl), ARMDB_NOTFOUND);
    armdb_iter_close(it);
    g_scans++;
}

/* A bound: a prefix of a real key, maybe nudged, or made-up bytes. */
static size_t rand_bound(uint64_t *rng, uint8_t *b)
{
    size_t len = t_rand(rng) % (KEY_LEN + 1);
    if (t_rand(rng) % 4) {
        memcpy(b, g_m.keys[t_rand(rng) % NKEYS], KEY_LEN);
        if (len && t_rand(rng) % 3 == 0)
            b[len - 1] += (uint8_t)(t_rand(rng) % 3) - 1;
    } else {
        for (size_t i = 0; i < KEY_LEN; i++)
            b[i] = (uint8_t)(i == 0 ? 'a' - 1 + t_rand(rng) % 6 : t_rand(rng));
    }
    return len;
}

static void random_scan(armdb *db, uint64_t *rng)
{
    uint8_t lo[KEY_LEN], hi[KEY_LEN];
    size_t lolen = rand_bound(rng, lo), hilen = rand_bound(rng, hi);
    unsigned flags = t_rand(rng) % 2 ? ARMDB_ITER_REVERSE : 0;
    switch (t_rand(rng) % 5) {
    case 0:
        check_scan(db, NULL, 0, NULL, 0, flags);
        break;
    case 1:
        check_scan(db, lo, lolen, NULL, 0, flags);
        break;
    case 2:
        check_scan(db, NULL, 0, hi, hilen, flags);
        break;
    case 3:
        check_scan(db, lo, lolen, hi, hilen, flags);
        break;
    default:
        check_scan(db, lo, lolen % 4, NULL, 0, flags | ARMDB_ITER_PREFIX);
        break;
    }
}

/* Most writes a thread makes while scans run: each data file holds a
 * descriptor, and a writer left to run for as long as slow scans take could
 * pass the process's limit (1024 where the tests run). */
#define CONC_WRITES 400000

static armdb *open_with(const char *dir, unsigned flags, uint64_t max_file)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = 4;
    o.max_file_size = max_file;
    o.flags = flags;
    armdb *db;
    t_key_options(&o);
    CHECK_OK(armdb_open(dir, &o, &db));
    return db;
}

static armdb *open_store(const char *dir, unsigned flags)
{
    return open_with(dir, flags | ARMDB_NO_AUTO_COMPACT, 64 << 10);
}

static void test_model(const char *base)
{
    char *dir = t_path(base, "model");
    armdb *db = open_store(dir, ARMDB_CREATE | ARMDB_ORDERED);
    uint64_t rng = g_seed, ver = 1;
    memset(g_m.present, 0, sizeof g_m.present);
    check_scan(db, NULL, 0, NULL, 0, 0);
    uint64_t ops = scaled(40000);
    for (uint64_t op = 1; op <= ops; op++) {
        uint32_t i = (uint32_t)(t_rand(&rng) % NKEYS);
        uint8_t k[KEY_LEN], v[VAL_LEN];
        make_key(i, k);
        if (t_rand(&rng) % 3) {
            make_val(i, ver, v);
            CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
            g_m.present[i] = true;
            g_m.ver[i] = ver++;
        } else {
            CHECK_RC(armdb_delete(db, k, KEY_LEN), g_m.present[i] ? 0 : ARMDB_NOTFOUND);
            g_m.present[i] = false;
        }
        if (op % 17 == 0)
            random_scan(db, &rng);
        if (op % 9000 == 0) {
            if (op % 18000 == 0)
                CHECK_OK(armdb_compact(db));
            CHECK_OK(armdb_close(db));
            /* Reopened without the flag: the store is ordered as created. */
            db = open_store(dir, 0);
            check_scan(db, NULL, 0, NULL, 0, 0);
            check_scan(db, NULL, 0, NULL, 0, ARMDB_ITER_REVERSE);
        }
    }
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    printf("model: %" PRIu64 " ops, %" PRIu64 " scans, %" PRIu64 " keys checked; %" PRIu64
           " keys, index %" PRIu64 " bytes per key\n",
           ops, g_scans, g_seen, st.keys, st.index_bytes_per_key);
    CHECK_OK(armdb_close(db));
    /* Read-only opens build the ordered index too. */
    db = open_store(dir, ARMDB_RDONLY);
    check_scan(db, NULL, 0, NULL, 0, 0);
    for (int n = 0; n < 50; n++)
        random_scan(db, &rng);
    CHECK_OK(armdb_close(db));
    free(dir);
}

/* Many keys in, nearly all out: leaves go sparse, the tree is repacked. */
static void test_sparse(const char *base)
{
    char *dir = t_path(base, "sparse");
    armdb *db = open_store(dir, ARMDB_CREATE | ARMDB_ORDERED);
    uint32_t n = (uint32_t)scaled(60000);
    uint8_t k[KEY_LEN], v[VAL_LEN] = {0};
    for (uint32_t i = 0; i < n; i++) {
        uint64_t be = __builtin_bswap64(t_mix(i, 77));
        memcpy(k, &be, KEY_LEN);
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
    }
    armdb_stat full, sparse;
    CHECK_OK(armdb_stats(db, &full));
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t be = __builtin_bswap64(t_mix(i, 77));
        memcpy(k, &be, KEY_LEN);
        if (i % 20 == 7)
            kept++;
        else
            CHECK_OK(armdb_delete(db, k, KEY_LEN));
    }
    CHECK_OK(armdb_stats(db, &sparse));
    /* What is left scans in order, every kept key once, both ways. */
    for (int rev = 0; rev < 2; rev++) {
        armdb_iter *it;
        CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, rev ? ARMDB_ITER_REVERSE : 0, &it));
        uint8_t prev[KEY_LEN];
        uint32_t seen = 0;
        const void *kk, *vv;
        size_t kl, vl;
        while (armdb_iter_next(it, &kk, &kl, &vv, &vl) == 0) {
            if (seen)
                CHECK(rev ? memcmp(prev, kk, KEY_LEN) > 0 : memcmp(prev, kk, KEY_LEN) < 0);
            memcpy(prev, kk, KEY_LEN);
            seen++;
        }
        armdb_iter_close(it);
        CHECK(seen == kept);
    }
    /* The tree's memory followed the keys down: index bytes fell by more
     * than the record array alone would let them (it does not shrink). */
    printf("sparse: %u keys: index %" PRIu64 " bytes; %u left: %" PRIu64 " bytes\n", n, full.index_bytes, kept,
           sparse.index_bytes);
    CHECK(sparse.index_bytes < full.index_bytes);
    CHECK_OK(armdb_close(db));
    free(dir);
}

static void test_errors(const char *base)
{
    char *dir = t_path(base, "plain");
    armdb *db = open_store(dir, ARMDB_CREATE);
    uint8_t k[KEY_LEN] = "abcdefg", v[VAL_LEN] = {0};
    CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
    armdb_iter *it;
    CHECK_RC(armdb_iter_open(db, k, 2, NULL, 0, 0, &it), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "ordered"));
    CHECK_RC(armdb_iter_open(db, NULL, 0, k, 2, 0, &it), ARMDB_INVAL);
    CHECK_RC(armdb_iter_open(db, NULL, 0, NULL, 0, ARMDB_ITER_REVERSE, &it), ARMDB_INVAL);
    CHECK_RC(armdb_iter_open(db, k, 1, NULL, 0, ARMDB_ITER_PREFIX, &it), ARMDB_INVAL);
    /* The full scan works, in no particular order. */
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it));
    armdb_iter_close(it);
    CHECK_OK(armdb_close(db));
    armdb_options o;
    armdb_options_init(&o);
    o.flags = ARMDB_ORDERED;
    t_key_options(&o);
    CHECK_RC(armdb_open(dir, &o, &db), ARMDB_MISMATCH);
    CHECK(strstr(armdb_errmsg(), "not ordered"));
    free(dir);

    dir = t_path(base, "bounds");
    db = open_store(dir, ARMDB_CREATE | ARMDB_ORDERED);
    uint8_t big[KEY_LEN + 1] = {0};
    CHECK_RC(armdb_iter_open(db, big, KEY_LEN + 1, NULL, 0, 0, &it), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "lo: 9 bytes"));
    CHECK_RC(armdb_iter_open(db, NULL, 0, big, KEY_LEN + 1, 0, &it), ARMDB_INVAL);
    CHECK_RC(armdb_iter_open(db, NULL, 0, NULL, 0, ARMDB_ITER_PREFIX, &it), ARMDB_INVAL);
    CHECK_RC(armdb_iter_open(db, k, 1, k, 2, ARMDB_ITER_PREFIX, &it), ARMDB_INVAL);
    CHECK_RC(armdb_iter_open(db, NULL, 0, NULL, 0, 1u << 7, &it), ARMDB_INVAL);
    /* lo above hi: nothing, no error. */
    CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
    CHECK_OK(armdb_iter_open(db, (const uint8_t *)"b", 1, (const uint8_t *)"a", 1, 0, &it));
    const void *kk, *vv;
    size_t kl, vl;
    CHECK_RC(armdb_iter_next(it, &kk, &kl, &vv, &vl), ARMDB_NOTFOUND);
    armdb_iter_close(it);
    CHECK_OK(armdb_close(db));
    free(dir);
}

/* ---- scans while a writer works ---- */

struct conc {
    armdb *db;
    atomic_bool stop;
    uint64_t writes;
};

/* Even keys are stable (put once, never touched again); the writer puts,
 * overwrites and deletes odd keys only. */
static void *writer(void *arg)
{
    struct conc *c = arg;
    uint64_t rng = g_seed ^ 0xabc, ver = 1 << 20;
    while (!atomic_load(&c->stop) && c->writes < CONC_WRITES) {
        uint32_t i = (uint32_t)(t_rand(&rng) % (NKEYS / 2)) * 2 + 1;
        uint8_t k[KEY_LEN], v[VAL_LEN];
        make_key(i, k);
        if (t_rand(&rng) % 3) {
            make_val(i, ver++, v);
            CHECK_OK(armdb_put(c->db, k, KEY_LEN, v, VAL_LEN));
        } else {
            int rc = armdb_delete(c->db, k, KEY_LEN);
            CHECK(rc == 0 || rc == ARMDB_NOTFOUND);
        }
        c->writes++;
    }
    return NULL;
}

static void test_concurrent(const char *base)
{
    char *dir = t_path(base, "conc");
    armdb *db = open_with(dir, ARMDB_CREATE | ARMDB_ORDERED, 4 << 20); /* compacted as it goes */
    for (uint32_t i = 0; i < NKEYS; i += 2) {
        uint8_t k[KEY_LEN], v[VAL_LEN];
        make_key(i, k);
        make_val(i, 1, v);
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
    }
    struct conc c = {.db = db};
    pthread_t tid;
    CHECK(pthread_create(&tid, NULL, writer, &c) == 0);
    uint32_t scans = (uint32_t)scaled(300);
    for (uint32_t s = 0; s < scans; s++) {
        bool rev = s % 2;
        armdb_iter *it;
        CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, rev ? ARMDB_ITER_REVERSE : 0, &it));
        uint8_t prev[KEY_LEN];
        uint32_t n = 0, stable = 0;
        const void *k, *v;
        size_t kl, vl;
        int rc;
        while ((rc = armdb_iter_next(it, &k, &kl, &v, &vl)) == 0) {
            if (n)
                CHECK(rev ? memcmp(prev, k, KEY_LEN) > 0 : memcmp(prev, k, KEY_LEN) < 0);
            memcpy(prev, k, KEY_LEN);
            n++;
            uint32_t i;
            CHECK(vl == VAL_LEN);
            memcpy(&i, v, 4);
            uint8_t want[KEY_LEN];
            make_key(i, want);
            CHECK(memcmp(want, k, KEY_LEN) == 0); /* its own value, not another key's */
            if (i % 2 == 0) {
                uint64_t ver;
                memcpy(&ver, (const uint8_t *)v + 4, 8);
                CHECK(ver == 1);
                stable++;
            }
        }
        CHECK_RC(rc, ARMDB_NOTFOUND);
        CHECK(stable == NKEYS / 2);
        armdb_iter_close(it);
    }
    atomic_store(&c.stop, true);
    pthread_join(tid, NULL);
    printf("concurrent: %u scans while %" PRIu64 " writes\n", scans, c.writes);
    CHECK_OK(armdb_close(db));
    free(dir);
}

/* ---- snapshots ---- */

static void snap_expect(armdb_iter *it, const struct model *m, bool rev, const bool *present, const uint64_t *ver)
{
    for (uint32_t n = 0; n < NKEYS; n++) {
        uint32_t j = rev ? NKEYS - 1 - n : n;
        uint32_t i = m->id[j];
        if (!present[i])
            continue;
        const void *k, *v;
        size_t kl, vl;
        CHECK_OK(armdb_iter_next(it, &k, &kl, &v, &vl));
        CHECK(memcmp(k, m->keys[j], KEY_LEN) == 0);
        uint8_t want[VAL_LEN];
        make_val(i, ver[i], want);
        CHECK(vl == VAL_LEN && memcmp(v, want, VAL_LEN) == 0);
    }
    const void *k, *v;
    size_t kl, vl;
    CHECK_RC(armdb_iter_next(it, &k, &kl, &v, &vl), ARMDB_NOTFOUND);
}

static void test_snapshot(const char *base)
{
    char *dir = t_path(base, "snap");
    armdb *db = open_store(dir, ARMDB_CREATE | ARMDB_ORDERED);
    static bool present[NKEYS];
    static uint64_t ver[NKEYS];
    uint8_t k[KEY_LEN], v[VAL_LEN];
    for (uint32_t i = 0; i < NKEYS; i += 2) {
        make_key(i, k);
        make_val(i, 1, v);
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
        present[i] = true;
        ver[i] = 1;
    }
    armdb_iter *fwd, *rev;
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, ARMDB_ITER_SNAPSHOT, &fwd));
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, ARMDB_ITER_SNAPSHOT | ARMDB_ITER_REVERSE, &rev));
    /* Everything changes: overwrites, deletes, new keys, and a compaction
     * that rewrites and removes every file the snapshots point into. */
    for (int round = 2; round < 6; round++)
        for (uint32_t i = 0; i < NKEYS; i++) {
            make_key(i, k);
            if (i % 3 == 0) {
                int rc = armdb_delete(db, k, KEY_LEN);
                CHECK(rc == 0 || rc == ARMDB_NOTFOUND);
            } else {
                make_val(i, (uint64_t)round, v);
                CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
            }
        }
    armdb_stat st;
    CHECK_OK(armdb_compact(db));
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.compactions > 0);
    /* Consumed halfway, then more changes, then the rest. */
    for (int n = 0; n < 10; n++) {
        const void *kk, *vv;
        size_t kl, vl;
        CHECK_OK(armdb_iter_next(fwd, &kk, &kl, &vv, &vl));
    }
    armdb_iter_close(fwd);
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, ARMDB_ITER_SNAPSHOT, &fwd)); /* the store now */
    static bool now_present[NKEYS];
    static uint64_t now_ver[NKEYS];
    for (uint32_t i = 0; i < NKEYS; i++) {
        now_present[i] = i % 3 != 0;
        now_ver[i] = 5;
    }
    snap_expect(rev, &g_m, true, present, ver);
    armdb_iter_close(rev);
    snap_expect(fwd, &g_m, false, now_present, now_ver);
    armdb_iter_close(fwd);
    /* A range and a prefix as snapshots. */
    CHECK_OK(armdb_iter_open(db, "b", 1, "c", 1, ARMDB_ITER_SNAPSHOT, &fwd));
    const void *kk, *vv;
    size_t kl, vl;
    uint32_t n = 0;
    while (armdb_iter_next(fwd, &kk, &kl, &vv, &vl) == 0) {
        CHECK(((const uint8_t *)kk)[0] == 'b');
        n++;
    }
    CHECK(n > 0);
    armdb_iter_close(fwd);
    CHECK_OK(armdb_close(db));

    /* Unordered stores and inline values take snapshots too. */
    char *udir = t_path(base, "snap-unordered");
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.value_len = 8;
    o.shards = 3;
    o.flags = ARMDB_CREATE;
    t_key_options(&o);
    CHECK_OK(armdb_open(udir, &o, &db));
    for (uint64_t i = 0; i < 100; i++) {
        make_key((uint32_t)i, k);
        CHECK_OK(armdb_put(db, k, KEY_LEN, &i, 8));
    }
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, ARMDB_ITER_SNAPSHOT, &fwd));
    CHECK_RC(armdb_iter_open(db, NULL, 0, NULL, 0, ARMDB_ITER_SNAPSHOT | ARMDB_ITER_REVERSE, &rev), ARMDB_INVAL);
    for (uint64_t i = 0; i < 100; i++) {
        uint64_t x = 1000 + i;
        make_key((uint32_t)i, k);
        CHECK_OK(armdb_put(db, k, KEY_LEN, &x, 8));
    }
    n = 0;
    while (armdb_iter_next(fwd, &kk, &kl, &vv, &vl) == 0) {
        uint64_t x;
        memcpy(&x, vv, 8);
        CHECK(vl == 8 && x < 100);
        uint8_t want[KEY_LEN];
        make_key((uint32_t)x, want);
        CHECK(memcmp(want, kk, KEY_LEN) == 0);
        n++;
    }
    CHECK(n == 100);
    armdb_iter_close(fwd);
    CHECK_OK(armdb_close(db));
    free(udir);
    free(dir);
}

/* Batches move amounts between accounts; every snapshot sums the same. */
#define ACCOUNTS 64
#define TOTAL (ACCOUNTS * 1000)

static void *mover(void *arg)
{
    struct conc *c = arg;
    uint64_t rng = g_seed ^ 0x5a5a;
    while (!atomic_load(&c->stop) && c->writes < CONC_WRITES) {
        uint32_t a = (uint32_t)(t_rand(&rng) % ACCOUNTS), b = (uint32_t)(t_rand(&rng) % ACCOUNTS);
        if (a == b)
            continue;
        uint8_t ka[KEY_LEN], kb[KEY_LEN];
        uint64_t va, vb;
        size_t n;
        make_key(a, ka);
        make_key(b, kb);
        CHECK_OK(armdb_get(c->db, ka, KEY_LEN, &va, 8, &n));
        CHECK_OK(armdb_get(c->db, kb, KEY_LEN, &vb, 8, &n));
        uint64_t amt = va ? t_rand(&rng) % va : 0, na = va - amt, nb = vb + amt;
        armdb_op ops[] = {
            {ARMDB_OP_CHECK, ka, KEY_LEN, &va, 8},
            {ARMDB_OP_CHECK, kb, KEY_LEN, &vb, 8},
            {ARMDB_OP_PUT, ka, KEY_LEN, &na, 8},
            {ARMDB_OP_PUT, kb, KEY_LEN, &nb, 8},
        };
        int rc = armdb_batch(c->db, ops, 4);
        CHECK(rc == 0 || rc == ARMDB_CONFLICT);
        c->writes++;
    }
    return NULL;
}

static void test_snapshot_batches(const char *base)
{
    char *dir = t_path(base, "accounts");
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = 4;
    o.max_file_size = 1 << 20;
    o.flags = ARMDB_CREATE | ARMDB_ORDERED;
    armdb *db;
    t_key_options(&o);
    CHECK_OK(armdb_open(dir, &o, &db));
    for (uint32_t i = 0; i < ACCOUNTS; i++) {
        uint8_t k[KEY_LEN];
        uint64_t v = TOTAL / ACCOUNTS;
        make_key(i, k);
        CHECK_OK(armdb_put(db, k, KEY_LEN, &v, 8));
    }
    struct conc c = {.db = db};
    pthread_t tid;
    CHECK(pthread_create(&tid, NULL, mover, &c) == 0);
    uint32_t scans = (uint32_t)scaled(200);
    for (uint32_t s = 0; s < scans; s++) {
        armdb_iter *it;
        CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, ARMDB_ITER_SNAPSHOT | (s % 2 ? ARMDB_ITER_REVERSE : 0), &it));
        uint64_t sum = 0, n = 0;
        const void *k, *v;
        size_t kl, vl;
        while (armdb_iter_next(it, &k, &kl, &v, &vl) == 0) {
            uint64_t x;
            memcpy(&x, v, 8);
            sum += x;
            if (++n % 8 == 0) { /* let batches land mid-scan */
                struct timespec ts = {0, 20000};
                nanosleep(&ts, NULL);
            }
        }
        armdb_iter_close(it);
        CHECK(n == ACCOUNTS);
        if (sum != TOTAL) {
            fprintf(stderr, "snapshot %u: total %" PRIu64 ", expected %d\n", s, sum, TOTAL);
            CHECK(0);
        }
    }
    atomic_store(&c.stop, true);
    pthread_join(tid, NULL);
    printf("snapshots: %u consistent totals while %" PRIu64 " batches\n", scans, c.writes);
    CHECK_OK(armdb_close(db));
    free(dir);
}

int main(void)
{
    g_seed = t_env_u64("ARMDB_SEED", 20261124);
    g_scale = t_env_u64("ARMDB_TEST_SCALE", 100);
    char *base = t_tmpdir("ordered");
    model_init();
    test_errors(base);
    test_model(base);
    test_sparse(base);
    test_concurrent(base);
    test_snapshot(base);
    test_snapshot_batches(base);
    t_rmtree(base);
    free(base);
    printf("ordered: passed (seed %" PRIu64 ")\n", g_seed);
    return 0;
}
