/*
 * stress_threads.c - one handle shared by four threads stays a correct map.
 *
 * 4 threads run random put / get / delete / cas (both forms) and full scans
 * on one handle of an 8-shard store with 64 KiB data files (so files rotate
 * while other threads write) and a 5 ms sync interval (so background
 * barriers race with writers). Each thread owns a disjoint key range and
 * checks every result on it exactly against its own model; it also reads
 * keys of the other ranges and checks that whatever comes back is a
 * well-formed value of that very key (a value encodes its key and version,
 * so a torn, stale-slot or foreign value is detected). A thread's own keys
 * do not change during its own scans, so a scan must show each of them
 * exactly once with its current value. At the end the count equals the
 * union of the models, and so does the store after close and reopen.
 *
 * Replay: ARMDB_SEED=<seed printed on failure>; ARMDB_TEST_SCALE=<percent>
 * scales the operation counts. Also run under ThreadSanitizer.
 */
#include "test.h"

#include <pthread.h>

#define KEY_LEN 16
#define NTHREADS 4
#define RANGE 500
#define NKEYS (NTHREADS * RANGE)
#define VHDR 12 /* key index u32, version u64 */
#define VMAX 400
#define OPS_PER_THREAD 50000

struct worker {
    pthread_t tid;
    unsigned no;
    uint64_t rng;
    uint64_t ops;
    armdb *db;
    /* The model of this thread's range [no * RANGE, (no + 1) * RANGE). */
    uint8_t present[RANGE];
    uint64_t ver[RANGE];
    uint64_t live;
    uint64_t next_ver;
    uint64_t foreign_hits; /* other threads' keys found */
};

static uint64_t g_seed;
static int g_passed;

static void report(void)
{
    if (!g_passed)
        fprintf(stderr, "stress_threads: failed; replay with ARMDB_SEED=%" PRIu64 "\n", g_seed);
}

static void make_key(uint32_t idx, uint8_t *k)
{
    memcpy(k, &idx, 4);
    t_fill(t_mix(idx, 0x6b6579), k + 4, KEY_LEN - 4);
}

/* Value: idx, ver, then VHDR..VMAX bytes in all derived from (idx, ver). */
static size_t make_value(uint32_t idx, uint64_t ver, uint8_t *out)
{
    uint64_t s = t_mix(idx, ver);
    size_t len = VHDR + (size_t)(t_rand(&s) % (VMAX - VHDR + 1));
    memcpy(out, &idx, 4);
    memcpy(out + 4, &ver, 8);
    t_fill(s, out + VHDR, len - VHDR);
    return len;
}

/* Is v/vl some version of key idx? */
static int well_formed(uint32_t idx, const uint8_t *v, size_t vl)
{
    uint8_t want[VMAX];
    uint32_t vi;
    uint64_t ver;
    if (vl < VHDR || vl > VMAX)
        return 0;
    memcpy(&vi, v, 4);
    memcpy(&ver, v + 4, 8);
    if (vi != idx)
        return 0;
    return make_value(idx, ver, want) == vl && memcmp(want, v, vl) == 0;
}

static void set_own(struct worker *w, uint32_t i, uint64_t ver)
{
    if (!w->present[i])
        w->live++;
    w->present[i] = 1;
    w->ver[i] = ver;
}

static void scan(struct worker *w)
{
    uint8_t seen[RANGE] = {0}, want[VMAX];
    uint32_t base = w->no * RANGE;
    uint64_t own = 0;
    armdb_iter *it;
    int rc;
    CHECK_OK(armdb_iter_open(w->db, NULL, 0, NULL, 0, 0, &it));
    for (;;) {
        const void *kp, *vp;
        size_t kl, vl;
        uint32_t idx;
        uint8_t k[KEY_LEN];
        rc = armdb_iter_next(it, &kp, &kl, &vp, &vl);
        if (rc == ARMDB_NOTFOUND)
            break;
        CHECK_OK(rc);
        CHECK(kl == KEY_LEN);
        memcpy(&idx, kp, 4);
        CHECK(idx < NKEYS);
        make_key(idx, k);
        CHECK(memcmp(k, kp, KEY_LEN) == 0);
        CHECK(well_formed(idx, vp, vl));
        if (idx >= base && idx < base + RANGE) {
            uint32_t i = idx - base;
            CHECK(!seen[i]);
            seen[i] = 1;
            CHECK(w->present[i]);
            CHECK(vl == make_value(idx, w->ver[i], want));
            CHECK(memcmp(vp, want, vl) == 0);
            own++;
        }
    }
    armdb_iter_close(it);
    CHECK(own == w->live);
}

static void one_op(struct worker *w)
{
    uint8_t k[KEY_LEN], val[VMAX], cur[VMAX], buf[VMAX];
    uint32_t i = (uint32_t)(t_rand(&w->rng) % RANGE), idx = w->no * RANGE + i;
    unsigned dice = (unsigned)(t_rand(&w->rng) % 100);
    size_t vl, cl = 0;
    uint64_t v;

    make_key(idx, k);
    if (w->present[i])
        cl = make_value(idx, w->ver[i], cur);

    if (dice < 28) {
        v = w->next_ver++;
        vl = make_value(idx, v, val);
        CHECK_OK(armdb_put(w->db, k, KEY_LEN, val, vl));
        set_own(w, i, v);
    } else if (dice < 38) {
        if (w->present[i]) {
            CHECK_OK(armdb_delete(w->db, k, KEY_LEN));
            w->present[i] = 0;
            w->live--;
        } else {
            CHECK_RC(armdb_delete(w->db, k, KEY_LEN), ARMDB_NOTFOUND);
        }
    } else if (dice < 46) {
        v = w->next_ver++;
        vl = make_value(idx, v, val);
        if (w->present[i]) {
            CHECK_RC(armdb_cas(w->db, k, KEY_LEN, NULL, 0, val, vl), ARMDB_EXISTS);
        } else {
            CHECK_OK(armdb_cas(w->db, k, KEY_LEN, NULL, 0, val, vl));
            set_own(w, i, v);
        }
    } else if (dice < 58) {
        v = w->next_ver++;
        vl = make_value(idx, v, val);
        if (!w->present[i]) {
            size_t el = make_value(idx, v + 1, cur);
            CHECK_RC(armdb_cas(w->db, k, KEY_LEN, cur, el, val, vl), ARMDB_NOTFOUND);
        } else if (t_rand(&w->rng) % 4) {
            CHECK_OK(armdb_cas(w->db, k, KEY_LEN, cur, cl, val, vl));
            set_own(w, i, v);
        } else {
            cur[t_rand(&w->rng) % cl] ^= 0x10;
            CHECK_RC(armdb_cas(w->db, k, KEY_LEN, cur, cl, val, vl), ARMDB_CONFLICT);
        }
    } else if (dice < 80) {
        vl = 99999;
        if (w->present[i]) {
            CHECK_OK(armdb_get(w->db, k, KEY_LEN, buf, sizeof(buf), &vl));
            CHECK(vl == cl && memcmp(buf, cur, vl) == 0);
        } else {
            CHECK_RC(armdb_get(w->db, k, KEY_LEN, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);
        }
    } else {
        /* A key of another thread: absent, or a well-formed value of it. */
        uint32_t other = (w->no + 1 + (uint32_t)(t_rand(&w->rng) % (NTHREADS - 1))) % NTHREADS;
        uint32_t oidx = other * RANGE + (uint32_t)(t_rand(&w->rng) % RANGE);
        int rc;
        make_key(oidx, k);
        vl = 99999;
        rc = armdb_get(w->db, k, KEY_LEN, buf, sizeof(buf), &vl);
        if (rc == 0) {
            CHECK(well_formed(oidx, buf, vl));
            w->foreign_hits++;
        } else {
            CHECK_RC(rc, ARMDB_NOTFOUND);
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (uint64_t op = 0; op < w->ops; op++) {
        one_op(w);
        if (op % 10000 == 9999)
            scan(w);
    }
    scan(w);
    return NULL;
}

static armdb *open_store(const char *store)
{
    armdb_options o;
    armdb *db;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = 8;
    o.max_file_size = 65536;
    o.sync_mode = ARMDB_SYNC_INTERVAL;
    o.sync_interval_ms = 5;
    o.flags = ARMDB_CREATE;
    t_key_options(&o);
    CHECK_OK(armdb_open(store, &o, &db));
    return db;
}

/* Every key of every range, by get, and one scan. */
static void verify_all(armdb *db, struct worker *ws)
{
    uint8_t k[KEY_LEN], want[VMAX], buf[VMAX];
    uint64_t live = 0;
    for (unsigned t = 0; t < NTHREADS; t++) {
        for (uint32_t i = 0; i < RANGE; i++) {
            uint32_t idx = t * RANGE + i;
            size_t vl = 99999;
            make_key(idx, k);
            if (ws[t].present[i]) {
                size_t wl = make_value(idx, ws[t].ver[i], want);
                CHECK_OK(armdb_get(db, k, KEY_LEN, buf, sizeof(buf), &vl));
                CHECK(vl == wl && memcmp(buf, want, vl) == 0);
            } else {
                CHECK_RC(armdb_get(db, k, KEY_LEN, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);
            }
        }
        live += ws[t].live;
        ws[t].db = db;
        scan(&ws[t]);
    }
    CHECK(armdb_count(db) == live);
}

int main(void)
{
    static struct worker ws[NTHREADS];
    uint64_t scale = t_env_u64("ARMDB_TEST_SCALE", 100);
    uint64_t ops = OPS_PER_THREAD * scale / 100, hits = 0;
    char *dir = t_tmpdir("stress");
    char *store = t_path(dir, "db");
    armdb_stat st;
    armdb *db;

    g_seed = t_env_u64("ARMDB_SEED", 31337);
    atexit(report);
    if (ops < 2000)
        ops = 2000;
    db = open_store(store);
    for (unsigned t = 0; t < NTHREADS; t++) {
        ws[t].no = t;
        ws[t].rng = t_mix(g_seed, t);
        ws[t].ops = ops;
        ws[t].db = db;
        ws[t].next_ver = 1;
        CHECK(pthread_create(&ws[t].tid, NULL, worker_main, &ws[t]) == 0);
    }
    for (unsigned t = 0; t < NTHREADS; t++) {
        CHECK(pthread_join(ws[t].tid, NULL) == 0);
        hits += ws[t].foreign_hits;
    }
    /* The cross-range reads did see other threads' values. */
    CHECK(hits > 0);

    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.rotations > 0);
    CHECK(st.syncs > 0);
    verify_all(db, ws);
    CHECK_OK(armdb_close(db));

    db = open_store(store);
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.files_scanned == 0);
    verify_all(db, ws);
    CHECK_OK(armdb_close(db));

    free(store);
    t_rmtree(dir);
    free(dir);
    g_passed = 1;
    return 0;
}
