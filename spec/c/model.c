/*
 * model.c - the store behaves like a map, whatever the sequence of calls.
 *
 * Mixed put / delete / cas (both forms) / get, each result checked against an
 * in-memory reference map, with the store closed and reopened every
 * 1000..5000 operations. After each reopen armdb_count() and a full scan
 * must equal the model exactly (every live key once, with its newest value,
 * nothing else). Configurations: three seeds on 1, 4 and 16 shards, every
 * sync mode, 64 KiB data files (so rotation and hints are used on every
 * reopen), and a fixed-value store. Values are derived from (key, version),
 * so a stale or foreign value is detected.
 *
 * Replay: ARMDB_SEED=<seed> ARMDB_MODEL_CONFIG=<n>, both printed on failure;
 * ARMDB_TEST_SCALE=<percent> scales the operation counts.
 */
#include "test.h"

#define KEY_LEN 16
#define NKEYS 3000
#define VMAX 600
#define FIXED_LEN 8

struct cfg {
    const char *name;
    uint32_t shards;
    uint32_t sync_mode;
    uint32_t value_len;
    uint64_t ops;
    uint64_t seed_off; /* added to ARMDB_SEED */
    uint32_t wbuf;     /* write_buffer_size, 0 = default */
};

struct run {
    const struct cfg *cfg;
    uint64_t rng;
    char *dir;
    char *store;
    armdb *db;
    uint8_t present[NKEYS];
    uint64_t ver[NKEYS];
    uint64_t live;
    uint64_t next_ver;
    uint64_t reopens;
};

/* What was running, printed if the program exits without passing. */
static const char *g_cfg = "setup";
static size_t g_cfg_no;
static uint64_t g_seed;
static uint64_t g_op;
static int g_passed;

static void report(void)
{
    if (!g_passed)
        fprintf(stderr,
                "model: failed in config %zu '%s' at op %" PRIu64 "; replay with ARMDB_SEED=%" PRIu64
                " ARMDB_MODEL_CONFIG=%zu\n",
                g_cfg_no, g_cfg, g_op, g_seed, g_cfg_no);
}

/* Key idx: 4 bytes of index, 12 bytes derived from it (so decode can check). */
static void make_key(uint32_t idx, uint8_t *k)
{
    k[0] = (uint8_t)idx;
    k[1] = (uint8_t)(idx >> 8);
    k[2] = (uint8_t)(idx >> 16);
    k[3] = (uint8_t)(idx >> 24);
    t_fill(t_mix(idx, 0x6b6579), k + 4, KEY_LEN - 4);
}

static int decode_key(const uint8_t *k, uint32_t *idx)
{
    uint8_t want[KEY_LEN];
    uint32_t i = t_le32(k);
    if (i >= NKEYS)
        return -1;
    make_key(i, want);
    if (memcmp(want, k, KEY_LEN) != 0)
        return -1;
    *idx = i;
    return 0;
}

/* The value of version `ver` of key idx: length and bytes both derived. */
static size_t make_value(const struct run *r, uint32_t idx, uint64_t ver, uint8_t *out)
{
    uint64_t s = t_mix(idx, ver);
    size_t len = r->cfg->value_len ? r->cfg->value_len : (size_t)(t_rand(&s) % (VMAX + 1));
    t_fill(s, out, len);
    return len;
}

static void open_store(struct run *r)
{
    armdb_options o;
    armdb_options_init(&o);
    /* Half of the reopens give the shape as stored (zeros), half restate it. */
    if (r->reopens == 0 || t_rand(&r->rng) % 2) {
        o.key_len = KEY_LEN;
        o.value_len = r->cfg->value_len;
        o.shards = r->cfg->shards;
    }
    o.sync_mode = r->cfg->sync_mode;
    o.sync_interval_ms = 20;
    o.write_buffer_size = r->cfg->wbuf;
    o.max_file_size = 65536;
    o.flags = ARMDB_CREATE;
    t_key_options(&o);
    CHECK_OK(armdb_open(r->store, &o, &r->db));
}

/* Count, stats and one full scan must equal the model. */
static void verify_full(struct run *r)
{
    static uint8_t seen[NKEYS];
    uint8_t want[VMAX + 8];
    armdb_stat st;
    armdb_iter *it;
    uint64_t n = 0;
    int rc;

    CHECK(armdb_count(r->db) == r->live);
    CHECK_OK(armdb_stats(r->db, &st));
    CHECK(st.keys == r->live);
    CHECK(st.shards == r->cfg->shards);
    CHECK(st.key_len == KEY_LEN);
    CHECK(st.value_len == r->cfg->value_len);

    memset(seen, 0, sizeof(seen));
    CHECK_OK(armdb_iter_open(r->db, NULL, 0, NULL, 0, 0, &it));
    for (;;) {
        const void *k, *v;
        size_t kl, vl, wl;
        uint32_t idx;
        rc = armdb_iter_next(it, &k, &kl, &v, &vl);
        if (rc == ARMDB_NOTFOUND)
            break;
        CHECK_OK(rc);
        CHECK(kl == KEY_LEN);
        CHECK(decode_key(k, &idx) == 0);
        CHECK(!seen[idx]);
        seen[idx] = 1;
        CHECK(r->present[idx]);
        wl = make_value(r, idx, r->ver[idx], want);
        CHECK(vl == wl);
        CHECK(vl == 0 || memcmp(v, want, vl) == 0);
        n++;
    }
    armdb_iter_close(it);
    CHECK(n == r->live);
}

/* Every key, present or not, by get. */
static void verify_gets(struct run *r)
{
    uint8_t k[KEY_LEN], want[VMAX + 8], buf[VMAX + 8];
    for (uint32_t i = 0; i < NKEYS; i++) {
        size_t vl = 12345;
        make_key(i, k);
        if (r->present[i]) {
            size_t wl = make_value(r, i, r->ver[i], want);
            CHECK_OK(armdb_get(r->db, k, KEY_LEN, buf, sizeof(buf), &vl));
            CHECK(vl == wl);
            CHECK(vl == 0 || memcmp(buf, want, vl) == 0);
        } else {
            CHECK_RC(armdb_get(r->db, k, KEY_LEN, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);
        }
    }
}

/* A clean close leaves every file hinted and nothing torn. */
static void reopen(struct run *r)
{
    armdb_stat st;
    CHECK_OK(armdb_close(r->db));
    r->db = NULL;
    r->reopens++;
    open_store(r);
    CHECK_OK(armdb_stats(r->db, &st));
    CHECK(st.files_scanned == 0);
    CHECK(st.torn_bytes == 0);
    CHECK(st.corrupt_entries == 0);
    verify_full(r);
}

static void set_model(struct run *r, uint32_t idx, uint64_t ver)
{
    if (!r->present[idx])
        r->live++;
    r->present[idx] = 1;
    r->ver[idx] = ver;
}

static void one_op(struct run *r)
{
    uint8_t k[KEY_LEN], val[VMAX + 8], cur[VMAX + 8], buf[VMAX + 8];
    uint32_t idx = (uint32_t)(t_rand(&r->rng) % NKEYS);
    unsigned dice = (unsigned)(t_rand(&r->rng) % 100);
    size_t vl, cl = 0;
    uint64_t v;

    make_key(idx, k);
    if (r->present[idx])
        cl = make_value(r, idx, r->ver[idx], cur);

    if (dice < 30) { /* put */
        v = r->next_ver++;
        vl = make_value(r, idx, v, val);
        CHECK_OK(armdb_put(r->db, k, KEY_LEN, val, vl));
        set_model(r, idx, v);
    } else if (dice < 45) { /* delete */
        if (r->present[idx]) {
            CHECK_OK(armdb_delete(r->db, k, KEY_LEN));
            r->present[idx] = 0;
            r->live--;
        } else {
            CHECK_RC(armdb_delete(r->db, k, KEY_LEN), ARMDB_NOTFOUND);
        }
    } else if (dice < 55) { /* cas, key must be absent */
        v = r->next_ver++;
        vl = make_value(r, idx, v, val);
        if (r->present[idx]) {
            CHECK_RC(armdb_cas(r->db, k, KEY_LEN, NULL, 0, val, vl), ARMDB_EXISTS);
        } else {
            CHECK_OK(armdb_cas(r->db, k, KEY_LEN, NULL, 0, val, vl));
            set_model(r, idx, v);
        }
    } else if (dice < 70) { /* cas against an expected value */
        v = r->next_ver++;
        vl = make_value(r, idx, v, val);
        if (!r->present[idx]) {
            size_t el = make_value(r, idx, v + 1, cur);
            CHECK_RC(armdb_cas(r->db, k, KEY_LEN, cur, el, val, vl), ARMDB_NOTFOUND);
        } else if (t_rand(&r->rng) % 3) {
            CHECK_OK(armdb_cas(r->db, k, KEY_LEN, cur, cl, val, vl));
            set_model(r, idx, v);
        } else {
            /* A near miss: one byte off, or one byte longer than empty. */
            size_t el = cl;
            if (cl == 0)
                cur[el++] = 0;
            else
                cur[t_rand(&r->rng) % cl] ^= (uint8_t)(1 + t_rand(&r->rng) % 255);
            CHECK_RC(armdb_cas(r->db, k, KEY_LEN, cur, el, val, vl), ARMDB_CONFLICT);
        }
    } else if (dice < 97) { /* get */
        vl = 99999;
        if (r->present[idx]) {
            CHECK_OK(armdb_get(r->db, k, KEY_LEN, buf, sizeof(buf), &vl));
            CHECK(vl == cl);
            CHECK(vl == 0 || memcmp(buf, cur, vl) == 0);
        } else {
            CHECK_RC(armdb_get(r->db, k, KEY_LEN, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);
        }
    } else { /* get with no buffer: learn the length */
        vl = 99999;
        if (!r->present[idx]) {
            CHECK_RC(armdb_get(r->db, k, KEY_LEN, NULL, 0, &vl), ARMDB_NOTFOUND);
        } else if (cl == 0) {
            CHECK_OK(armdb_get(r->db, k, KEY_LEN, NULL, 0, &vl));
            CHECK(vl == 0);
        } else {
            CHECK_RC(armdb_get(r->db, k, KEY_LEN, NULL, 0, &vl), ARMDB_BUFSMALL);
            CHECK(vl == cl);
        }
    }
}

static void run_cfg(const struct cfg *c, uint64_t seed, uint64_t scale)
{
    struct run *r = calloc(1, sizeof(*r));
    uint64_t ops = c->ops * scale / 100, next_reopen;
    CHECK(r != NULL);
    if (ops < 1000)
        ops = 1000;
    g_cfg = c->name;
    g_op = 0;
    r->cfg = c;
    r->rng = seed;
    r->next_ver = 1;
    r->dir = t_tmpdir("model");
    r->store = t_path(r->dir, "db");
    open_store(r);

    if (c->value_len) {
        uint8_t k[KEY_LEN], v[FIXED_LEN + 1] = {0};
        make_key(0, k);
        CHECK_RC(armdb_put(r->db, k, KEY_LEN, v, c->value_len - 1), ARMDB_TOOBIG);
        CHECK_RC(armdb_put(r->db, k, KEY_LEN, v, c->value_len + 1), ARMDB_TOOBIG);
        CHECK(armdb_count(r->db) == 0);
    }

    next_reopen = 1000 + t_rand(&r->rng) % 4001;
    for (uint64_t op = 0; op < ops; op++) {
        g_op = op;
        if (op == next_reopen) {
            reopen(r);
            next_reopen = op + 1000 + t_rand(&r->rng) % 4001;
        }
        one_op(r);
    }
    g_op = ops;
    verify_gets(r);
    reopen(r);
    verify_gets(r);
    CHECK(r->reopens >= ops / 5000);
    CHECK_OK(armdb_close(r->db));
    t_rmtree(r->dir);
    free(r->store);
    free(r->dir);
    free(r);
}

int main(void)
{
    /* Three seeds (base, base+1, base+2) on each shard count, the sync mode
     * alternating; then sync always and the fixed-value store. 16 shards
     * take the smallest write buffer (more flushes, less memory). */
    static const struct cfg cfgs[] = {
        {"1 shard, sync none, seed+0", 1, ARMDB_SYNC_NONE, 0, 100000, 0, 0},
        {"4 shards, sync interval, seed+0", 4, ARMDB_SYNC_INTERVAL, 0, 100000, 0, 0},
        {"16 shards, sync none, seed+0", 16, ARMDB_SYNC_NONE, 0, 100000, 0, 65536},
        {"1 shard, sync interval, seed+1", 1, ARMDB_SYNC_INTERVAL, 0, 100000, 1, 0},
        {"4 shards, sync none, seed+1", 4, ARMDB_SYNC_NONE, 0, 100000, 1, 0},
        {"16 shards, sync interval, seed+1", 16, ARMDB_SYNC_INTERVAL, 0, 100000, 1, 65536},
        {"1 shard, sync none, seed+2", 1, ARMDB_SYNC_NONE, 0, 100000, 2, 0},
        {"4 shards, sync interval, seed+2", 4, ARMDB_SYNC_INTERVAL, 0, 100000, 2, 0},
        {"16 shards, sync none, seed+2", 16, ARMDB_SYNC_NONE, 0, 100000, 2, 65536},
        {"4 shards, sync always, seed+0", 4, ARMDB_SYNC_ALWAYS, 0, 25000, 0, 0},
        {"4 shards, fixed 8-byte values, seed+1", 4, ARMDB_SYNC_INTERVAL, FIXED_LEN, 100000, 1, 0},
    };
    uint64_t scale = t_env_u64("ARMDB_TEST_SCALE", 100);
    uint64_t only = t_env_u64("ARMDB_MODEL_CONFIG", UINT64_MAX);

    g_seed = t_env_u64("ARMDB_SEED", 20240601);
    atexit(report);
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
        if (only != UINT64_MAX && only != i)
            continue;
        g_cfg_no = i;
        run_cfg(&cfgs[i], t_mix(g_seed + cfgs[i].seed_off, 0x6d6f64656c), scale);
    }
    g_passed = 1;
    return 0;
}
