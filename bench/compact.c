/*
 * compact.c - how fast compaction reclaims space, and what a foreground
 * thread sees while it runs.
 *
 *   build/bench-compact [KEYS] > bench/results/compact-DATE.json
 *
 * A store of KEYS (default 1M) random 16-byte keys with 256-byte values,
 * 2 shards, 64 MiB files, background compaction off. Every key is written,
 * then 60% of them (a random choice) once more, so the older files are
 * about 60% garbage. Then one foreground thread runs a 90/10 get/put mix
 * on random keys, timing every call: first for BASELINE_S seconds with
 * nothing else going on, then while armdb_compact() runs in a second
 * thread, until it returns. Reported, as JSON on stdout (a summary on
 * stderr): compaction's wall time, the bytes it read and wrote and
 * reclaimed (armdb_stat), its rates, and the foreground's ops/s and
 * latency percentiles (p50, p99, p99.9, max) in both phases.
 */
#define _GNU_SOURCE
#define BENCH_PROG "bench-compact"
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define KEY_LEN 16
#define VAL_LEN 256
#define BASELINE_S 3.0
#define MAX_SAMPLES (64u << 20)

static size_t g_n;
static unsigned char *g_keys;
static atomic_bool g_done;

struct lat {
    double *v;
    size_t n, cap;
    double secs;
};

static void lat_add(struct lat *l, double x)
{
    if (l->n == l->cap) {
        if (l->cap >= MAX_SAMPLES)
            return;
        l->cap = l->cap ? l->cap * 2 : 1 << 16;
        if (!(l->v = realloc(l->v, l->cap * sizeof *l->v)))
            DIE("out of memory");
    }
    l->v[l->n++] = x;
}

static double pct(const struct lat *l, double p)
{
    if (!l->n)
        return 0;
    size_t i = (size_t)(p * (double)(l->n - 1));
    return l->v[i];
}

static void value_of(size_t i, uint64_t gen, unsigned char *v)
{
    uint64_t s = i * 0x9e3779b97f4a7c15ull ^ gen;
    for (size_t j = 0; j < VAL_LEN; j += 8) {
        uint64_t x = splitmix64(&s);
        memcpy(v + j, &x, 8);
    }
}

/* The mix until *stop (or for secs, if secs > 0), every call timed (µs). */
static void mix(armdb *db, struct lat *l, double secs, uint64_t seed)
{
    unsigned char v[VAL_LEN], out[VAL_LEN];
    double t0 = now_s();
    for (;;) {
        for (int k = 0; k < 64; k++) {
            size_t i = (size_t)(splitmix64(&seed) % g_n);
            const unsigned char *key = g_keys + i * KEY_LEN;
            double t = now_s();
            if (splitmix64(&seed) % 10 == 0) {
                value_of(i, seed, v);
                ARMDB_OK(armdb_put(db, key, KEY_LEN, v, VAL_LEN));
            } else {
                size_t vl;
                ARMDB_OK(armdb_get(db, key, KEY_LEN, out, sizeof out, &vl));
                if (vl != VAL_LEN)
                    DIE("key %zu: %zu bytes", i, vl);
            }
            lat_add(l, (now_s() - t) * 1e6);
        }
        double el = now_s() - t0;
        if (secs > 0 ? el >= secs : atomic_load(&g_done)) {
            l->secs = el;
            break;
        }
    }
    qsort(l->v, l->n, sizeof *l->v, cmp_double);
}

struct job {
    armdb *db;
    double secs;
};

static void *compactor(void *p)
{
    struct job *j = p;
    double t = now_s();
    ARMDB_OK(armdb_compact(j->db));
    j->secs = now_s() - t;
    atomic_store(&g_done, true);
    return NULL;
}

static void print_lat(const char *name, const struct lat *l, bool comma)
{
    printf("    \"%s\": {\"ops_per_s\": %.0f, \"p50_us\": %.2f, \"p99_us\": %.2f, \"p999_us\": %.2f, \"max_us\": %.1f}%s\n",
           name, (double)l->n / l->secs, pct(l, 0.5), pct(l, 0.99), pct(l, 0.999), pct(l, 1.0), comma ? "," : "");
}

int main(int argc, char **argv)
{
    g_n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 1000000;
    if (g_n < 1000 || g_n > 100000000)
        DIE("KEYS: %s is not from 1000 to 100000000", argc > 1 ? argv[1] : "");
    tmp_create("armdb-compact");
    machine_probe();

    uint64_t seed = 42;
    if (!(g_keys = malloc(g_n * KEY_LEN)))
        DIE("out of memory");
    for (size_t i = 0; i < g_n * KEY_LEN; i += 8) {
        uint64_t x = splitmix64(&seed);
        memcpy(g_keys + i, &x, 8);
    }
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = 2;
    o.max_file_size = 64ull << 20;
    o.flags = ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT;
    armdb *db;
    ARMDB_OK(armdb_open(store_dir("s"), &o, &db));
    unsigned char v[VAL_LEN];
    fprintf(stderr, "bench-compact: writing %zu keys, then 60%% of them again\n", g_n);
    for (size_t i = 0; i < g_n; i++) {
        value_of(i, 0, v);
        ARMDB_OK(armdb_put(db, g_keys + i * KEY_LEN, KEY_LEN, v, VAL_LEN));
    }
    uint32_t *order = shuffled(g_n, 7);
    for (size_t i = 0; i < g_n * 6 / 10; i++) {
        value_of(order[i], 1, v);
        ARMDB_OK(armdb_put(db, g_keys + (size_t)order[i] * KEY_LEN, KEY_LEN, v, VAL_LEN));
    }
    free(order);
    ARMDB_OK(armdb_sync(db));
    armdb_stat s0, s1;
    ARMDB_OK(armdb_stats(db, &s0));
    uint64_t disk0 = disk_usage(g_tmp);

    fprintf(stderr, "bench-compact: baseline mix, %.0f s\n", BASELINE_S);
    struct lat base = {0}, during = {0};
    mix(db, &base, BASELINE_S, 1);
    fprintf(stderr, "bench-compact: the mix while armdb_compact() runs\n");
    struct job j = {.db = db};
    pthread_t th;
    if (pthread_create(&th, NULL, compactor, &j) != 0)
        DIE("pthread_create");
    mix(db, &during, 0, 2);
    pthread_join(th, NULL);
    ARMDB_OK(armdb_stats(db, &s1));
    uint64_t disk1 = disk_usage(g_tmp);
    ARMDB_OK(armdb_close(db));

    double rd = (double)(s1.compact_bytes_read - s0.compact_bytes_read);
    double wr = (double)(s1.compact_bytes_written - s0.compact_bytes_written);
    printf("{\n  \"machine\": {\"cpu\": \"%s\", \"cores\": %ld, \"kernel\": \"%s\", \"fs\": \"%s\"},\n", g_m.cpu,
           g_m.cores, g_m.kernel, g_m.fs);
    printf("  \"config\": {\"keys\": %zu, \"key_len\": %d, \"value_len\": %d, \"shards\": 2, "
           "\"max_file_size\": %d, \"overwritten_pct\": 60, \"mix\": \"90%% get, 10%% put\"},\n",
           g_n, KEY_LEN, VAL_LEN, 64 << 20);
    printf("  \"compaction\": {\"seconds\": %.3f, \"files\": %" PRIu64 ", \"bytes_read\": %.0f, "
           "\"bytes_written\": %.0f, \"bytes_reclaimed\": %" PRIu64 ", \"read_mib_per_s\": %.1f, "
           "\"disk_before\": %" PRIu64 ", \"disk_after\": %" PRIu64 "},\n",
           j.secs, s1.compactions - s0.compactions, rd, wr, s1.bytes_reclaimed - s0.bytes_reclaimed,
           rd / j.secs / 1048576.0, disk0, disk1);
    printf("  \"foreground\": {\n");
    print_lat("baseline", &base, true);
    print_lat("during_compaction", &during, false);
    printf("  }\n}\n");
    fprintf(stderr,
            "bench-compact: compacted %" PRIu64 " files, %.0f MiB read, %.0f MiB written in %.2f s (%.0f MiB/s read); "
            "disk %.0f -> %.0f MiB\n",
            s1.compactions - s0.compactions, rd / 1048576, wr / 1048576, j.secs, rd / j.secs / 1048576,
            (double)disk0 / 1048576, (double)disk1 / 1048576);
    fprintf(stderr, "bench-compact: foreground p99 %.1f us baseline, %.1f us during compaction; max %.0f / %.0f us\n",
            pct(&base, 0.99), pct(&during, 0.99), pct(&base, 1.0), pct(&during, 1.0));
    free(base.v);
    free(during.v);
    free(g_keys);
    return 0;
}
