/*
 * tune.c - armdb_tune() changes an open store's settings, and each change
 * takes effect, judged by counts and bytes (never by speed):
 *
 * 1. Refusals: NULL, unknown bits, each field out of range, a read-only
 *    handle; a refused call changes nothing (armdb_tuning_get says so).
 * 2. Sync mode: a store opened with ARMDB_SYNC_NONE does no fdatasync on
 *    its own; switched to ALWAYS, every put is followed by one; back to
 *    NONE, none again; to INTERVAL (a thread the open did not start), a
 *    barrier comes by itself; back to NONE, the thread stops syncing.
 * 3. Automatic compaction: with garbage past the threshold, nothing is
 *    compacted while it is switched off, or while the threshold is above
 *    the garbage's share; switched on, or the threshold lowered, the
 *    background thread compacts.
 * 4. Switched off during a slow background pass: no file is compacted
 *    after that, and every value is right.
 * 5. Byte rate: armdb_compact() of a store with a rate of R bytes per
 *    second takes at least (bytes read + written - slack) / R seconds (a
 *    lower bound, the only timing asserted), and leaves every value right.
 */
#include "test.h"

#include <time.h>

#define KEY_LEN 16
#define VAL_LEN 1000
#define NKEYS 2000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void make_key(uint32_t i, unsigned char *k)
{
    memset(k, 0, KEY_LEN);
    memcpy(k, "tune", 4);
    memcpy(k + 4, &i, 4);
}

static void make_val(uint32_t i, uint32_t ver, unsigned char *v) { t_fill(t_mix(i, ver), v, VAL_LEN); }

static armdb_stat stats_of(armdb *db)
{
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    return st;
}

static void put_all(armdb *db, uint32_t ver, uint32_t step)
{
    unsigned char k[KEY_LEN], v[VAL_LEN];
    for (uint32_t i = 0; i < NKEYS; i += step) {
        make_key(i, k);
        make_val(i, ver, v);
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
    }
}

static armdb *open_store(const char *dir, uint32_t sync_mode, uint32_t flags)
{
    armdb_options o;
    armdb *db = NULL;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = 1;
    o.max_file_size = 256u << 10;
    o.sync_mode = sync_mode;
    o.flags = ARMDB_CREATE | flags;
    CHECK_OK(armdb_open(dir, &o, &db));
    return db;
}

/* Poll stat until pred holds or ms pass; the last stats. */
static armdb_stat wait_for(armdb *db, int (*pred)(const armdb_stat *, uint64_t), uint64_t arg, long ms)
{
    armdb_stat st = stats_of(db);
    for (long t = 0; t < ms && !pred(&st, arg); t += 10) {
        sleep_ms(10);
        st = stats_of(db);
    }
    return st;
}

static int syncs_above(const armdb_stat *st, uint64_t n) { return st->syncs > n; }
static int compactions_above(const armdb_stat *st, uint64_t n) { return st->compactions > n; }

static void part_refusals(const char *base)
{
    char *dir = t_path(base, "refuse");
    armdb *db = open_store(dir, ARMDB_SYNC_NONE, ARMDB_NO_AUTO_COMPACT);
    armdb_tuning t, before, after;
    CHECK_OK(armdb_tuning_get(db, &before));
    CHECK(before.set == 0x1f);
    CHECK(before.sync_mode == ARMDB_SYNC_NONE);
    CHECK(before.sync_interval_ms == 50);
    CHECK(before.auto_compact == 0);
    CHECK(before.compaction_threshold == 0.3);
    CHECK(before.compact_bytes_per_sec == 0);

    CHECK_RC(armdb_tune(NULL, &t), ARMDB_INVAL);
    CHECK_RC(armdb_tune(db, NULL), ARMDB_INVAL);
    CHECK_RC(armdb_tuning_get(db, NULL), ARMDB_INVAL);
    memset(&t, 0, sizeof t);
    t.set = 1u << 9;
    CHECK_RC(armdb_tune(db, &t), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "set: unknown bits 0x200") != NULL);
    /* A good field beside a bad one: neither is applied. */
    t.set = ARMDB_TUNE_COMPACT_RATE | ARMDB_TUNE_SYNC_MODE;
    t.compact_bytes_per_sec = 1000;
    t.sync_mode = 7;
    CHECK_RC(armdb_tune(db, &t), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "sync_mode: 7 is not a sync mode") != NULL);
    t.set = ARMDB_TUNE_COMPACT_RATE | ARMDB_TUNE_SYNC_INTERVAL;
    t.sync_interval_ms = 0;
    CHECK_RC(armdb_tune(db, &t), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "sync_interval_ms: 0 is not from 1 to 60000") != NULL);
    t.sync_interval_ms = 60001;
    CHECK_RC(armdb_tune(db, &t), ARMDB_INVAL);
    t.set = ARMDB_TUNE_COMPACT_RATE | ARMDB_TUNE_COMPACTION_THRESHOLD;
    t.compaction_threshold = 1.5;
    CHECK_RC(armdb_tune(db, &t), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "compaction_threshold: 1.5 is not from 0 to 1") != NULL);
    t.set = ARMDB_TUNE_COMPACT_RATE | ARMDB_TUNE_AUTO_COMPACT;
    t.auto_compact = 2;
    CHECK_RC(armdb_tune(db, &t), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "auto_compact: 2 is not 0 or 1") != NULL);
    CHECK_OK(armdb_tuning_get(db, &after));
    CHECK(memcmp(&before, &after, sizeof before) == 0);

    /* Accepted: each field as asked, 0 threshold as the default. */
    t.set = 0x1f;
    t.sync_mode = ARMDB_SYNC_ALWAYS;
    t.sync_interval_ms = 7;
    t.auto_compact = 1;
    t.compaction_threshold = 0;
    t.compact_bytes_per_sec = 12345;
    CHECK_OK(armdb_tune(db, &t));
    CHECK_OK(armdb_tuning_get(db, &after));
    CHECK(after.sync_mode == ARMDB_SYNC_ALWAYS && after.sync_interval_ms == 7 && after.auto_compact == 1);
    CHECK(after.compaction_threshold == 0.3 && after.compact_bytes_per_sec == 12345);
    t.set = ARMDB_TUNE_COMPACTION_THRESHOLD;
    t.compaction_threshold = 0.75;
    CHECK_OK(armdb_tune(db, &t));
    CHECK_OK(armdb_tuning_get(db, &after));
    CHECK(after.compaction_threshold == 0.75 && after.compact_bytes_per_sec == 12345);
    CHECK_OK(armdb_close(db));

    /* A reopen starts from its options again. */
    db = open_store(dir, ARMDB_SYNC_NONE, 0);
    CHECK_OK(armdb_tuning_get(db, &after));
    CHECK(after.sync_mode == ARMDB_SYNC_NONE && after.compact_bytes_per_sec == 0 && after.auto_compact == 1);
    CHECK_OK(armdb_close(db));

    armdb_options o;
    armdb_options_init(&o);
    o.flags = ARMDB_RDONLY;
    CHECK_OK(armdb_open(dir, &o, &db));
    t.set = ARMDB_TUNE_SYNC_MODE;
    t.sync_mode = ARMDB_SYNC_NONE;
    CHECK_RC(armdb_tune(db, &t), ARMDB_READONLY);
    CHECK_OK(armdb_tuning_get(db, &after));
    CHECK_OK(armdb_close(db));
    free(dir);
}

static void part_sync(const char *base)
{
    char *dir = t_path(base, "sync");
    armdb *db = open_store(dir, ARMDB_SYNC_NONE, ARMDB_NO_AUTO_COMPACT);
    unsigned char k[KEY_LEN], v[VAL_LEN];
    armdb_tuning t = {0};
    make_key(1, k);
    make_val(1, 1, v);

    CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
    sleep_ms(150);
    uint64_t s0 = stats_of(db).syncs;
    CHECK(s0 == 0); /* none: nobody syncs */

    t.set = ARMDB_TUNE_SYNC_MODE;
    t.sync_mode = ARMDB_SYNC_ALWAYS;
    CHECK_OK(armdb_tune(db, &t));
    for (uint32_t i = 0; i < 5; i++) {
        uint64_t before = stats_of(db).syncs;
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
        CHECK(stats_of(db).syncs > before); /* durable before the put returned */
    }

    t.sync_mode = ARMDB_SYNC_NONE;
    CHECK_OK(armdb_tune(db, &t));
    uint64_t s1 = stats_of(db).syncs;
    for (uint32_t i = 0; i < 5; i++)
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
    sleep_ms(150);
    CHECK(stats_of(db).syncs == s1);

    /* Interval: the open started no thread; the tune does. */
    t.set = ARMDB_TUNE_SYNC_MODE | ARMDB_TUNE_SYNC_INTERVAL;
    t.sync_mode = ARMDB_SYNC_INTERVAL;
    t.sync_interval_ms = 10;
    CHECK_OK(armdb_tune(db, &t));
    armdb_stat st = wait_for(db, syncs_above, s1, 5000);
    CHECK(st.syncs > s1); /* the pending writes, synced by the thread */
    CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
    st = wait_for(db, syncs_above, st.syncs, 5000);

    /* Back to none: the thread parks. */
    t.set = ARMDB_TUNE_SYNC_MODE;
    t.sync_mode = ARMDB_SYNC_NONE;
    CHECK_OK(armdb_tune(db, &t));
    sleep_ms(50); /* a barrier already under way may end */
    uint64_t s2 = stats_of(db).syncs;
    for (uint32_t i = 0; i < 5; i++)
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, VAL_LEN));
    sleep_ms(200);
    CHECK(stats_of(db).syncs == s2);

    /* And back to interval: the parked thread wakes. */
    t.sync_mode = ARMDB_SYNC_INTERVAL;
    CHECK_OK(armdb_tune(db, &t));
    st = wait_for(db, syncs_above, s2, 5000);
    CHECK(st.syncs > s2);
    CHECK_OK(armdb_close(db));
    free(dir);
}

/* Half of every sealed file garbage: all keys written twice, then every
 * other key a third time. */
static void make_garbage(armdb *db)
{
    put_all(db, 1, 1);
    put_all(db, 2, 2);
}

static void check_values(armdb *db, int has_v2)
{
    unsigned char k[KEY_LEN], v[VAL_LEN], want[VAL_LEN];
    size_t vlen;
    for (uint32_t i = 0; i < NKEYS; i++) {
        make_key(i, k);
        make_val(i, has_v2 && i % 2 == 0 ? 2 : 1, want);
        CHECK_OK(armdb_get(db, k, KEY_LEN, v, sizeof v, &vlen));
        CHECK(vlen == VAL_LEN && memcmp(v, want, VAL_LEN) == 0);
    }
}

static void part_auto_compact(const char *base)
{
    char *dir = t_path(base, "auto");
    armdb *db = open_store(dir, ARMDB_SYNC_NONE, 0);
    armdb_tuning t = {0};
    t.set = ARMDB_TUNE_AUTO_COMPACT;
    t.auto_compact = 0;
    CHECK_OK(armdb_tune(db, &t));
    make_garbage(db);
    armdb_stat st = stats_of(db);
    CHECK(st.rotations >= 4 && st.dead_bytes > st.live_bytes / 4);
    sleep_ms(300);
    CHECK(stats_of(db).compactions == 0); /* off: garbage stays */

    /* On, but with a threshold above the garbage's share (about 1/3). */
    t.set = ARMDB_TUNE_AUTO_COMPACT | ARMDB_TUNE_COMPACTION_THRESHOLD;
    t.auto_compact = 1;
    t.compaction_threshold = 0.95;
    CHECK_OK(armdb_tune(db, &t));
    sleep_ms(300);
    CHECK(stats_of(db).compactions == 0);

    t.set = ARMDB_TUNE_COMPACTION_THRESHOLD;
    t.compaction_threshold = 0.2;
    CHECK_OK(armdb_tune(db, &t));
    st = wait_for(db, compactions_above, 0, 10000);
    CHECK(st.compactions > 0);
    check_values(db, 1);
    CHECK_OK(armdb_close(db));
    free(dir);
}

/* A slow background pass (a low byte rate) is under way when automatic
 * compaction is switched off: it stops within a sleep slice, and no file
 * is compacted after that; the store stays whole. */
static void part_switch_off(const char *base)
{
    char *dir = t_path(base, "off");
    armdb *db = open_store(dir, ARMDB_SYNC_NONE, 0);
    armdb_tuning t = {0};
    t.set = ARMDB_TUNE_AUTO_COMPACT;
    t.auto_compact = 0;
    CHECK_OK(armdb_tune(db, &t));
    make_garbage(db);
    t.set = ARMDB_TUNE_AUTO_COMPACT | ARMDB_TUNE_COMPACT_RATE | ARMDB_TUNE_COMPACTION_THRESHOLD;
    t.auto_compact = 1;
    t.compact_bytes_per_sec = 512u << 10; /* about 0.7 s a file */
    t.compaction_threshold = 0.2;
    CHECK_OK(armdb_tune(db, &t));
    armdb_stat st = wait_for(db, compactions_above, 0, 20000);
    CHECK(st.compactions > 0);
    t.set = ARMDB_TUNE_AUTO_COMPACT;
    t.auto_compact = 0;
    CHECK_OK(armdb_tune(db, &t));
    sleep_ms(300);
    uint64_t c1 = stats_of(db).compactions;
    sleep_ms(1500);
    st = stats_of(db);
    CHECK(st.compactions == c1);
    CHECK(c1 < 6 && st.dead_bytes > 0); /* garbage was left for later */
    check_values(db, 1);
    CHECK_OK(armdb_close(db));
    free(dir);
}

static void part_rate(const char *base)
{
    char *dir = t_path(base, "rate");
    armdb *db = open_store(dir, ARMDB_SYNC_NONE, ARMDB_NO_AUTO_COMPACT);
    const uint64_t rate = 4u << 20; /* 4 MiB/s */
    armdb_tuning t = {0};
    make_garbage(db);
    t.set = ARMDB_TUNE_COMPACT_RATE;
    t.compact_bytes_per_sec = rate;
    CHECK_OK(armdb_tune(db, &t));
    double t0 = now_s();
    CHECK_OK(armdb_compact(db));
    double took = now_s() - t0;
    armdb_stat st = stats_of(db);
    uint64_t io = st.compact_bytes_read + st.compact_bytes_written;
    CHECK(st.compactions >= 4 && io > (2u << 20));
    /* Each file may run ahead of the rate by one chunk and one entry. */
    double slack = (double)st.compactions * (64 * 1024 + 2 * 1024);
    double floor_s = ((double)io - slack) / (double)rate;
    fprintf(stderr,
            "tune: compacted %" PRIu64 " bytes in %d files in %.2f s (at least %.2f s at %" PRIu64 " B/s)\n",
            io, (int)st.compactions, took, floor_s, rate);
    CHECK(floor_s > 0.3);
    CHECK(took >= floor_s);
    check_values(db, 1);
    CHECK_OK(armdb_close(db));
    free(dir);
}

int main(void)
{
    char *base = t_tmpdir("tune");
    part_refusals(base);
    part_sync(base);
    part_auto_compact(base);
    part_switch_off(base);
    part_rate(base);
    t_rmtree(base);
    free(base);
    return 0;
}
