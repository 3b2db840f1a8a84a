/*
 * changes.c - the change feed: exactly the entries above `since`, in GSN
 * order, across shards, rotations, reopens and the write buffer; a cut at
 * the open; the horizon compaction leaves (ARMDB_COMPACTED), kept across a
 * reopen; ARMDB_CHANGES_LIVE; and a follower that converges to the store
 * while a writer, batches and compaction go on.
 *
 * Every write is logged through the write hook with its GSN, so the feed
 * of a store nothing compacted is compared with the log entry by entry.
 */
#include "wlog.h"

#include <xxhash.h>

/* The feed from since equals the log's entries above since (up to end). */
static void expect_log(armdb *db, uint64_t since, uint64_t upto)
{
    armdb_changes *c;
    armdb_change ch;
    CHECK_OK(armdb_changes_open(db, since, 0, &c));
    CHECK(armdb_changes_end(c) >= upto);
    size_t i = 0;
    while (i < nlog && logv[i].gsn <= since)
        i++;
    int rc;
    while ((rc = armdb_changes_next(c, &ch)) == 0) {
        CHECK(i < nlog && logv[i].gsn <= upto);
        const struct rec *r = &logv[i++];
        if (ch.gsn != r->gsn)
            fprintf(stderr, "feed gsn %" PRIu64 ", log gsn %" PRIu64 "\n", ch.gsn, r->gsn);
        CHECK(ch.gsn == r->gsn);
        CHECK(ch.klen == 8 && memcmp(ch.key, &r->key, 8) == 0);
        CHECK(ch.deleted == (uint32_t)r->deleted);
        CHECK(ch.vlen == r->vlen);
        CHECK(r->deleted ? ch.val == NULL : (ch.vlen == 0 || memcmp(ch.val, r->val, ch.vlen) == 0));
    }
    CHECK_RC(rc, ARMDB_NOTFOUND);
    CHECK(i == nlog || logv[i].gsn > upto);
    armdb_changes_close(c);
}

static armdb *open_logged(const char *store, uint32_t wbuf, uint64_t max_file, uint32_t flags)
{
    armdb *db = t_open_store(store, 8, 0, 4, wbuf, max_file, flags | ARMDB_NO_AUTO_COMPACT);
    if (!(flags & ARMDB_RDONLY))
        CHECK_OK(armdb_set_hook(db, on_write, NULL, 0));
    return db;
}

/* Exactly the log, from 0 and from points in it: in the write buffer, across
 * rotations, after a reopen (hints), read-only. */
static void test_exact(uint32_t wbuf, uint64_t max_file)
{
    char *dir = t_tmpdir("changes");
    char *store = t_path(dir, "s");
    uint64_t seed = 42 + wbuf, version = 0;
    nlog = 0;
    armdb *db = open_logged(store, wbuf, max_file, ARMDB_CREATE);
    armdb_changes *c;
    armdb_change ch;
    CHECK_OK(armdb_changes_open(db, 0, 0, &c));
    CHECK_RC(armdb_changes_next(c, &ch), ARMDB_NOTFOUND);
    CHECK(armdb_changes_end(c) == armdb_last_gsn(db));
    armdb_changes_close(c);
    for (int i = 0; i < 3000; i++)
        random_write(db, &seed, &version);
    qsort(logv, nlog, sizeof *logv, by_gsn);
    CHECK(armdb_last_gsn(db) == logv[nlog - 1].gsn);
    expect_log(db, 0, logv[nlog - 1].gsn);
    for (int k = 0; k < 5; k++) {
        size_t at = (size_t)(t_rand(&seed) % nlog);
        expect_log(db, logv[at].gsn, logv[nlog - 1].gsn);
    }
    /* Past the end: nothing. */
    CHECK_OK(armdb_changes_open(db, armdb_last_gsn(db), 0, &c));
    CHECK_RC(armdb_changes_next(c, &ch), ARMDB_NOTFOUND);
    armdb_changes_close(c);
    /* The cut: writes after the open are not in the feed. */
    uint64_t upto = logv[nlog - 1].gsn;
    CHECK_OK(armdb_changes_open(db, 0, 0, &c));
    CHECK(armdb_changes_end(c) == upto);
    for (int i = 0; i < 500; i++)
        random_write(db, &seed, &version);
    size_t n = 0;
    int rc;
    while ((rc = armdb_changes_next(c, &ch)) == 0) {
        CHECK(ch.gsn <= upto);
        n++;
    }
    CHECK_RC(rc, ARMDB_NOTFOUND);
    size_t before = 0;
    while (before < nlog && logv[before].gsn <= upto)
        before++;
    CHECK(n == before);
    armdb_changes_close(c);
    qsort(logv, nlog, sizeof *logv, by_gsn);
    CHECK_OK(armdb_close(db));
    db = open_logged(store, wbuf, max_file, 0);
    expect_log(db, 0, logv[nlog - 1].gsn);
    expect_log(db, logv[nlog / 2].gsn, logv[nlog - 1].gsn);
    CHECK_OK(armdb_close(db));
    db = open_logged(store, wbuf, max_file, ARMDB_RDONLY);
    expect_log(db, logv[nlog / 3].gsn, logv[nlog - 1].gsn);
    CHECK_RC(armdb_changes_open(db, 0, 1u << 7, &c), ARMDB_INVAL);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

/* Apply the feed from *pos; 1 if it had to start over from 0. */
static int model_follow(armdb *db, struct model *m, uint64_t *pos)
{
    armdb_changes *c;
    int restarted = 0;
    int rc = armdb_changes_open(db, *pos, 0, &c);
    if (rc == ARMDB_COMPACTED) {
        CHECK(*pos > 0);
        memset(m, 0, sizeof *m);
        *pos = 0;
        restarted = 1;
        rc = armdb_changes_open(db, 0, 0, &c);
    }
    CHECK_OK(rc);
    feed_drain(c, *pos, model_apply_cb, m, pos);
    return restarted;
}

/* Compaction drops overwritten values and tombstones: a feed from 0 still
 * rebuilds the store; one from below a dropped tombstone is refused, also
 * after a reopen; one from above it is complete. */
static void test_horizon(void)
{
    char *dir = t_tmpdir("changes-horizon");
    char *store = t_path(dir, "s");
    uint64_t seed = 7, version = 0;
    nlog = 0;
    armdb *db = open_logged(store, 65536, 131072, ARMDB_CREATE);
    static struct model m, at;
    uint64_t pos = 0;
    CHECK(model_follow(db, &m, &pos) == 0);
    for (int i = 0; i < 4000; i++)
        random_write(db, &seed, &version);
    /* A follower part of the way... */
    CHECK(model_follow(db, &m, &pos) == 0);
    memcpy(&at, &m, sizeof m);
    uint64_t early = pos;
    /* ...then every key deleted, and files filled past them, so that
     * compaction removes the old values and then the tombstones. */
    for (uint64_t k = 0; k < KEYS; k++) {
        int rc = armdb_delete(db, &k, 8);
        CHECK(rc == 0 || rc == ARMDB_NOTFOUND);
    }
    for (int i = 0; i < 3000; i++) {
        uint64_t k = KEYS + 1000 + (uint64_t)i; /* outside the model's range */
        unsigned char v[64] = {0};
        CHECK_OK(armdb_put(db, &k, 8, v, sizeof v));
    }
    CHECK_OK(armdb_sync(db));
    CHECK_OK(armdb_compact(db));
    CHECK_OK(armdb_compact(db));
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.compactions > 0);
    for (int i = 0; i < 500; i++)
        random_write(db, &seed, &version);
    /* From 0: the store's state. */
    static struct model full;
    uint64_t p0 = 0;
    armdb_changes *c;
    armdb_change ch;
    CHECK_OK(armdb_changes_open(db, 0, 0, &c));
    int rc;
    while ((rc = armdb_changes_next(c, &ch)) == 0) {
        model_apply(&full, &ch);
    }
    CHECK_RC(rc, ARMDB_NOTFOUND);
    p0 = armdb_changes_end(c);
    armdb_changes_close(c);
    CHECK(p0 == armdb_last_gsn(db));
    model_equals_store(db, &full);
    /* From early: refused (a tombstone above it was dropped). */
    rc = armdb_changes_open(db, early, 0, &c);
    CHECK_RC(rc, ARMDB_COMPACTED);
    CHECK(strstr(armdb_errmsg(), "full copy") != NULL);
    CHECK(c == NULL);
    CHECK_OK(armdb_close(db));
    db = open_logged(store, 65536, 131072, 0);
    CHECK_RC(armdb_changes_open(db, early, 0, &c), ARMDB_COMPACTED);
    /* From the end: complete (nothing), and the follower at `early`
     * starts over from 0 and converges. */
    CHECK_OK(armdb_changes_open(db, p0, 0, &c));
    CHECK_RC(armdb_changes_next(c, &ch), ARMDB_NOTFOUND);
    armdb_changes_close(c);
    pos = early;
    memcpy(&m, &at, sizeof m);
    CHECK(model_follow(db, &m, &pos) == 1);
    model_equals_store(db, &m);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

/* ARMDB_CHANGES_LIVE: the live keys, least recently written first, each
 * with its current value. */
static void test_live(void)
{
    char *dir = t_tmpdir("changes-live");
    char *store = t_path(dir, "s");
    uint64_t seed = 9, version = 0;
    nlog = 0;
    armdb *db = open_logged(store, 65536, 1 << 20, ARMDB_CREATE);
    for (int i = 0; i < 3000; i++)
        random_write(db, &seed, &version);
    armdb_changes *c;
    armdb_change ch;
    CHECK_OK(armdb_changes_open(db, 0, ARMDB_CHANGES_LIVE, &c));
    uint64_t n = 0, last = 0;
    unsigned char buf[VMAX];
    size_t len;
    int rc;
    while ((rc = armdb_changes_next(c, &ch)) == 0) {
        CHECK(!ch.deleted && ch.gsn > last);
        last = ch.gsn;
        CHECK_OK(armdb_get(db, ch.key, 8, buf, sizeof buf, &len));
        CHECK(len == ch.vlen && memcmp(buf, ch.val, len) == 0);
        n++;
    }
    CHECK_RC(rc, ARMDB_NOTFOUND);
    CHECK(n == armdb_count(db));
    armdb_changes_close(c);
    /* The least recently written key: overwrite it and it goes last. */
    CHECK_OK(armdb_changes_open(db, 0, ARMDB_CHANGES_LIVE, &c));
    CHECK_OK(armdb_changes_next(c, &ch));
    uint64_t oldest;
    memcpy(&oldest, ch.key, 8);
    armdb_changes_close(c);
    CHECK_OK(armdb_put(db, &oldest, 8, "x", 1));
    CHECK_OK(armdb_changes_open(db, 0, ARMDB_CHANGES_LIVE, &c));
    uint64_t k = UINT64_MAX;
    while ((rc = armdb_changes_next(c, &ch)) == 0)
        memcpy(&k, ch.key, 8);
    CHECK(k == oldest);
    armdb_changes_close(c);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

/* ---- a follower beside a writer ---- */

struct writer {
    armdb *db;
    atomic_int *done;
    int writes;
    uint64_t seed;
};

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    uint64_t version = 1u << 30;
    for (int i = 0; i < w->writes; i++) {
        random_write(w->db, &w->seed, &version);
        if (i % 5000 == 4999)
            CHECK_OK(armdb_compact(w->db));
    }
    atomic_store(w->done, 1);
    return NULL;
}

static void test_follow(void)
{
    char *dir = t_tmpdir("changes-follow");
    char *store = t_path(dir, "s");
    armdb_options o;
    armdb *db;
    armdb_options_init(&o);
    o.key_len = 8;
    o.shards = 4;
    o.write_buffer_size = 65536;
    o.max_file_size = 131072;
    o.compaction_threshold = 0.2;
    o.flags = ARMDB_CREATE;
    t_key_options(&o);
    CHECK_OK(armdb_open(store, &o, &db));
    atomic_int done = 0;
    struct writer w = {.db = db, .done = &done, .seed = 1234,
                       .writes = (int)t_env_u64("ARMDB_TEST_SCALE", 100) * 400};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, write_loop, &w) == 0);
    static struct model m;
    uint64_t pos = 0;
    int rounds = 0, restarts = 0;
    while (!atomic_load(&done)) {
        restarts += model_follow(db, &m, &pos);
        rounds++;
        usleep(1000);
    }
    CHECK(pthread_join(t, NULL) == 0);
    restarts += model_follow(db, &m, &pos);
    CHECK(pos == armdb_last_gsn(db));
    model_equals_store(db, &m);
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    printf("follow: %d rounds, %d restarts from 0, %" PRIu64 " files compacted, %" PRIu64 " files\n", rounds,
           restarts, st.compactions, st.files);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

struct collected {
    struct rec *v;
    size_t n, cap;
};

static void collect_cb(void *arg, const armdb_change *ch)
{
    struct collected *c = arg;
    CHECK(c->n < c->cap);
    struct rec *out = &c->v[c->n++];
    out->gsn = ch->gsn;
    memcpy(&out->key, ch->key, 8);
    out->deleted = (int)ch->deleted;
}

struct later_put {
    armdb *db;
    useconds_t after;
};

static void *put_later(void *arg)
{
    struct later_put *lp = arg;
    usleep(lp->after);
    uint64_t k = 7;
    CHECK_OK(armdb_put(lp->db, &k, 8, "late", 4));
    return NULL;
}

/* Per-shard feeds split the store's feed exactly; armdb_changes_wait wakes
 * on a write and times out without one. */
static void test_shards_and_wait(void)
{
    char *dir = t_tmpdir("changes-shard");
    char *store = t_path(dir, "s");
    uint64_t seed = 11, version = 0, end;
    nlog = 0;
    armdb *db = open_logged(store, 65536, 131072, ARMDB_CREATE);
    for (int i = 0; i < 3000; i++)
        random_write(db, &seed, &version);
    struct collected all = {.cap = 8192}, part = {.cap = 8192};
    all.v = calloc(all.cap, sizeof *all.v);
    part.v = calloc(part.cap, sizeof *part.v);
    CHECK(all.v && part.v);
    armdb_changes *c;
    CHECK_OK(armdb_changes_open(db, 0, 0, &c));
    feed_drain(c, 0, collect_cb, &all, &end);
    size_t seen = 0;
    CHECK(all.n > 0);
    char *owner = calloc(all.n, 1);
    for (uint32_t sh = 0; sh < 4; sh++) {
        part.n = 0;
        CHECK_OK(armdb_changes_open_shard(db, sh, 0, 0, &c));
        uint64_t e;
        feed_drain(c, 0, collect_cb, &part, &e);
        CHECK(e == end);
        for (size_t i = 0; i < part.n; i++) {
            /* in the store's feed: same GSN, key and kind, and in no other shard's */
            size_t lo = 0, hi = all.n;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (all.v[mid].gsn < part.v[i].gsn)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            CHECK(lo < all.n && all.v[lo].gsn == part.v[i].gsn && all.v[lo].key == part.v[i].key &&
                  all.v[lo].deleted == part.v[i].deleted && !owner[lo]);
            owner[lo] = 1;
            seen++;
        }
    }
    CHECK(seen == all.n);
    CHECK_RC(armdb_changes_open_shard(db, 4, 0, 0, &c), ARMDB_INVAL);
    /* wait */
    uint64_t last = armdb_last_gsn(db);
    CHECK_RC(armdb_changes_wait(db, last, 30), -ETIMEDOUT);
    struct later_put lp = {.db = db, .after = 50000};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, put_later, &lp) == 0);
    CHECK_OK(armdb_changes_wait(db, last, 10000));
    CHECK(armdb_last_gsn(db) > last);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_OK(armdb_changes_wait(db, last, 0)); /* already past: at once */
    free(owner);
    free(all.v);
    free(part.v);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(dir);
}

/* A DURABLE file of the first format (no horizon) still opens: horizon 0,
 * and its D and aborted runs kept; the next write of it is the new format. */
static void test_durable_v1(void)
{
    char *dir = t_tmpdir("changes-durable");
    char *store = t_path(dir, "s");
    armdb *db = t_open_store(store, 8, 0, 2, 0, 0, ARMDB_CREATE);
    CHECK_OK(armdb_close(db));
    unsigned char buf[56] = "ARMDBDUR";
    uint64_t d = 1000, first = 900, last = 905;
    memcpy(buf + 8, &d, 8);
    buf[16] = 1; /* one aborted run */
    memcpy(buf + 24, &first, 8);
    memcpy(buf + 32, &last, 8);
    uint64_t sum = XXH3_64bits(buf, 40);
    memcpy(buf + 40, &sum, 8);
    char *path = t_path(store, "DURABLE");
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(buf, 1, 48, f) == 48 && fclose(f) == 0);
    db = t_open_store(store, 8, 0, 2, 0, 0, 0);
    CHECK(armdb_last_gsn(db) >= 1000); /* D and the run's end observed */
    armdb_changes *c;
    CHECK_OK(armdb_changes_open(db, 1, 0, &c)); /* horizon 0: any since is served */
    armdb_changes_close(c);
    /* A batch moves D and rewrites the file in the new format. */
    uint64_t k1 = 1, k2 = 2;
    armdb_op ops[2] = {{.type = ARMDB_OP_PUT, .key = &k1, .klen = 8, .val = "a", .vlen = 1},
                       {.type = ARMDB_OP_PUT, .key = &k2, .klen = 8, .val = "b", .vlen = 1}};
    CHECK_OK(armdb_batch(db, ops, 2));
    CHECK_OK(armdb_close(db));
    size_t len;
    uint8_t *now = t_read_file(path, &len);
    CHECK(len == 56 && memcmp(now, "ARMDBDU2", 8) == 0 && t_le32(now + 16) == 1);
    CHECK(t_le64(now + 32) == 900 && t_le64(now + 40) == 905);
    free(now);
    free(path);
    t_rmtree(dir);
    free(store);
    free(dir);
}

int main(void)
{
    test_durable_v1();
    test_shards_and_wait();
    test_exact(1 << 20, 1 << 20);  /* mostly in the write buffer */
    test_exact(65536, 131072);      /* many rotations */
    test_horizon();
    test_live();
    test_follow();
    free(logv);
    printf("changes: ok\n");
    return 0;
}
