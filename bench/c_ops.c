/*
 * c_ops.c - the C side of the Lua-versus-C benchmark (bench/lua_ops.lua
 * runs it and puts its figures beside the Lua ones; see bench/lua-vs-c.md).
 *
 * One repetition: a fresh raw store, N puts (in key order), an untimed pass
 * that reads every key back and checks its value (it also warms the block
 * cache), then N gets in a random order. Prints one JSON object with the
 * ns per put and per get.
 *
 *   c_ops MODE N DIR [WARM_DIR]
 *        MODE: bytes  16-byte keys, 100-byte values (variable)
 *              u64    8-byte big-endian keys, 8-byte fixed values
 *                     (doubles), kept inline
 *        DIR (and WARM_DIR) must not hold a store; they are left for the
 *        caller to remove. With WARM_DIR, an untimed round on a store there
 *        comes first (see main()).
 *
 * The data is built exactly as bench/lua_ops.lua builds it (same generator,
 * same seed, same read order), before the clock starts. The timed loops do
 * the call and nothing else but add the value's length to a sum (so that
 * the read is used); checking every value is done in the untimed pass, and
 * the sum is compared after the loop.
 *
 * Build: cc -O2 -Isrc bench/c_ops.c build/libarmdb.a -luring -lxxhash -lpthread
 */
#define _GNU_SOURCE
#include "armdb.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_PROG "c_ops"
#include "common.h"

enum {
    POOL_SIZE = 1 << 20, /* 100-byte values are windows into this random pool */
    BYTES_KEY = 16,
    BYTES_VAL = 100,
};

#define SEED 0x61726d6462ull       /* keys and pool (the seed of bench/core.c) */
#define ORDER_SEED 0x6f72646572ull /* the random read order */
#define U53 ((1ull << 53) - 1)     /* u64 keys stay below 2^53: exact as Lua numbers */

static void die_rc(const char *what, int rc)
{
    DIE("%s: %s", what, armdb_errmsg()[0] ? armdb_errmsg() : armdb_strerror(rc));
}

static double now_ns(void) { return now_s() * 1e9; }

static size_t g_n, g_klen, g_vlen;
static unsigned char *g_keys; /* n keys back to back */
static unsigned char *g_vals; /* n values back to back */
static uint32_t *g_order;     /* a permutation of 0..n-1: the read order */

/* bytes: key i = 16 bytes of two splitmix64 draws (little-endian); value i
 * = the 100 bytes of the pool at (i * 2654435761) mod (pool - 100), the
 * pool being the next 2^17 draws. u64: key i = the big-endian bytes of the
 * low 53 bits of draw i; value i = the double i + 0.5. */
static void make_data(int u64)
{
    uint64_t s = SEED;
    g_keys = malloc(g_n * g_klen);
    g_vals = malloc(g_n * g_vlen);
    if (!g_keys || !g_vals)
        DIE("out of memory for %zu keys", g_n);
    if (u64) {
        for (size_t i = 0; i < g_n; i++) {
            uint64_t r = splitmix64(&s) & U53;
            for (int b = 0; b < 8; b++)
                g_keys[i * 8 + (size_t)b] = (unsigned char)(r >> (56 - 8 * b));
            double d = (double)i + 0.5;
            memcpy(g_vals + i * 8, &d, 8);
        }
    } else {
        static unsigned char pool[POOL_SIZE];
        for (size_t i = 0; i < g_n * BYTES_KEY; i += 8) {
            uint64_t r = splitmix64(&s);
            memcpy(g_keys + i, &r, 8);
        }
        for (size_t i = 0; i < POOL_SIZE; i += 8) {
            uint64_t r = splitmix64(&s);
            memcpy(pool + i, &r, 8);
        }
        for (size_t i = 0; i < g_n; i++)
            memcpy(g_vals + i * BYTES_VAL, pool + (i * 2654435761ull) % (POOL_SIZE - BYTES_VAL), BYTES_VAL);
    }
    g_order = shuffled(g_n, ORDER_SEED);
}

struct figures {
    double put_ns, get_ns;
    uint32_t io_backend;
};

/* One round on a fresh store at dir: timed puts, the check pass, timed gets. */
static struct figures run_once(const char *dir, int u64)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = (uint32_t)g_klen;
    o.value_len = u64 ? 8 : 0;
    o.sync_mode = ARMDB_SYNC_NONE;
    o.flags = ARMDB_CREATE;
    /* every value read stays in memory: 256 bytes per key, at least 64 MiB */
    o.cache_size = g_n * 256 > (64u << 20) ? g_n * 256 : (64u << 20);
    armdb *db;
    int rc = armdb_open(dir, &o, &db);
    if (rc)
        die_rc("open", rc);

    struct figures f;
    double t0 = now_ns();
    for (size_t i = 0; i < g_n; i++) {
        rc = armdb_put(db, g_keys + i * g_klen, g_klen, g_vals + i * g_vlen, g_vlen);
        if (rc)
            die_rc("put", rc);
    }
    f.put_ns = (now_ns() - t0) / (double)g_n;

    unsigned char buf[256];
    size_t vlen;
    for (size_t i = 0; i < g_n; i++) {
        rc = armdb_get(db, g_keys + i * g_klen, g_klen, buf, sizeof buf, &vlen);
        if (rc)
            die_rc("get (check pass)", rc);
        if (vlen != g_vlen || memcmp(buf, g_vals + i * g_vlen, g_vlen) != 0)
            DIE("key %zu: wrong value read back (%zu bytes)", i, vlen);
    }

    uint64_t sum = 0;
    t0 = now_ns();
    for (size_t j = 0; j < g_n; j++) {
        size_t i = g_order[j];
        rc = armdb_get(db, g_keys + i * g_klen, g_klen, buf, sizeof buf, &vlen);
        if (rc)
            die_rc("get", rc);
        sum += vlen;
    }
    f.get_ns = (now_ns() - t0) / (double)g_n;
    if (sum != (uint64_t)g_n * g_vlen)
        DIE("gets returned %" PRIu64 " bytes, expected %zu", sum, g_n * g_vlen);

    armdb_stat st;
    if ((rc = armdb_stats(db, &st)))
        die_rc("stats", rc);
    if (st.keys != g_n)
        DIE("store holds %" PRIu64 " keys, expected %zu", st.keys, g_n);
    f.io_backend = st.io_backend;
    if ((rc = armdb_close(db)))
        die_rc("close", rc);
    return f;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5)
        DIE("usage: c_ops bytes|u64 N DIR [WARM_DIR]");
    int u64 = strcmp(argv[1], "u64") == 0;
    if (!u64 && strcmp(argv[1], "bytes") != 0)
        DIE("mode must be bytes or u64, got %s", argv[1]);
    char *end;
    unsigned long long n = strtoull(argv[2], &end, 10);
    if (*end || n < 1 || n > 50000000)
        DIE("N must be 1..50000000, got %s", argv[2]);
    g_n = (size_t)n;
    g_klen = u64 ? 8 : BYTES_KEY;
    g_vlen = u64 ? 8 : BYTES_VAL;
    make_data(u64);

    /* A fresh process pays page faults for the memory its first store
     * grows into (index, block cache) that a process which already opened
     * and closed one may not: the Lua side is such a process, so the
     * round that counts here is the second, as it is there. */
    if (argc == 5)
        (void)run_once(argv[4], u64);
    struct figures f = run_once(argv[3], u64);

    printf("{\"mode\":\"%s\",\"n\":%zu,\"put_ns\":%.1f,\"get_ns\":%.1f,\"io_backend\":\"%s\"}\n", argv[1],
           g_n, f.put_ns, f.get_ns, f.io_backend == ARMDB_IO_URING ? "io_uring" : "pwrite");
    return 0;
}
