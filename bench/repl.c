/*
 * repl.c - replication on loopback: how fast a follower applies a
 * leader's writes, how far behind it runs, and how fast it copies an
 * existing store.
 *
 *   build/bench-repl [KEYS] > bench/results/repl-DATE.json
 *
 * One process, one machine, stores in TMPDIR: KEYS (default 1M) random
 * 16-byte keys with 100-byte values (fillrandom), 2 shards, the default
 * sync mode (ARMDB_SYNC_INTERVAL, 50 ms) on both sides, the follower
 * syncing and acknowledging every ack_interval_ms (default 50 ms).
 *
 *   local     the load written by one thread as fast as it can into a
 *             store nothing follows: the reference.
 *   live      the same load into a leader with a follower connected from
 *             the start. Every 5 ms the leader's last GSN and the
 *             follower's applied GSN are sampled: the lag in GSNs
 *             (p50, p99, max while the writer runs), and the time from
 *             the writer's last put to the follower's having it all.
 *             The follower's rate is the entries it applied over the time
 *             from the first write to caught up. The lag is also sampled
 *             as puts returned - entries applied (the applied GSN moves
 *             with the slowest shard, and only at marks and heartbeats).
 *   catch-up  a new follower of the loaded leader, from nothing: entries
 *             and bytes per second until it holds the leader's last GSN;
 *             then again with a shared secret (every frame encrypted).
 *
 * local and live run in turn BENCH_REPS times (default 3), then the two
 * catch-ups as often, from the last leader; the figures are medians.
 * JSON on stdout, a table on stderr.
 */
#define _GNU_SOURCE
#define BENCH_PROG "bench-repl"
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define KEY_LEN 16
#define VAL_LEN 100
#define SHARDS 2
#define SAMPLE_MS 5
#define WAIT_MS 600000u
#define REPS_MAX 9

static size_t g_n;
static unsigned char *g_keys;
static uint64_t g_gsn_base; /* the largest GSN of the stores written before */

static void value_of(size_t i, unsigned char *v)
{
    uint64_t s = i * 0x9e3779b97f4a7c15ull;
    for (size_t j = 0; j < VAL_LEN; j += 8) {
        uint64_t x = splitmix64(&s);
        memcpy(v + j, &x, VAL_LEN - j < 8 ? VAL_LEN - j : 8);
    }
}

/* A new store in the run's directory; its path into dir (if not NULL). */
static armdb *open_store(const char *name, uint32_t flags, char *dir, size_t cap)
{
    armdb_options o;
    armdb *db;
    const char *path = store_dir(name);
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = SHARDS;
    o.flags = ARMDB_CREATE | flags;
    ARMDB_OK(armdb_open(path, &o, &db));
    if (dir)
        snprintf(dir, cap, "%s", path);
    return db;
}

struct writer {
    armdb *db;
    double t0, t1;         /* first and last put returned */
    atomic_size_t written; /* puts returned, every 256 */
    atomic_bool done;
};

static void *write_all(void *p)
{
    struct writer *w = p;
    unsigned char v[VAL_LEN];
    w->t0 = now_s();
    for (size_t i = 0; i < g_n; i++) {
        value_of(i, v);
        ARMDB_OK(armdb_put(w->db, g_keys + i * KEY_LEN, KEY_LEN, v, VAL_LEN));
        if (i % 256 == 255)
            atomic_store_explicit(&w->written, i + 1, memory_order_relaxed);
    }
    w->t1 = now_s();
    atomic_store(&w->written, g_n);
    atomic_store(&w->done, true);
    return NULL;
}

static armdb_repl_follower_stat fstat_of(armdb_repl_follower *f)
{
    armdb_repl_follower_stat st;
    ARMDB_OK(armdb_repl_follower_stats(f, &st));
    return st;
}

static armdb_repl_follower *follow(armdb *db, const char *dir, int port, const char *secret)
{
    armdb_options so;
    armdb_repl_options ro;
    armdb_repl_follower *f;
    char addr[32];
    armdb_options_init(&so);
    so.key_len = KEY_LEN;
    so.shards = SHARDS;
    so.flags = ARMDB_CREATE | ARMDB_REPLICA;
    armdb_repl_options_init(&ro);
    ro.secret = secret;
    ro.secret_len = secret ? (uint32_t)strlen(secret) : 0;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    ARMDB_OK(armdb_repl_follow(db, dir, &so, addr, "s", &ro, &f));
    return f;
}

static void must_catch_up(armdb_repl_follower *f, uint64_t gsn)
{
    int rc = armdb_repl_follower_wait(f, gsn, WAIT_MS);
    if (rc != 0) {
        armdb_repl_follower_stat st = fstat_of(f);
        DIE("follower stuck at %" PRIu64 " of %" PRIu64 ": state %u, %s", st.applied_gsn, gsn, st.state,
            st.last_error_msg);
    }
}

struct catchup {
    double secs;
    uint64_t entries, bytes;
};

/* A new follower of the loaded leader, from nothing, until it has gsn. */
static struct catchup catch_up(int port, const char *name, const char *secret, uint64_t gsn)
{
    struct catchup c;
    char dir[PATH_MAX + 64];
    armdb *db = open_store(name, ARMDB_REPLICA, dir, sizeof dir);
    double t = now_s();
    armdb_repl_follower *f = follow(db, dir, port, secret);
    must_catch_up(f, gsn);
    c.secs = now_s() - t;
    armdb_repl_follower_stat st = fstat_of(f);
    c.entries = st.entries;
    c.bytes = st.bytes;
    armdb_repl_follower_close(f);
    if (armdb_count(db) != g_n)
        DIE("%s holds %" PRIu64 " keys, not %zu", name, armdb_count(db), g_n);
    ARMDB_OK(armdb_close(db));
    return c;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct_u64(uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    return v[(size_t)((double)(n - 1) * p)];
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* One repetition of the live run. */
struct live {
    double leader_rate, apply_rate, apply_mbs, drain_ms;
    uint64_t lag[3], elag[3]; /* p50, p99, max */
    uint64_t last;            /* the leader's last GSN */
};

static uint64_t *g_lags, *g_elags;
#define MAX_SAMPLES (1u << 20)

/* The load into a leader (left open in *leader, served by *srv) with a
 * follower connected from the start, sampled every SAMPLE_MS. */
static struct live live_run(int rep, armdb **leader, armdb_repl_server **srv)
{
    struct live r;
    char name[32];
    snprintf(name, sizeof name, "leader%d", rep);
    *leader = open_store(name, 0, NULL, 0);
    armdb_repl_options ro;
    armdb_repl_options_init(&ro);
    ARMDB_OK(armdb_repl_serve("127.0.0.1:0", &ro, srv));
    ARMDB_OK(armdb_repl_server_add(*srv, "s", *leader));
    char fdir[PATH_MAX + 64];
    snprintf(name, sizeof name, "follower%d", rep);
    armdb *fdb = open_store(name, ARMDB_REPLICA, fdir, sizeof fdir);
    armdb_repl_follower *f = follow(fdb, fdir, armdb_repl_server_port(*srv), NULL);
    struct writer w = {.db = *leader};
    pthread_t th;
    size_t ns = 0;
    /* GSNs are process-wide: this leader's start past every earlier store's */
    uint64_t base = g_gsn_base;
    if (pthread_create(&th, NULL, write_all, &w) != 0)
        DIE("pthread_create");
    while (!atomic_load(&w.done)) {
        uint64_t lg = armdb_last_gsn(*leader);
        size_t written = atomic_load_explicit(&w.written, memory_order_relaxed);
        armdb_repl_follower_stat st = fstat_of(f);
        uint64_t at = st.applied_gsn > base ? st.applied_gsn : base;
        if (ns < MAX_SAMPLES) {
            g_lags[ns] = lg > at ? lg - at : 0;
            g_elags[ns++] = written > st.entries ? written - st.entries : 0;
        }
        usleep(SAMPLE_MS * 1000);
    }
    pthread_join(th, NULL);
    r.last = armdb_last_gsn(*leader);
    must_catch_up(f, r.last);
    double t_caught = now_s();
    armdb_repl_follower_stat fs = fstat_of(f);
    r.leader_rate = (double)g_n / (w.t1 - w.t0);
    r.apply_rate = (double)fs.entries / (t_caught - w.t0);
    r.apply_mbs = (double)fs.bytes / (t_caught - w.t0) / 1e6;
    r.drain_ms = (t_caught - w.t1) * 1e3;
    r.lag[0] = pct_u64(g_lags, ns, 0.5);
    r.lag[1] = pct_u64(g_lags, ns, 0.99);
    r.lag[2] = pct_u64(g_lags, ns, 1.0);
    r.elag[0] = pct_u64(g_elags, ns, 0.5);
    r.elag[1] = pct_u64(g_elags, ns, 0.99);
    r.elag[2] = pct_u64(g_elags, ns, 1.0);
    armdb_repl_follower_close(f);
    if (armdb_count(fdb) != g_n)
        DIE("the follower holds %" PRIu64 " keys, not %zu", armdb_count(fdb), g_n);
    ARMDB_OK(armdb_close(fdb));
    rm_tree(fdir);
    g_gsn_base = r.last;
    return r;
}

/* A steady load below the follower's apply rate: PACED_RATE puts a
 * second for PACED_SECS seconds into a new leader with a follower live.
 * The lag is sampled every SAMPLE_MS as puts returned minus entries
 * applied, and turned into time at the writer's rate. */
#define PACED_RATE 100000.0
#define PACED_SECS 2.0

struct paced {
    double rate;        /* puts per second reached */
    uint64_t elag[3];   /* entries: p50, p99, max */
    double drain_ms;    /* last put to caught up */
};

struct pacer {
    armdb *db;
    size_t n;
    atomic_size_t written;
    atomic_bool done;
    double t0, t1;
};

static void *write_paced(void *p)
{
    struct pacer *w = p;
    unsigned char v[VAL_LEN];
    w->t0 = now_s();
    for (size_t i = 0; i < w->n; i++) {
        value_of(i, v);
        ARMDB_OK(armdb_put(w->db, g_keys + i * KEY_LEN, KEY_LEN, v, VAL_LEN));
        atomic_store_explicit(&w->written, i + 1, memory_order_relaxed);
        if (i % 100 == 99) {
            double due = w->t0 + (double)(i + 1) / PACED_RATE, t = now_s();
            if (due > t)
                usleep((useconds_t)((due - t) * 1e6));
        }
    }
    w->t1 = now_s();
    atomic_store(&w->done, true);
    return NULL;
}

static struct paced paced_run(int rep)
{
    struct paced r;
    char lname[32], name[32], fdir[PATH_MAX + 64];
    snprintf(lname, sizeof lname, "paced%d", rep);
    armdb *leader = open_store(lname, 0, NULL, 0);
    armdb_repl_server *srv;
    armdb_repl_options ro;
    armdb_repl_options_init(&ro);
    ARMDB_OK(armdb_repl_serve("127.0.0.1:0", &ro, &srv));
    ARMDB_OK(armdb_repl_server_add(srv, "s", leader));
    snprintf(name, sizeof name, "paced-f%d", rep);
    armdb *fdb = open_store(name, ARMDB_REPLICA, fdir, sizeof fdir);
    armdb_repl_follower *f = follow(fdb, fdir, armdb_repl_server_port(srv), NULL);
    struct pacer w = {.db = leader, .n = (size_t)(PACED_RATE * PACED_SECS)};
    if (w.n > g_n)
        w.n = g_n;
    pthread_t th;
    size_t ns = 0;
    if (pthread_create(&th, NULL, write_paced, &w) != 0)
        DIE("pthread_create");
    while (!atomic_load(&w.done)) {
        size_t written = atomic_load_explicit(&w.written, memory_order_relaxed);
        armdb_repl_follower_stat st = fstat_of(f);
        if (ns < MAX_SAMPLES)
            g_elags[ns++] = written > st.entries ? written - st.entries : 0;
        usleep(SAMPLE_MS * 1000);
    }
    pthread_join(th, NULL);
    uint64_t last = armdb_last_gsn(leader);
    must_catch_up(f, last);
    r.drain_ms = (now_s() - w.t1) * 1e3;
    r.rate = (double)w.n / (w.t1 - w.t0);
    r.elag[0] = pct_u64(g_elags, ns, 0.5);
    r.elag[1] = pct_u64(g_elags, ns, 0.99);
    r.elag[2] = pct_u64(g_elags, ns, 1.0);
    armdb_repl_follower_close(f);
    armdb_repl_server_close(srv);
    if (armdb_count(fdb) != w.n)
        DIE("the paced follower holds %" PRIu64 " keys, not %zu", armdb_count(fdb), w.n);
    ARMDB_OK(armdb_close(fdb));
    ARMDB_OK(armdb_close(leader));
    rm_tree(fdir);
    rm_tree(store_dir(lname));
    if (last > g_gsn_base)
        g_gsn_base = last;
    return r;
}

static int cmp_paced(const void *a, const void *b)
{
    const struct paced *x = a, *y = b;
    return (x->elag[1] > y->elag[1]) - (x->elag[1] < y->elag[1]);
}

static double local_run(void)
{
    struct writer lw = {.db = open_store("local", 0, NULL, 0)};
    write_all(&lw);
    if (armdb_last_gsn(lw.db) > g_gsn_base)
        g_gsn_base = armdb_last_gsn(lw.db);
    ARMDB_OK(armdb_close(lw.db));
    rm_tree(store_dir("local"));
    return (double)g_n / (lw.t1 - lw.t0);
}

static int cmp_live(const void *a, const void *b)
{
    const struct live *x = a, *y = b;
    return x->apply_rate < y->apply_rate ? -1 : x->apply_rate > y->apply_rate;
}

static int cmp_catchup(const void *a, const void *b)
{
    const struct catchup *x = a, *y = b;
    return x->secs < y->secs ? -1 : x->secs > y->secs;
}

int main(int argc, char **argv)
{
    g_n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 1000000;
    if (g_n < 1000 || g_n > 100000000)
        DIE("KEYS: %s is not from 1000 to 100000000", argc > 1 ? argv[1] : "");
    const char *reps_env = getenv("BENCH_REPS");
    int reps = reps_env && *reps_env ? atoi(reps_env) : 3;
    if (reps < 1 || reps > REPS_MAX)
        DIE("BENCH_REPS: %s is not from 1 to %d", reps_env, REPS_MAX);
    tmp_create("armdb-repl");
    machine_probe();
    uint64_t seed = 42;
    if (!(g_keys = malloc(g_n * KEY_LEN)) || !(g_lags = malloc(MAX_SAMPLES * sizeof *g_lags)) ||
        !(g_elags = malloc(MAX_SAMPLES * sizeof *g_elags)))
        DIE("out of memory");
    for (size_t i = 0; i < g_n * KEY_LEN; i += 8) {
        uint64_t x = splitmix64(&seed);
        memcpy(g_keys + i, &x, 8);
    }

    /* local and live, interleaved in every repetition */
    double local[REPS_MAX], ratio[REPS_MAX];
    struct live lv[REPS_MAX];
    armdb *leader = NULL;
    armdb_repl_server *srv = NULL;
    for (int r = 0; r < reps; r++) {
        fprintf(stderr, "bench-repl: %d/%d: %zu puts into a store nothing follows, then into a leader\n",
                r + 1, reps, g_n);
        if (leader) {
            armdb_repl_server_close(srv);
            ARMDB_OK(armdb_close(leader));
        }
        local[r] = local_run();
        lv[r] = live_run(r, &leader, &srv);
        ratio[r] = lv[r].leader_rate / local[r];
    }
    uint64_t last = lv[reps - 1].last;
    double local_med = median(local, (size_t)reps), ratio_med = median(ratio, (size_t)reps);
    double lrate[REPS_MAX];
    for (int r = 0; r < reps; r++)
        lrate[r] = lv[r].leader_rate;
    double leader_med = median(lrate, (size_t)reps);
    qsort(lv, (size_t)reps, sizeof *lv, cmp_live);
    const struct live *m = &lv[reps / 2]; /* the median follower rate's run */

    /* catch-up of the last leader's store, in the clear and with a secret */
    const char *secret = "bench secret, 32 bytes long ....";
    armdb_repl_options so;
    armdb_repl_options_init(&so);
    so.secret = secret;
    so.secret_len = (uint32_t)strlen(secret);
    armdb_repl_server *ssrv;
    ARMDB_OK(armdb_repl_serve("127.0.0.1:0", &so, &ssrv));
    ARMDB_OK(armdb_repl_server_add(ssrv, "s", leader));
    struct catchup cu[REPS_MAX], ce[REPS_MAX];
    for (int r = 0; r < reps; r++) {
        fprintf(stderr, "bench-repl: %d/%d: a new follower of the loaded leader, plain and encrypted\n",
                r + 1, reps);
        cu[r] = catch_up(armdb_repl_server_port(srv), "catchup", NULL, last);
        ce[r] = catch_up(armdb_repl_server_port(ssrv), "catchup-enc", secret, last);
    }
    qsort(cu, (size_t)reps, sizeof *cu, cmp_catchup);
    qsort(ce, (size_t)reps, sizeof *ce, cmp_catchup);
    const struct catchup *c = &cu[reps / 2], *e = &ce[reps / 2];
    armdb_repl_server_close(ssrv);
    armdb_repl_server_close(srv);
    ARMDB_OK(armdb_close(leader));

    /* a steady load the follower keeps up with */
    struct paced pc[REPS_MAX];
    for (int r = 0; r < reps; r++) {
        fprintf(stderr, "bench-repl: %d/%d: %.0f puts/s for %.0f s into a leader with a follower\n", r + 1, reps,
                PACED_RATE, PACED_SECS);
        pc[r] = paced_run(r);
    }
    qsort(pc, (size_t)reps, sizeof *pc, cmp_paced);
    const struct paced *pm = &pc[reps / 2];

    printf("{\n  \"machine\": {\"cpu\": \"%s\", \"cores\": %ld, \"kernel\": \"%s\", \"fs\": \"%s\"},\n",
           g_m.cpu, g_m.cores, g_m.kernel, g_m.fs);
    printf("  \"config\": {\"keys\": %zu, \"key_len\": %d, \"value_len\": %d, \"shards\": %d, "
           "\"sync_mode\": \"interval 50 ms\", \"ack_interval_ms\": 50, \"transport\": \"loopback TCP\", "
           "\"reps\": %d, \"figures\": \"medians\"},\n",
           g_n, KEY_LEN, VAL_LEN, SHARDS, reps);
    printf("  \"local_puts_per_s\": %.0f,\n", local_med);
    printf("  \"live\": {\"leader_puts_per_s\": %.0f, \"leader_vs_local\": %.3f, \"entries_per_s\": %.0f, "
           "\"mb_per_s\": %.1f, \"lag_gsn_p50\": %" PRIu64 ", \"lag_gsn_p99\": %" PRIu64
           ", \"lag_gsn_max\": %" PRIu64 ", \"lag_entries_p50\": %" PRIu64 ", \"lag_entries_p99\": %" PRIu64
           ", \"lag_entries_max\": %" PRIu64 ", \"caught_up_after_writer_ms\": %.1f},\n",
           leader_med, ratio_med, m->apply_rate, m->apply_mbs, m->lag[0], m->lag[1], m->lag[2], m->elag[0],
           m->elag[1], m->elag[2], m->drain_ms);
    printf("  \"catch_up\": {\"seconds\": %.3f, \"entries\": %" PRIu64 ", \"bytes\": %" PRIu64
           ", \"entries_per_s\": %.0f, \"mb_per_s\": %.1f},\n",
           c->secs, c->entries, c->bytes, (double)c->entries / c->secs, (double)c->bytes / c->secs / 1e6);
    printf("  \"catch_up_encrypted\": {\"seconds\": %.3f, \"entries\": %" PRIu64 ", \"bytes\": %" PRIu64
           ", \"entries_per_s\": %.0f, \"mb_per_s\": %.1f},\n",
           e->secs, e->entries, e->bytes, (double)e->entries / e->secs, (double)e->bytes / e->secs / 1e6);
    printf("  \"paced\": {\"puts_per_s\": %.0f, \"seconds\": %.1f, \"lag_entries_p50\": %" PRIu64
           ", \"lag_entries_p99\": %" PRIu64 ", \"lag_entries_max\": %" PRIu64
           ", \"lag_ms_p50\": %.2f, \"lag_ms_p99\": %.2f, \"caught_up_after_writer_ms\": %.1f}\n}\n",
           pm->rate, PACED_SECS, pm->elag[0], pm->elag[1], pm->elag[2], (double)pm->elag[0] / pm->rate * 1e3,
           (double)pm->elag[1] / pm->rate * 1e3, pm->drain_ms);

    fprintf(stderr, "\nmedians of %d runs\n%-34s %14s %10s\n", reps, "", "entries/s", "MB/s");
    fprintf(stderr, "%-34s %14.0f\n", "local puts (no replication)", local_med);
    fprintf(stderr, "%-34s %14.0f %10s  (%.2fx local)\n", "leader puts, follower live", leader_med, "",
            ratio_med);
    fprintf(stderr, "%-34s %14.0f %10.1f\n", "follower applies, live", m->apply_rate, m->apply_mbs);
    fprintf(stderr, "%-34s %14.0f %10.1f  (%.2f s)\n", "catch-up from nothing", (double)c->entries / c->secs,
            (double)c->bytes / c->secs / 1e6, c->secs);
    fprintf(stderr, "%-34s %14.0f %10.1f  (%.2f s)\n", "catch-up, encrypted", (double)e->entries / e->secs,
            (double)e->bytes / e->secs / 1e6, e->secs);
    fprintf(stderr,
            "live lag, leader's last GSN - applied GSN: p50 %" PRIu64 ", p99 %" PRIu64 ", max %" PRIu64 "\n",
            m->lag[0], m->lag[1], m->lag[2]);
    fprintf(stderr,
            "live lag, puts returned - entries applied: p50 %" PRIu64 ", p99 %" PRIu64 ", max %" PRIu64 "\n",
            m->elag[0], m->elag[1], m->elag[2]);
    fprintf(stderr, "caught up %.0f ms after the last put\n", m->drain_ms);
    fprintf(stderr,
            "steady %.0f puts/s: lag p50 %" PRIu64 " entries (%.1f ms), p99 %" PRIu64 " (%.1f ms), max %" PRIu64
            "; caught up %.0f ms after the last put\n",
            pm->rate, pm->elag[0], (double)pm->elag[0] / pm->rate * 1e3, pm->elag[1],
            (double)pm->elag[1] / pm->rate * 1e3, pm->elag[2], pm->drain_ms);
    free(g_lags);
    free(g_elags);
    free(g_keys);
    return 0;
}
