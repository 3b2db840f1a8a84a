/*
 * get_many.c - armdb_get_many returns exactly what armdb_get returns, key by
 * key, for batches that mix absent, deleted, buffered (unsynced), cached,
 * cold and inline values, damaged entries and values that do not fit, on
 * both read paths (io_uring and pread); and it refuses bad arguments.
 */
#include "test.h"

#define KLEN 16
#define NKEYS 600
#define VMAX 3000

static void make_key(uint32_t i, unsigned char *k)
{
    memset(k, 0, KLEN);
    memcpy(k, &i, 4);
    memcpy(k + 8, "getmany!", 8);
}

static size_t make_val(uint32_t i, uint32_t ver, unsigned char *v)
{
    size_t n = (i * 7919u + ver * 131u) % VMAX;
    for (size_t j = 0; j < n; j++)
        v[j] = (unsigned char)(i + ver * 3 + j * 7);
    return n;
}

static armdb *open_store(const char *dir, uint32_t value_len, uint32_t flags)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.value_len = value_len;
    o.shards = 2;
    o.cache_size = 64 << 10;
    o.max_file_size = 64 << 10;
    o.sync_mode = ARMDB_SYNC_NONE;
    o.flags = flags;
    armdb *db;
    t_key_options(&o);
    CHECK_OK(armdb_open(dir, &o, &db));
    return db;
}

/* Compare one batch against single gets made right after it. */
static void check_batch(armdb *db, const uint32_t *ids, size_t n, size_t cap)
{
    unsigned char *keys = malloc(n * KLEN), *out = malloc(cap ? cap : 1), *one = malloc(VMAX + 8);
    size_t *offs = malloc(n * sizeof *offs), *vlens = malloc(n * sizeof *vlens);
    int *rcs = malloc(n * sizeof *rcs);
    CHECK(keys && out && one && offs && vlens && rcs);
    for (size_t i = 0; i < n; i++)
        make_key(ids[i], keys + i * KLEN);
    int rc = armdb_get_many(db, keys, KLEN, n, out, cap, offs, vlens, rcs);
    CHECK(rc == 0 || rc == ARMDB_BUFSMALL);
    int small = 0;
    size_t end = 0;
    for (size_t i = 0; i < n; i++) {
        size_t vl = 0;
        int grc = armdb_get(db, keys + i * KLEN, KLEN, one, VMAX + 8, &vl);
        if (rcs[i] == ARMDB_BUFSMALL) {
            /* It did not fit in what was left: the length is still told. */
            CHECK(grc == 0 && vlens[i] == vl && offs[i] + vl > cap);
            small = 1;
            continue;
        }
        if (rcs[i] != grc) {
            fprintf(stderr, "get_many: key %u: batch rc %d (%s), get rc %d\n", ids[i], rcs[i],
                    armdb_strerror(rcs[i]), grc);
            exit(1);
        }
        if (grc == 0) {
            CHECK(vlens[i] == vl && offs[i] >= end && offs[i] + vl <= cap);
            CHECK(vl == 0 || memcmp(out + offs[i], one, vl) == 0);
            end = offs[i] + vl;
        }
    }
    CHECK(rc == (small ? ARMDB_BUFSMALL : 0));
    free(keys);
    free(out);
    free(one);
    free(offs);
    free(vlens);
    free(rcs);
}

static void mixed(uint32_t flags)
{
    char *dir = t_tmpdir("getmany");
    char *store = t_path(dir, "s");
    armdb *db = open_store(store, 0, flags | ARMDB_CREATE);
    unsigned char k[KLEN], v[VMAX];
    for (uint32_t i = 0; i < NKEYS; i++) {
        make_key(i, k);
        CHECK_OK(armdb_put(db, k, KLEN, v, make_val(i, 1, v)));
    }
    for (uint32_t i = 0; i < NKEYS; i += 9) {
        make_key(i, k);
        CHECK_OK(armdb_delete(db, k, KLEN));
    }
    CHECK_OK(armdb_close(db));
    db = open_store(store, 0, flags);
    /* Overwrite some keys without a sync: their values are in the buffer. */
    for (uint32_t i = 1; i < NKEYS; i += 11) {
        make_key(i, k);
        CHECK_OK(armdb_put(db, k, KLEN, v, make_val(i, 2, v)));
    }
    /* Cache a few. */
    for (uint32_t i = 2; i < NKEYS; i += 13) {
        size_t vl;
        make_key(i, k);
        int rc = armdb_get(db, k, KLEN, v, sizeof v, &vl);
        CHECK(rc == 0 || rc == ARMDB_NOTFOUND);
    }
    uint32_t ids[ARMDB_BATCH_MAX];
    uint64_t seed = 99;
    for (int round = 0; round < 30; round++) {
        size_t n = 1 + (size_t)(t_rand(&seed) % 300);
        for (size_t j = 0; j < n; j++)
            ids[j] = (uint32_t)(t_rand(&seed) % (NKEYS + 50)); /* some never written */
        check_batch(db, ids, n, n * VMAX);
        check_batch(db, ids, n, (size_t)(t_rand(&seed) % (n * VMAX / 2 + 1))); /* too small */
    }
    /* The largest batch, every key, cold cache. */
    CHECK_OK(armdb_close(db));
    db = open_store(store, 0, flags);
    for (uint32_t j = 0; j < ARMDB_BATCH_MAX; j++)
        ids[j] = j % (NKEYS + 50);
    check_batch(db, ids, ARMDB_BATCH_MAX, (size_t)ARMDB_BATCH_MAX * VMAX);

    /* Arguments. */
    size_t offs[2], vlens[2];
    int rcs[2];
    unsigned char keys[2 * KLEN], out[16];
    make_key(1, keys);
    make_key(2, keys + KLEN);
    CHECK_RC(armdb_get_many(db, keys, KLEN, 0, out, sizeof out, offs, vlens, rcs), ARMDB_INVAL);
    CHECK_RC(armdb_get_many(db, keys, KLEN, ARMDB_BATCH_MAX + 1, out, sizeof out, offs, vlens, rcs), ARMDB_INVAL);
    CHECK_RC(armdb_get_many(db, keys, KLEN - 1, 2, out, sizeof out, offs, vlens, rcs), ARMDB_KEYLEN);
    CHECK_RC(armdb_get_many(db, NULL, KLEN, 2, out, sizeof out, offs, vlens, rcs), ARMDB_INVAL);
    CHECK_RC(armdb_get_many(db, keys, KLEN, 2, out, sizeof out, NULL, vlens, rcs), ARMDB_INVAL);
    CHECK_RC(armdb_get_many(db, keys, KLEN, 2, NULL, 5, offs, vlens, rcs), ARMDB_INVAL);
    CHECK_RC(armdb_get_many(NULL, keys, KLEN, 2, out, sizeof out, offs, vlens, rcs), ARMDB_INVAL);
    CHECK_OK(armdb_close(db));

    /* A damaged entry is ARMDB_CORRUPT for its key alone. */
    char *data = t_path(store, "000/00000001.data");
    size_t len;
    unsigned char *bytes = t_read_file(data, &len);
    CHECK(len > 8192);
    bytes[5000] ^= 0x40; /* inside some entry of the first file */
    FILE *f = fopen(data, "r+b");
    CHECK(f && fwrite(bytes, 1, len, f) == len && fclose(f) == 0);
    free(bytes);
    db = open_store(store, 0, flags);
    for (uint32_t j = 0; j < NKEYS; j++)
        ids[j] = j;
    check_batch(db, ids, NKEYS, (size_t)NKEYS * VMAX);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(data);
    free(store);
    free(dir);
}

/* Fixed-length values come from the index. */
static void inline_values(void)
{
    char *dir = t_tmpdir("getmany");
    char *store = t_path(dir, "s");
    armdb *db = open_store(store, 8, ARMDB_CREATE);
    unsigned char k[KLEN];
    for (uint64_t i = 0; i < 300; i++) {
        make_key((uint32_t)i, k);
        uint64_t v = i * 1000003;
        CHECK_OK(armdb_put(db, k, KLEN, &v, 8));
    }
    CHECK_OK(armdb_close(db));
    db = open_store(store, 8, 0);
    uint32_t ids[400];
    for (uint32_t j = 0; j < 400; j++)
        ids[j] = (j * 37) % 350;
    check_batch(db, ids, 400, 400 * 8);
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.cache_misses == 0); /* nothing was read from the device */
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

int main(void)
{
    mixed(0);
    mixed(ARMDB_NO_URING);
    inline_values();
    return 0;
}
