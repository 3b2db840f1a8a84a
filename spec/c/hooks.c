/*
 * hooks.c - the write hook: called once per committed write, with the old
 * value when asked, after the shard's lock is released, for batch members
 * too; never for a write that failed or changed nothing.
 *
 * The hook records what it sees; each case compares that with what was
 * written. From inside the hook the test reads the key just written and
 * writes another key: with the shard's lock still held either would hang.
 * Two threads writing at once get one call per write.
 */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define KEY_LEN 8

struct seen {
    char key[KEY_LEN + 1];
    char val[64], old[64];
    bool del, had_old, has_old;
    uint64_t gsn;
};

static struct seen g_seen[64];
static int g_n;
static armdb *g_db;
static atomic_long g_calls;
static bool g_reenter;

static void hook(void *ctx, const armdb_write *w)
{
    CHECK(ctx == &g_seen);
    atomic_fetch_add(&g_calls, 1);
    if (g_n >= 64)
        return;
    struct seen *s = &g_seen[g_n++];
    memset(s, 0, sizeof *s);
    memcpy(s->key, w->key, KEY_LEN);
    CHECK(w->klen == KEY_LEN);
    if (w->val)
        snprintf(s->val, sizeof s->val, "%.*s", (int)w->vlen, (const char *)w->val);
    if (w->old) {
        s->has_old = true;
        snprintf(s->old, sizeof s->old, "%.*s", (int)w->oldlen, (const char *)w->old);
    }
    s->del = w->deleted;
    s->had_old = w->had_old;
    s->gsn = w->gsn;
    if (g_reenter && !w->deleted && memcmp(w->key, "reenter!", KEY_LEN) == 0) {
        /* The lock is released: a get of the same key and a write work. */
        char buf[64];
        size_t n;
        CHECK_OK(armdb_get(g_db, w->key, KEY_LEN, buf, sizeof buf, &n));
        CHECK(n == w->vlen);
        CHECK_OK(armdb_put(g_db, "fromhook", KEY_LEN, "x", 1));
    }
}

static void expect(int i, const char *key, const char *val, const char *old, bool del)
{
    struct seen *s = &g_seen[i];
    if (strcmp(s->key, key) != 0 || strcmp(s->val, val ? val : "") != 0 || s->del != del ||
        s->had_old != (old != NULL) || s->has_old != (old != NULL) || (old && strcmp(s->old, old) != 0)) {
        fprintf(stderr, "call %d: key %s val '%s' old '%s' del %d had_old %d; expected %s '%s' '%s' %d\n", i, s->key,
                s->val, s->old, s->del, s->had_old, key, val ? val : "", old ? old : "(none)", del);
        CHECK(0);
    }
}

static void *writer(void *arg)
{
    uint64_t t = (uint64_t)(uintptr_t)arg;
    char k[KEY_LEN];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "t%" PRIu64 "%05d", t, i % 500);
        CHECK_OK(armdb_put(g_db, k, KEY_LEN, "v", 1));
    }
    return NULL;
}

int main(void)
{
    char *base = t_tmpdir("hooks");
    char *dir = t_path(base, "s");
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = 4;
    o.flags = ARMDB_CREATE;
    t_key_options(&o);
    CHECK_OK(armdb_open(dir, &o, &g_db));
    armdb *db = g_db;
    CHECK_RC(armdb_set_hook(db, hook, &g_seen, 1u << 5), ARMDB_INVAL);
    CHECK_OK(armdb_set_hook(db, hook, &g_seen, ARMDB_HOOK_OLD));

    CHECK_OK(armdb_put(db, "key00001", KEY_LEN, "one", 3));
    CHECK_OK(armdb_put(db, "key00001", KEY_LEN, "uno", 3));
    CHECK_RC(armdb_cas(db, "key00001", KEY_LEN, "one", 3, "eins", 4), ARMDB_CONFLICT); /* no call */
    CHECK_OK(armdb_cas(db, "key00001", KEY_LEN, "uno", 3, "eins", 4));
    CHECK_OK(armdb_cas(db, "key00002", KEY_LEN, NULL, 0, "two", 3));
    CHECK_OK(armdb_delete(db, "key00002", KEY_LEN));
    CHECK_RC(armdb_delete(db, "key00002", KEY_LEN), ARMDB_NOTFOUND); /* no call */
    CHECK(g_n == 5);
    expect(0, "key00001", "one", NULL, false);
    expect(1, "key00001", "uno", "one", false);
    expect(2, "key00001", "eins", "uno", false);
    expect(3, "key00002", "two", NULL, false);
    expect(4, "key00002", NULL, "two", true);
    for (int i = 1; i < 5; i++)
        CHECK(g_seen[i].gsn > g_seen[i - 1].gsn);

    /* A batch: one call per write, in op order; none for the check, nor
     * for a delete of an absent key; none at all for a refused batch. */
    g_n = 0;
    armdb_op ops[] = {
        {ARMDB_OP_CHECK, "key00001", KEY_LEN, "eins", 4},
        {ARMDB_OP_PUT, "key00003", KEY_LEN, "three", 5},
        {ARMDB_OP_DELETE, "key00001", KEY_LEN, NULL, 0},
        {ARMDB_OP_DELETE, "absent!!", KEY_LEN, NULL, 0},
        {ARMDB_OP_PUT, "key00004", KEY_LEN, "four", 4},
    };
    CHECK_OK(armdb_batch(db, ops, 5));
    CHECK(g_n == 3);
    expect(0, "key00003", "three", NULL, false);
    expect(1, "key00001", NULL, "eins", true);
    expect(2, "key00004", "four", NULL, false);
    CHECK(g_seen[1].gsn == g_seen[0].gsn + 1 && g_seen[2].gsn == g_seen[0].gsn + 3);
    g_n = 0;
    CHECK_RC(armdb_batch(db, ops, 5), ARMDB_NOTFOUND); /* key00001 is gone now */
    CHECK(g_n == 0);

    /* Without ARMDB_HOOK_OLD: whether there was a value, not what. */
    CHECK_OK(armdb_set_hook(db, hook, &g_seen, 0));
    g_n = 0;
    CHECK_OK(armdb_put(db, "key00004", KEY_LEN, "vier", 4));
    CHECK(g_n == 1 && g_seen[0].had_old && !g_seen[0].has_old);

    /* From inside the hook: read the key, write another. */
    g_reenter = true;
    g_n = 0;
    CHECK_OK(armdb_put(db, "reenter!", KEY_LEN, "abc", 3));
    CHECK(g_n == 2);
    expect(1, "fromhook", "x", NULL, false);
    g_reenter = false;

    /* Two threads: one call per write (g_seen is full: only counted). */
    g_n = 64;
    atomic_store(&g_calls, 0);
    pthread_t t1, t2;
    CHECK(pthread_create(&t1, NULL, writer, (void *)1) == 0);
    CHECK(pthread_create(&t2, NULL, writer, (void *)2) == 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK(atomic_load(&g_calls) == 10000);

    /* Cleared: no more calls. */
    CHECK_OK(armdb_set_hook(db, NULL, NULL, 0));
    atomic_store(&g_calls, 0);
    CHECK_OK(armdb_put(db, "key00005", KEY_LEN, "five", 4));
    CHECK(atomic_load(&g_calls) == 0);
    CHECK_OK(armdb_close(db));
    t_rmtree(base);
    free(base);
    free(dir);
    printf("hooks: passed\n");
    return 0;
}
