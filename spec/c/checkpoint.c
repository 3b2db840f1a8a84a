/*
 * checkpoint.c - online copies: a checkpoint taken while a writer (puts,
 * overwrites, deletes, batches) and compaction go on opens as exactly the
 * store at its GSN, copied in small steps, with and without hard links;
 * the refusals; and armdb_apply, which brings a copy up to date from the
 * change feed (idempotent, GSNs kept).
 */
#include "wlog.h"

#include <sys/stat.h>

/* The writer writes while it has budget: each round gives it more, so
 * that it is busy during the round's checkpoint without running ahead. */
struct writer {
    armdb *db;
    atomic_int *stop;
    atomic_long budget;
    uint64_t seed;
};

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    uint64_t version = 1;
    for (long i = 0; !atomic_load(w->stop);) {
        if (i >= atomic_load(&w->budget)) {
            usleep(200);
            continue;
        }
        random_write(w->db, &w->seed, &version);
        i++;
    }
    return NULL;
}

static armdb *open_store(const char *dir, uint32_t flags)
{
    armdb_options o;
    armdb *db;
    armdb_options_init(&o);
    o.key_len = 8;
    o.shards = 4;
    o.write_buffer_size = 65536;
    o.max_file_size = 131072;
    o.compaction_threshold = 0.2;
    o.sync_mode = ARMDB_SYNC_NONE;
    o.flags = flags;
    t_key_options(&o);
    CHECK_OK(armdb_open(dir, &o, &db));
    return db;
}

/* A copy taken beside a writer is the store at the copy's GSN. */
static void test_online(unsigned cp_flags, int rounds)
{
    char *dir = t_tmpdir("checkpoint");
    char *store = t_path(dir, "s");
    nlog = 0;
    armdb *db = open_store(store, ARMDB_CREATE);
    CHECK_OK(armdb_set_hook(db, on_write, NULL, 0));
    atomic_int stop = 0;
    struct writer w = {.db = db, .stop = &stop, .seed = 99 + cp_flags};
    atomic_store(&w.budget, 2000);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, write_loop, &w) == 0);
    static struct model m;
    for (int r = 0; r < rounds; r++) {
        atomic_fetch_add(&w.budget, 20000);
        usleep(5000);
        char name[32];
        snprintf(name, sizeof name, "copy%d", r);
        char *copy = t_path(dir, name);
        armdb_checkpoint *cp;
        CHECK_OK(armdb_checkpoint_open(db, copy, cp_flags, &cp));
        uint64_t g = armdb_checkpoint_gsn(cp), done = 0, total = 0, last = 0;
        CHECK(g > 0);
        int rc, steps = 0;
        while ((rc = armdb_checkpoint_step(cp, 65536, &done, &total)) == 1) {
            CHECK(done > last && done <= total);
            last = done;
            steps++;
        }
        CHECK_OK(rc);
        CHECK(done == total);
        armdb_checkpoint_close(cp);
        if (r % 2)
            CHECK_OK(armdb_compact(db));
        /* The copy, opened on its own, against the log up to g. */
        armdb *c = open_store(copy, 0);
        model_at(&m, g);
        model_equals_store(c, &m);
        /* Nothing after g (its last_gsn may be past g: the DURABLE file
         * copied after the cut names a later GSN). */
        armdb_changes *ch;
        armdb_change x;
        CHECK_OK(armdb_changes_open(c, g, 0, &ch));
        CHECK_RC(armdb_changes_next(ch, &x), ARMDB_NOTFOUND);
        armdb_changes_close(ch);
        armdb_stat st;
        CHECK_OK(armdb_stats(c, &st));
        CHECK(st.corrupt_entries == 0 && st.torn_bytes == 0);
        CHECK_OK(armdb_close(c));
        printf("checkpoint %d: gsn %" PRIu64 ", %" PRIu64 " bytes in %d steps\n", r, g, total, steps);
        free(copy);
    }
    atomic_store(&stop, 1);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

static void test_refusals(void)
{
    char *dir = t_tmpdir("checkpoint-refuse");
    char *store = t_path(dir, "s");
    char *copy = t_path(dir, "copy");
    armdb *db = open_store(store, ARMDB_CREATE);
    uint64_t k = 1, g = 0;
    CHECK_OK(armdb_put(db, &k, 8, "v", 1));
    armdb_checkpoint *cp;
    CHECK_RC(armdb_checkpoint_open(db, copy, 1u << 5, &cp), ARMDB_INVAL);
    CHECK_OK(armdb_checkpoint_run(db, copy, 0, &g));
    CHECK(g == armdb_last_gsn(db));
    CHECK_RC(armdb_checkpoint_run(db, copy, 0, NULL), ARMDB_EXISTS);
    CHECK(strstr(armdb_errmsg(), copy) != NULL);
    CHECK_OK(armdb_close(db));
    db = open_store(store, ARMDB_RDONLY);
    char *copy2 = t_path(dir, "copy2");
    CHECK_RC(armdb_checkpoint_run(db, copy2, 0, NULL), ARMDB_READONLY);
    struct stat st;
    CHECK(stat(copy2, &st) < 0 && errno == ENOENT);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(copy2);
    free(copy);
    free(store);
    free(dir);
}

static void apply_cb(void *dst, const armdb_change *ch)
{
    CHECK_OK(armdb_apply(dst, ch));
}

/* Apply every change of src after since to dst; the number applied. */
static uint64_t apply_feed(armdb *src, armdb *dst, uint64_t since, uint64_t *end)
{
    armdb_changes *c;
    CHECK_OK(armdb_changes_open(src, since, 0, &c));
    return feed_drain(c, since, apply_cb, dst, end);
}

static void test_apply(void)
{
    char *dir = t_tmpdir("checkpoint-apply");
    char *store = t_path(dir, "s");
    char *copy = t_path(dir, "copy");
    nlog = 0;
    armdb *src = open_store(store, ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT);
    CHECK_OK(armdb_set_hook(src, on_write, NULL, 0));
    uint64_t seed = 5, version = 0, g, end;
    for (int i = 0; i < 3000; i++)
        random_write(src, &seed, &version);
    CHECK_OK(armdb_checkpoint_run(src, copy, 0, &g));
    for (int i = 0; i < 3000; i++)
        random_write(src, &seed, &version);
    /* The copy brought up to date from the feed after its GSN... */
    armdb *dst = open_store(copy, 0);
    uint64_t n = apply_feed(src, dst, g, &end);
    CHECK(n > 0);
    static struct model m;
    model_at(&m, end);
    model_equals_store(dst, &m);
    CHECK(armdb_last_gsn(dst) == armdb_last_gsn(src));
    /* ...and again, from further back (a rerun): the same state. Writes it
     * has are skipped; a put older than a delete it applied is written
     * again, and the delete after it in the feed removes it again. */
    armdb_stat a, b;
    CHECK_OK(armdb_stats(dst, &a));
    apply_feed(src, dst, g / 2, &end);
    CHECK_OK(armdb_stats(dst, &b));
    CHECK(b.keys == a.keys);
    model_equals_store(dst, &m);
    /* An older change than the key's: nothing written. */
    uint64_t k = 3;
    unsigned char v[VMAX];
    size_t len;
    int had = armdb_get(dst, &k, 8, v, sizeof v, &len);
    armdb_change old = {.key = &k, .klen = 8, .val = "stale", .vlen = 5, .gsn = 1};
    CHECK_OK(armdb_apply(dst, &old));
    unsigned char w[VMAX];
    size_t wlen;
    CHECK_RC(armdb_get(dst, &k, 8, w, sizeof w, &wlen), had);
    CHECK(had != 0 || (wlen == len && memcmp(v, w, len) == 0));
    /* Misuse. */
    armdb_change bad = {.key = &k, .klen = 8, .gsn = 0};
    CHECK_RC(armdb_apply(dst, &bad), ARMDB_INVAL);
    bad.gsn = 1ull << 60;
    CHECK_RC(armdb_apply(dst, &bad), ARMDB_INVAL);
    bad = (armdb_change){.key = &k, .klen = 8, .val = "x", .vlen = 1, .gsn = 5, .deleted = 1};
    CHECK_RC(armdb_apply(dst, &bad), ARMDB_INVAL);
    bad = (armdb_change){.key = &k, .klen = 7, .gsn = 5};
    CHECK_RC(armdb_apply(dst, &bad), ARMDB_KEYLEN);
    CHECK_RC(armdb_apply(dst, NULL), ARMDB_INVAL);
    /* Each shard's last GSN: where a replica of it stands. */
    uint64_t top = 0;
    for (uint32_t sh = 0; sh < 4; sh++) {
        uint64_t at;
        CHECK_OK(armdb_shard_last_gsn(dst, sh, &at));
        top = at > top ? at : top;
    }
    CHECK(top > 0 && top <= armdb_last_gsn(dst));
    uint64_t g0;
    CHECK_RC(armdb_shard_last_gsn(dst, 4, &g0), ARMDB_INVAL);
    /* A reopen keeps the applied GSNs, and new writes come after them. */
    CHECK_OK(armdb_close(dst));
    dst = open_store(copy, 0);
    model_equals_store(dst, &m);
    CHECK(armdb_last_gsn(dst) >= armdb_last_gsn(src));
    CHECK_OK(armdb_close(dst));
    /* A replica takes writes only through armdb_apply. */
    dst = open_store(copy, ARMDB_REPLICA);
    uint64_t k2 = 2;
    CHECK_RC(armdb_put(dst, &k2, 8, "x", 1), ARMDB_READONLY);
    CHECK(strstr(armdb_errmsg(), "is a replica") != NULL);
    CHECK_RC(armdb_delete(dst, &k2, 8), ARMDB_READONLY);
    CHECK_RC(armdb_cas(dst, &k2, 8, NULL, 0, "x", 1), ARMDB_READONLY);
    armdb_op op = {.type = ARMDB_OP_PUT, .key = &k2, .klen = 8, .val = "x", .vlen = 1};
    CHECK_RC(armdb_batch(dst, &op, 1), ARMDB_READONLY);
    uint64_t before = armdb_last_gsn(dst);
    armdb_change next = {.key = &k2, .klen = 8, .val = "from the leader", .vlen = 15, .gsn = before + 1};
    CHECK_OK(armdb_apply(dst, &next));
    unsigned char got[32];
    size_t glen;
    CHECK_OK(armdb_get(dst, &k2, 8, got, sizeof got, &glen));
    CHECK(glen == 15 && memcmp(got, "from the leader", 15) == 0);
    CHECK_OK(armdb_close(dst));
    CHECK_OK(armdb_close(src));
    t_rmtree(dir);
    free(copy);
    free(store);
    free(dir);
}

int main(void)
{
    int rounds = (int)(t_env_u64("ARMDB_TEST_SCALE", 100) / 20) + 1;
    test_refusals();
    test_apply();
    test_online(0, rounds);
    test_online(ARMDB_CHECKPOINT_LINK, rounds);
    free(logv);
    printf("checkpoint: ok\n");
    return 0;
}
