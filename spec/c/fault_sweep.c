/*
 * fault_sweep.c - every I/O call of a workload, failed in turn.
 *
 * A fixed workload (puts, overwrites, deletes and gets over two shards,
 * small files so rotation and hints happen, armdb_sync every few
 * operations, armdb_compact COMPACTIONS times, then close; and the same in ARMDB_SYNC_ALWAYS mode) is first run to count its write, fdatasync,
 * open, rename, read and fsync calls. Then, for each kind and each N up to that count,
 * with ENOSPC and with EIO, it runs again on a fresh store with the Nth call
 * of that kind failing (once, and in a second pass from then on). Each run
 * checks, as it goes and after a reopen without faults:
 *   - a call that fails returns the injected error, or ARMDB_READONLY once
 *     a failed fdatasync has turned the store read-only (with a message);
 *     a failed fdatasync of a data file (compaction's output too) always
 *     does, nothing else does;
 *   - reads keep working: every key reads as its last acknowledged state
 *     or as one of the failed writes made to it since;
 *   - nothing made durable is lost (everything acknowledged before the last
 *     successful armdb_sync, or every acknowledged write in sync-always
 *     mode): after the reopen each key is in that state or one written
 *     after it.
 */
#include "test.h"

#include "fault.h"

#define KLEN 8
#define NKEYS 40
#define NOPS 300
#define SYNC_EVERY 25
#define COMPACTIONS 2 /* each one's calls are swept too: a few keep the sweep short */
#define MAXV 1500
#define MAXHIST (NOPS + 2)

/* A key's history: states 0 = absent, else a version whose value is
 * derived from (key, version). */
struct key_hist {
    int states[MAXHIST];
    int n;
    int acked;   /* index in states of the last acknowledged state */
    int durable; /* index of the state the last good armdb_sync covers */
};

struct run {
    struct key_hist k[NKEYS];
    int version;
    int fault_rc; /* the injected error, negated */
    int read_only; /* a sync failed: writes must be refused */
    unsigned failures;
};

static void make_key(int i, unsigned char *key)
{
    memset(key, 0, KLEN);
    memcpy(key, "key", 3);
    key[4] = (unsigned char)i;
}

static size_t make_val(int key, int version, unsigned char *v)
{
    size_t n = (size_t)(version * 131 + key * 17) % MAXV;
    for (size_t j = 0; j < n; j++)
        v[j] = (unsigned char)(key * 31 + version * 7 + j);
    if (n >= 8) {
        memcpy(v, &key, 4);
        memcpy(v + 4, &version, 4);
    }
    return n;
}

static const char *names[FAULT_NOPS] = {"write", "fdatasync", "open", "rename", "read", "fsync"};

/* Is what armdb returns for key one of the states [from, n)? */
static int state_matches(int key, int state, int rc, const unsigned char *buf, size_t len)
{
    if (state == 0)
        return rc == ARMDB_NOTFOUND;
    if (rc != 0)
        return 0;
    unsigned char want[MAXV];
    size_t n = make_val(key, state, want);
    return len == n && memcmp(buf, want, n) == 0;
}

static int allowed(const struct key_hist *h, int key, int from, int rc, const unsigned char *buf,
                   size_t len)
{
    for (int i = from; i < h->n; i++)
        if (state_matches(key, h->states[i], rc, buf, len))
            return 1;
    return 0;
}

static void check_reads(armdb *db, struct run *r, int durable, const char *when, int kind, uint64_t nth)
{
    unsigned char key[KLEN], buf[MAXV];
    for (int i = 0; i < NKEYS; i++) {
        struct key_hist *h = &r->k[i];
        size_t len = 0;
        make_key(i, key);
        int rc = armdb_get(db, key, KLEN, buf, sizeof buf, &len);
        int from = durable ? h->durable : h->acked;
        if (!allowed(h, i, from, rc, buf, len)) {
            fprintf(stderr, "fault_sweep: %s call %" PRIu64 " errno %d: key %d %s: get rc %d (%s) len %zu,"
                            " not one of its %d allowed states\n",
                    names[kind], nth, -r->fault_rc, i, when, rc, armdb_strerror(rc), len, h->n - from);
            exit(1);
        }
    }
}

static void push_state(struct key_hist *h, int state, int acked)
{
    CHECK(h->n < MAXHIST);
    h->states[h->n++] = state;
    if (acked)
        h->acked = h->n - 1;
}

/* The return code of a write that may meet the fault. */
static int cur_kind;
static uint64_t cur_nth;

static int write_rc_ok(struct run *r, int rc)
{
    if (rc == 0)
        return 1;
    if (rc == r->fault_rc || (rc == ARMDB_READONLY && r->read_only)) {
        CHECK(armdb_errmsg()[0] != 0);
        r->failures++;
        return 1;
    }
    fprintf(stderr, "fault_sweep: %s call %" PRIu64 " errno %d%s: unexpected rc %d: %s\n", names[cur_kind],
            cur_nth, -r->fault_rc, r->read_only ? " (read-only)" : "", rc, armdb_errmsg());
    return 0;
}

/* The pass under way: ARMDB_SYNC_NONE with an armdb_sync every SYNC_EVERY
 * operations, or ARMDB_SYNC_ALWAYS, where every acknowledged write is
 * durable, over fewer operations (each costs an fdatasync). */
static uint32_t sync_mode;
static int nops;

static armdb *open_store(const char *dir, int create, int *rc_out)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.shards = 2;
    o.max_file_size = 64 << 10;
    o.write_buffer_size = 64 << 10;
    o.sync_mode = sync_mode;
    /* Compaction by explicit calls only, so every run makes the same
     * calls in the same order. */
    o.flags = (create ? ARMDB_CREATE : 0) | ARMDB_NO_AUTO_COMPACT;
    armdb *db = NULL;
    t_key_options(&o);
    *rc_out = armdb_open(dir, &o, &db);
    return db;
}

/* Only a failed fdatasync turns the store read-only, and then it stays
 * so: check it, and note it for the calls that follow. */
static void note_read_only(armdb *db, struct run *r, int kind)
{
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    if (r->read_only)
        CHECK(st.read_only == 1);
    if (st.read_only && !r->read_only) {
        CHECK(kind == FAULT_DATASYNC && r->failures > 0);
        r->read_only = 1;
    }
    if (kind == FAULT_DATASYNC && armdb_fault_fired() > 0)
        CHECK(st.read_only == 1);
}

/* Run the workload with kind's nth call failing (nth 0: no fault). */
static void run_once(int kind, uint64_t nth, int err, int sticky, uint64_t *calls)
{
    char *dir = t_tmpdir("fault");
    char *store = t_path(dir, "s");
    struct run *r = calloc(1, sizeof *r);
    CHECK(r);
    for (int i = 0; i < NKEYS; i++)
        push_state(&r->k[i], 0, 1);
    r->fault_rc = -err;
    cur_kind = kind;
    cur_nth = nth;
    armdb_fault_reset();
    if (nth)
        armdb_fault_arm(kind, nth, err, sticky);

    int rc;
    armdb *db = open_store(store, 1, &rc);
    if (rc != 0) {
        /* The fault hit the creation itself: a clean error, and the
         * directory still opens (or is created) once the fault is gone. */
        if (rc != r->fault_rc || !armdb_errmsg()[0]) {
            fprintf(stderr, "fault_sweep: %s call %" PRIu64 " errno %d: open returned %d (%s)\n", names[kind], nth,
                    err, rc, armdb_errmsg());
            exit(1);
        }
        armdb_fault_reset();
        db = open_store(store, 1, &rc);
        CHECK_OK(rc);
        CHECK(armdb_count(db) == 0);
        CHECK_OK(armdb_close(db));
        goto done;
    }
    uint64_t seed = 12345;
    unsigned char key[KLEN], val[MAXV], buf[MAXV];
    for (int op = 1; op <= nops; op++) {
        int k = (int)(t_rand(&seed) % NKEYS);
        struct key_hist *h = &r->k[k];
        unsigned dice = (unsigned)(t_rand(&seed) % 10);
        make_key(k, key);
        if (dice < 6) {
            int v = ++r->version;
            size_t n = make_val(k, v, val);
            rc = armdb_put(db, key, KLEN, val, n);
            CHECK(write_rc_ok(r, rc));
            push_state(h, v, rc == 0);
        } else if (dice < 8) {
            rc = armdb_delete(db, key, KLEN);
            if (rc == ARMDB_NOTFOUND) {
                CHECK(h->states[h->acked] == 0 || h->n - 1 > h->acked);
            } else {
                CHECK(write_rc_ok(r, rc));
                push_state(h, 0, rc == 0);
            }
        } else {
            size_t len = 0;
            rc = armdb_get(db, key, KLEN, buf, sizeof buf, &len);
            if (rc == r->fault_rc && kind == FAULT_READ) {
                r->failures++;
            } else if (!allowed(h, k, h->acked, rc, buf, len)) {
                fprintf(stderr, "fault_sweep: %s call %" PRIu64 ": get of key %d during the run: rc %d\n",
                        names[kind], nth, k, rc);
                exit(1);
            }
        }
        if (op % (nops / COMPACTIONS) == 0) {
            note_read_only(db, r, kind); /* the write above may have made it so */
            rc = armdb_compact(db);
            CHECK(write_rc_ok(r, rc));
            note_read_only(db, r, kind);
        }
        if (sync_mode == ARMDB_SYNC_ALWAYS && !r->read_only)
            for (int i = 0; i < NKEYS; i++)
                r->k[i].durable = r->k[i].acked;
        if (sync_mode == ARMDB_SYNC_NONE && op % SYNC_EVERY == 0) {
            rc = armdb_sync(db);
            CHECK(write_rc_ok(r, rc));
            if (rc == 0)
                for (int i = 0; i < NKEYS; i++)
                    r->k[i].durable = r->k[i].acked;
        }
        note_read_only(db, r, kind);
    }
    /* Reads keep working whatever failed. */
    if (kind != FAULT_READ)
        check_reads(db, r, 0, "before close", kind, nth);
    rc = armdb_close(db);
    CHECK(write_rc_ok(r, rc));
    if (nth == 0)
        for (int i = 0; i < FAULT_NOPS; i++)
            calls[i] = armdb_fault_calls(i);

    /* Without the fault, the store reopens with nothing durable lost. */
    armdb_fault_reset();
    db = open_store(store, 0, &rc);
    CHECK_OK(rc);
    check_reads(db, r, 1, "after reopen", kind, nth);
    CHECK_OK(armdb_close(db));
    if (nth == 0)
        CHECK(r->failures == 0);
done:
    t_rmtree(dir);
    free(r);
    free(store);
    free(dir);
}

static uint64_t sweep(uint32_t mode, int ops, const int *errs, size_t nerrs, int sticky_from)
{
    uint64_t calls[FAULT_NOPS] = {0};
    uint64_t runs = 0;
    sync_mode = mode;
    nops = ops;
    run_once(0, 0, EIO, 0, calls);
    for (int kind = 0; kind < FAULT_NOPS; kind++) {
        CHECK(calls[kind] > 0);
        for (int sticky = sticky_from; sticky < 2; sticky++)
            for (size_t e = 0; e < nerrs; e++)
                for (uint64_t n = 1; n <= calls[kind] + 1; n++, runs++)
                    run_once(kind, n, errs[e], sticky, calls);
    }
    printf("fault_sweep: sync %s, %d operations: %" PRIu64 " runs; calls per workload:",
           mode == ARMDB_SYNC_ALWAYS ? "always" : "none", ops, runs);
    for (int kind = 0; kind < FAULT_NOPS; kind++)
        printf(" %s %" PRIu64, names[kind], calls[kind]);
    printf("\n");
    return runs;
}

int main(void)
{
    static const int errs[] = {ENOSPC, EIO};
    /* On encrypted stores (the *_encrypted run) EIO alone, for time. */
    int enc = t_env_u64("ARMDB_TEST_ENCRYPT", 0) != 0;
    sweep(ARMDB_SYNC_NONE, NOPS, errs + enc, 2 - enc, 0);
    /* Every acknowledged write is durable here, so after the reopen each
     * key must be in its last acknowledged state or a failed one after it.
     * One errno for once-only faults, the other for sticky ones. */
    sweep(ARMDB_SYNC_ALWAYS, 60, errs + 1, 1, 0);
    sweep(ARMDB_SYNC_ALWAYS, 60, errs, 1, 1);
    return 0;
}
