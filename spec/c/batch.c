/*
 * batch.c - armdb_batch: puts, deletes and checks across shards, all or
 * nothing, and every way a batch is refused.
 *
 *  - apply: a batch over every shard is read back, survives a reopen, and
 *    leaves a DURABLE file; deletes of absent keys are no-ops;
 *  - checks: a guard that holds lets the batch through, one that fails
 *    (differing value, present key, absent key) writes nothing and names
 *    the op; check and put of one key is the compare-and-set pattern;
 *  - refused: two writes of one key, too many ops, bad types, lengths and
 *    sizes, a read-only store;
 *  - compaction: members of an old batch made dead by later writes are
 *    dropped by compaction, and a process that dies without closing still
 *    finds the rest of that batch at open (D moved up before the pass);
 *  - inline values and ordered stores take batches too.
 */
#include "test.h"

#include <sys/wait.h>

#define KEY_LEN 12
#define SHARDS 4

static void key_of(uint32_t i, uint8_t *k)
{
    memset(k, 0, KEY_LEN);
    snprintf((char *)k, KEY_LEN, "k%08u", i);
}

static armdb *open_at(const char *dir, uint32_t value_len, unsigned flags)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.value_len = value_len;
    o.shards = SHARDS;
    o.max_file_size = 64 << 10;
    o.flags = ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT | flags;
    armdb *db;
    t_key_options(&o);
    CHECK_OK(armdb_open(dir, &o, &db));
    return db;
}

static void check_value(armdb *db, uint32_t i, const char *want)
{
    uint8_t k[KEY_LEN];
    char buf[256];
    size_t n;
    key_of(i, k);
    if (!want) {
        CHECK_RC(armdb_get(db, k, KEY_LEN, buf, sizeof buf, &n), ARMDB_NOTFOUND);
        return;
    }
    CHECK_OK(armdb_get(db, k, KEY_LEN, buf, sizeof buf, &n));
    if (n != strlen(want) || memcmp(buf, want, n) != 0) {
        fprintf(stderr, "key %u: '%.*s', expected '%s'\n", i, (int)n, buf, want);
        CHECK(0);
    }
}

struct ops {
    armdb_op op[ARMDB_BATCH_MAX + 1];
    uint8_t keys[ARMDB_BATCH_MAX + 1][KEY_LEN];
    size_t n;
};

static void add(struct ops *o, unsigned type, uint32_t i, const char *val)
{
    armdb_op *op = &o->op[o->n];
    key_of(i, o->keys[o->n]);
    op->type = type;
    op->key = o->keys[o->n];
    op->klen = KEY_LEN;
    op->val = val;
    op->vlen = val ? strlen(val) : 0;
    o->n++;
}

static struct ops g_o;

static void test_apply(const char *base)
{
    char *dir = t_path(base, "apply");
    armdb *db = open_at(dir, 0, 0);
    struct ops *o = &g_o;
    o->n = 0;
    for (uint32_t i = 0; i < 40; i++)
        add(o, ARMDB_OP_PUT, i, i % 2 ? "odd" : "even");
    CHECK_OK(armdb_batch(db, o->op, o->n));
    CHECK(armdb_count(db) == 40);
    o->n = 0;
    add(o, ARMDB_OP_DELETE, 3, NULL);
    add(o, ARMDB_OP_DELETE, 1000, NULL); /* absent: nothing happens */
    add(o, ARMDB_OP_PUT, 4, "four");
    add(o, ARMDB_OP_PUT, 41, "new");
    CHECK_OK(armdb_batch(db, o->op, o->n));
    CHECK_OK(armdb_batch(db, o->op, 0));
    check_value(db, 3, NULL);
    check_value(db, 4, "four");
    check_value(db, 41, "new");
    check_value(db, 5, "odd");
    CHECK(armdb_count(db) == 40);
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.puts == 42 && st.deletes == 2);
    CHECK_OK(armdb_close(db));
    char *durable = t_path(dir, "DURABLE");
    struct stat sb;
    CHECK(stat(durable, &sb) == 0 && sb.st_size == 40); /* D, the feed's horizon, no aborted runs */
    free(durable);
    db = open_at(dir, 0, 0);
    check_value(db, 3, NULL);
    check_value(db, 4, "four");
    check_value(db, 41, "new");
    check_value(db, 0, "even");
    CHECK(armdb_count(db) == 40);
    CHECK_OK(armdb_close(db));
    free(dir);
}

static void test_checks(const char *base)
{
    char *dir = t_path(base, "checks");
    armdb *db = open_at(dir, 0, ARMDB_ORDERED);
    struct ops *o = &g_o;
    o->n = 0;
    add(o, ARMDB_OP_PUT, 1, "one");
    add(o, ARMDB_OP_PUT, 2, "two");
    CHECK_OK(armdb_batch(db, o->op, o->n));

    /* The guard holds: compare-and-set of key 1 plus a put elsewhere. */
    o->n = 0;
    add(o, ARMDB_OP_CHECK, 1, "one");
    add(o, ARMDB_OP_PUT, 1, "uno");
    add(o, ARMDB_OP_CHECK, 7, NULL);
    add(o, ARMDB_OP_PUT, 7, "siete");
    CHECK_OK(armdb_batch(db, o->op, o->n));
    check_value(db, 1, "uno");
    check_value(db, 7, "siete");

    /* Each failing guard: nothing written, the op named. */
    struct {
        uint32_t key;
        const char *val;
        int rc;
        const char *why;
    } bad[] = {
        {1, "one", ARMDB_CONFLICT, "ops[2]: the check failed: the value differs"},
        {1, "unos", ARMDB_CONFLICT, "the value differs"},
        {2, NULL, ARMDB_EXISTS, "the key is present"},
        {99, "x", ARMDB_NOTFOUND, "the key is absent"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o->n = 0;
        add(o, ARMDB_OP_PUT, 10, "ten");
        add(o, ARMDB_OP_DELETE, 2, NULL);
        add(o, ARMDB_OP_CHECK, bad[i].key, bad[i].val);
        CHECK_RC(armdb_batch(db, o->op, o->n), bad[i].rc);
        CHECK(strstr(armdb_errmsg(), bad[i].why));
        check_value(db, 10, NULL);
        check_value(db, 2, "two");
    }
    CHECK(armdb_count(db) == 3);
    /* The ordered index saw the batch's new keys and not the refused ones. */
    armdb_iter *it;
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it));
    const void *k, *v;
    size_t kl, vl;
    const char *order[] = {"k00000001", "k00000002", "k00000007"};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(armdb_iter_next(it, &k, &kl, &v, &vl));
        CHECK(strcmp(k, order[i]) == 0);
    }
    CHECK_RC(armdb_iter_next(it, &k, &kl, &v, &vl), ARMDB_NOTFOUND);
    armdb_iter_close(it);
    CHECK_OK(armdb_close(db));
    free(dir);
}

static void test_refused(const char *base)
{
    char *dir = t_path(base, "refused");
    armdb *db = open_at(dir, 0, 0);
    struct ops *o = &g_o;
    o->n = 0;
    add(o, ARMDB_OP_PUT, 1, "a");
    add(o, ARMDB_OP_PUT, 2, "b");
    add(o, ARMDB_OP_DELETE, 1, NULL);
    CHECK_RC(armdb_batch(db, o->op, o->n), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "ops[0] and ops[2] both write the same key"));
    o->n = 0;
    for (uint32_t i = 0; i <= ARMDB_BATCH_MAX; i++)
        add(o, ARMDB_OP_PUT, i, "x");
    CHECK_RC(armdb_batch(db, o->op, o->n), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "over the maximum of 1024"));
    /* ARMDB_BATCH_MAX itself is fine. */
    CHECK_OK(armdb_batch(db, o->op, ARMDB_BATCH_MAX));
    CHECK(armdb_count(db) == ARMDB_BATCH_MAX);
    o->n = 0;
    add(o, ARMDB_OP_PUT, 5, "y");
    add(o, 9, 6, "z");
    CHECK_RC(armdb_batch(db, o->op, o->n), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "ops[1]: type 9"));
    o->op[1].type = ARMDB_OP_PUT;
    o->op[1].klen = KEY_LEN - 1;
    CHECK_RC(armdb_batch(db, o->op, o->n), ARMDB_KEYLEN);
    CHECK(strstr(armdb_errmsg(), "ops[1]: key of 11 bytes"));
    o->op[1].klen = KEY_LEN;
    o->op[1].key = NULL;
    CHECK_RC(armdb_batch(db, o->op, o->n), ARMDB_INVAL);
    o->op[1].key = o->keys[1];
    static char big[2 << 20];
    o->op[1].val = big;
    o->op[1].vlen = sizeof big;
    CHECK_RC(armdb_batch(db, o->op, o->n), ARMDB_TOOBIG);
    CHECK(strstr(armdb_errmsg(), "ops[1]"));
    CHECK_RC(armdb_batch(db, NULL, 2), ARMDB_INVAL);
    check_value(db, 5, "x"); /* none of the refused batches wrote */
    CHECK_OK(armdb_close(db));

    armdb_options ro;
    armdb_options_init(&ro);
    ro.flags = ARMDB_RDONLY;
    t_key_options(&ro);
    CHECK_OK(armdb_open(dir, &ro, &db));
    o->n = 0;
    add(o, ARMDB_OP_PUT, 5, "y");
    CHECK_RC(armdb_batch(db, o->op, o->n), ARMDB_READONLY);
    CHECK_OK(armdb_close(db));
    free(dir);
}

/* Fixed-length values live in the index: a batch fills them in too. */
static void test_inline(const char *base)
{
    char *dir = t_path(base, "inline");
    armdb *db = open_at(dir, 4, 0);
    struct ops *o = &g_o;
    o->n = 0;
    add(o, ARMDB_OP_PUT, 1, "aaaa");
    add(o, ARMDB_OP_PUT, 2, "bbbb");
    add(o, ARMDB_OP_PUT, 3, "cccc");
    CHECK_OK(armdb_batch(db, o->op, o->n));
    o->n = 0;
    add(o, ARMDB_OP_PUT, 4, "dd");
    CHECK_RC(armdb_batch(db, o->op, o->n), ARMDB_TOOBIG);
    CHECK_OK(armdb_close(db));
    db = open_at(dir, 4, 0);
    check_value(db, 2, "bbbb");
    check_value(db, 4, NULL);
    CHECK_OK(armdb_close(db));
    free(dir);
}

/* A batch whose members later writes made dead: compaction drops those,
 * and a process that then dies without closing must still find the live
 * members at open (they are at or below D by then). */
static void test_compacted(const char *base)
{
    char *dir = t_path(base, "compacted");
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        armdb *db = open_at(dir, 0, 0);
        struct ops *o = &g_o;
        o->n = 0;
        for (uint32_t i = 0; i < 8; i++)
            add(o, ARMDB_OP_PUT, i, "batch");
        if (armdb_batch(db, o->op, o->n))
            _exit(2);
        char v[2048];
        memset(v, 'x', sizeof v);
        v[sizeof v - 1] = 0;
        uint8_t k[KEY_LEN];
        /* Keys 1..7 overwritten many times: the batch's files fill with
         * garbage, and roll over. */
        for (int round = 0; round < 60; round++)
            for (uint32_t i = 1; i < 8; i++) {
                key_of(i, k);
                if (armdb_put(db, k, KEY_LEN, "later", 5))
                    _exit(3);
                key_of(100 + i, k);
                if (armdb_put(db, k, KEY_LEN, v, sizeof v))
                    _exit(4);
            }
        armdb_stat before, after;
        if (armdb_stats(db, &before) || armdb_compact(db) || armdb_sync(db) || armdb_stats(db, &after))
            _exit(5);
        if (after.compactions == 0)
            _exit(6);
        _exit(0); /* no close: as if killed */
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "compacted: child exit %d\n", WEXITSTATUS(status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    armdb *db = open_at(dir, 0, 0);
    check_value(db, 0, "batch");
    for (uint32_t i = 1; i < 8; i++)
        check_value(db, i, "later");
    CHECK_OK(armdb_close(db));
    free(dir);
}

int main(void)
{
    char *base = t_tmpdir("batch");
    test_apply(base);
    test_checks(base);
    test_refused(base);
    test_inline(base);
    test_compacted(base);
    t_rmtree(base);
    free(base);
    printf("batch: passed\n");
    return 0;
}
