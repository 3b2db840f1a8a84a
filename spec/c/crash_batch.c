/*
 * crash_batch.c - kill -9 at a random moment: armdb_batch is all or nothing
 * across shards, and durable once acknowledged under ARMDB_SYNC_ALWAYS.
 *
 * Each round starts a child (fork, then exec of this program, so that it is
 * a fresh process: its GSN counter starts from what it finds in the store,
 * as after a real restart) that opens the store, checks that it holds what
 * the parent found there after the previous round, then runs batches
 * numbered b = B0, B0 + 1, ... (increasing over the whole run). Batch b is a
 * function of (seed, b): 2..8 distinct keys of 64 (a few with one write and
 * a check, the ordinary-entry path), mostly puts, some deletes, now and
 * then an ARMDB_OP_CHECK guard that holds or one that must fail (EXISTS,
 * CONFLICT or NOTFOUND: nothing is written). A put's value holds b, the key,
 * the member's index and the number of writes, then filler derived from
 * (seed, b, key) of 0 .. 12000 bytes, so a foreign, stale or torn value is
 * never taken for another. Before each batch the child reports "announce
 * b" over a pipe, after it "ack b rc"; now and then it calls armdb_sync()
 * (reported: every earlier batch is durable) and armdb_compact() (which
 * moves the DURABLE mark D up first), and the background compaction runs
 * over 64 KiB files all along.
 *
 * The parent SIGKILLs the child after a random number of acks or a random
 * delay (from the fork, landing in recovery too, or from the end of the
 * open), drains the pipe, reopens the store (read-only, or as a writer that
 * cuts torn tails, records torn batches and, sometimes, compacts) and
 * checks:
 *
 *  1. every value is well formed, and is the one the previous round left or
 *     one of a batch announced this round whose check did not fail;
 *  2. atomicity: some set S of this round's batches explains the store, each
 *     key holding the write of the newest batch of S that wrote it (or its
 *     state before the round). The largest candidate S is found by removing
 *     every batch that a visible value proves not applied (a key shows an
 *     older value than the batch wrote) and, repeatedly, the newest put of a
 *     key found absent; the store must then be exactly what S gives. A batch
 *     seen in one key and missing in another (torn) fails here;
 *  3. durability: S holds every acknowledged batch under ARMDB_SYNC_ALWAYS,
 *     and every batch before the last completed armdb_sync() in modes
 *     interval and none (every acked one after a quiet second in mode
 *     interval);
 *  4. a full scan and armdb_count agree with the gets; no entry is counted
 *     corrupt; a compaction by the parent changes nothing.
 *
 * The found state is the next round's model, on the same store (recovery of
 * recovered stores, many files and hints); a fresh store of 4, 8, 4 or 1
 * shards (every third one ordered) every STORE_ROUNDS rounds. Each round
 * draws its sync mode (always, interval of 1..10 ms, none), its write
 * buffer (64 KiB .. 1 MiB) and its compaction threshold; with small write
 * buffers mode none tears batches often (one shard's buffer reaches the
 * file, another's does not).
 *
 * Before the kill rounds, a deterministic part tears batches on purpose. A
 * child writes batch A and is killed; another writes batch T (over half of
 * A's keys and more), syncs and is killed; the data file holding one member
 * of T (its first, a middle one or its last) is then cut inside that
 * member's value. Read-only and writer opens must find A whole and no trace
 * of T; after a compaction (in a process of its own) has dropped T's
 * members, batches that fresh processes write over the same keys must be
 * whole, after a clean close and after a kill (so a fresh process never
 * takes GSNs of the runs DURABLE marks torn). Two more cases tear T in a
 * store whose keys were all deleted and whose tombstones were compacted
 * away, and in one whose D was moved up by a compaction in a process that
 * had written another store (the GSN counter is process-wide): in both the
 * store holds no entry as new as D, and T's members must still be checked
 * as a batch, not taken for ordinary entries at or below D. A last case
 * has compaction keep a dead batch member above D (D held back by an
 * injected fault) whose key was deleted in the same file: the key must
 * stay deleted.
 *
 * Encrypted stores (ARMDB_TEST_ENCRYPT=1, or 2 for AES-256-GCM): every
 * store, the children's and the parent's opens included, is opened with a
 * key, so the kill rounds run on sealed pages unchanged. The deterministic
 * part cannot find a member's value in the data file (its pages are
 * ciphertext), so it cuts where a torn write of a sealed store ends: at the
 * start of the 4096-byte page that holds the member. The member's shard is
 * found by writing its key alone to a probe store of as many shards (the
 * shard is a function of the key and the shard count); the shard's newest
 * data file holds T's members of that shard alone (its writer opened a
 * fresh one), so the member's offset follows from their sizes (entry
 * layout of src/entry.c), checked against the file's length. The page cut
 * takes the shard's earlier members of T in that page with it: T is torn
 * all the same (its other shards keep theirs). A line says so per case.
 *
 * Replay: ARMDB_SEED=<seed printed on failure> gives the same batches and
 * kill plans (where a kill lands still depends on timing).
 * ARMDB_CRASH_ROUNDS sets the number of kill rounds (default 200);
 * ARMDB_CRASH_PART=torn or =kill runs only that part.
 */
#include "test.h"

#include "fault.h"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define KEY_LEN 16
#define NKEYS 64
#define HOT_KEYS 8
#define MAX_WRITES 8
#define VAL_HDR 16
#define VAL_MAGIC 0xb7
#define FILL_MAX 12000
#define VAL_MAX (VAL_HDR + FILL_MAX)
#define BATCH_CAP 300    /* a child that gets this far waits to be killed */
#define QUIET_US 1000000 /* more than enough for an interval barrier to pass */
#define STORE_ROUNDS 25  /* rounds on one store before a fresh one */
#define MAX_FILE 65536
#define ROUND_LIMIT_US (60 * 1000000LL) /* a child this slow is stuck */
#define DEFAULT_ROUNDS 200
#define SCRIPT_BASE ((uint64_t)1 << 40) /* batch numbers of the deterministic part */

/* ---- batches: a function of (seed, b) ---- */

enum check_kind { CK_NONE, CK_HOLDS, CK_FAILS };

struct batch {
    uint64_t b;
    uint32_t nw; /* writes, 1 .. MAX_WRITES, in op (= GSN) order */
    uint32_t key[MAX_WRITES];
    uint8_t del[MAX_WRITES];
    uint32_t check; /* enum check_kind */
    uint32_t check_key;
    uint32_t check_at; /* the check's place among the ops, 0 .. nw */
};

/* The deterministic part's batches: keys first .. first+n-1. */
enum { S_A, S_T, S_N, S_N2, S_X, S_D, S_NSCRIPT };
static const struct {
    uint32_t first, n, del;
} g_script[S_NSCRIPT] = {
    [S_A] = {0, 6, 0},  /* keys 0..5 */
    [S_T] = {3, 6, 0},  /* keys 3..8, over half of A: the batch torn */
    [S_N] = {2, 8, 0},  /* keys 2..9, written after T was found torn */
    [S_N2] = {1, 8, 0}, /* keys 1..8, the same, then killed */
    [S_X] = {0, 6, 1},  /* deletes keys 0..5 */
    [S_D] = {0, 1, 1},  /* deletes key 0 alone: an ordinary tombstone */
};

static uint64_t g_seed;
static int g_enc; /* ARMDB_TEST_ENCRYPT: the stores are encrypted */

static int batch_writes(const struct batch *d, uint32_t key, uint32_t *member)
{
    for (uint32_t m = 0; m < d->nw; m++)
        if (d->key[m] == key) {
            if (member)
                *member = m;
            return 1;
        }
    return 0;
}

static void batch_of(uint64_t b, struct batch *d)
{
    memset(d, 0, sizeof *d);
    d->b = b;
    if (b >= SCRIPT_BASE) {
        uint64_t i = b - SCRIPT_BASE;
        CHECK(i < S_NSCRIPT);
        d->nw = g_script[i].n;
        for (uint32_t m = 0; m < d->nw; m++) {
            d->key[m] = g_script[i].first + m;
            d->del[m] = (uint8_t)g_script[i].del;
        }
        return;
    }
    uint64_t s = t_mix(g_seed, b);
    uint64_t r = t_rand(&s) % 100;
    d->nw = r < 8 ? 1 : 2 + (uint32_t)(t_rand(&s) % (MAX_WRITES - 1));
    for (uint32_t m = 0; m < d->nw; m++) {
        uint32_t k, dup;
        do {
            k = (uint32_t)(t_rand(&s) % 3 == 0 ? t_rand(&s) % HOT_KEYS : t_rand(&s) % NKEYS);
            dup = 0;
            for (uint32_t j = 0; j < m; j++)
                dup |= d->key[j] == k;
        } while (dup);
        d->key[m] = k;
        d->del[m] = t_rand(&s) % 100 < 20;
    }
    r = t_rand(&s) % 100;
    if (d->nw == 1)
        d->check = r < 60 ? CK_HOLDS : CK_NONE;
    else
        d->check = r < 15 ? CK_HOLDS : r < 23 ? CK_FAILS : CK_NONE;
    if (d->check) {
        d->check_key = t_rand(&s) % 2 ? d->key[t_rand(&s) % d->nw] : (uint32_t)(t_rand(&s) % NKEYS);
        d->check_at = (uint32_t)(t_rand(&s) % (d->nw + 1));
    }
}

static void make_key(uint32_t idx, unsigned char *k)
{
    uint64_t s = idx * 0x2545f4914f6cdd1dull + 11;
    k[0] = (unsigned char)idx;
    k[1] = 0xba;
    for (int i = 2; i < KEY_LEN; i++)
        k[i] = (unsigned char)t_rand(&s);
}

/* Index of key k, or -1 if it is none of ours. */
static int key_index(const unsigned char *k)
{
    unsigned char want[KEY_LEN];
    if (k[0] >= NKEYS)
        return -1;
    make_key(k[0], want);
    return memcmp(k, want, KEY_LEN) == 0 ? k[0] : -1;
}

/* The value member m of batch d puts: a header (b, key, member, number of
 * writes, a tag), then filler; length and bytes derive from (seed, b, key). */
static size_t make_value(const struct batch *d, uint32_t m, unsigned char *out)
{
    uint32_t key = d->key[m];
    uint64_t s = t_mix(g_seed ^ ((uint64_t)key << 48) ^ 0x5bd1e995, d->b);
    uint64_t r = t_rand(&s) % 100;
    size_t fill;
    if (d->b >= SCRIPT_BASE)
        fill = 100 + (size_t)(t_rand(&s) % 400);
    else if (r < 40)
        fill = (size_t)(t_rand(&s) % 64);
    else if (r < 80)
        fill = 64 + (size_t)(t_rand(&s) % 1436);
    else if (r < 96)
        fill = 1500 + (size_t)(t_rand(&s) % 3500);
    else
        fill = 5000 + (size_t)(t_rand(&s) % (FILL_MAX - 5000 + 1));
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(d->b >> (8 * i));
    out[8] = (unsigned char)key;
    out[9] = (unsigned char)m;
    out[10] = (unsigned char)d->nw;
    out[11] = VAL_MAGIC;
    uint32_t tag = (uint32_t)t_rand(&s);
    memcpy(out + 12, &tag, 4);
    t_fill(t_rand(&s), out + VAL_HDR, fill);
    return VAL_HDR + fill;
}

/* The batch whose put of key this value is, or 0 if it is no value ever
 * made (too short, foreign, torn). */
static uint64_t value_batch(uint32_t key, const unsigned char *v, size_t len)
{
    static unsigned char want[VAL_MAX];
    struct batch d;
    uint32_t m;
    if (len < VAL_HDR || v[8] != key || v[11] != VAL_MAGIC)
        return 0;
    uint64_t b = t_le64(v);
    if (b == 0 || b >= SCRIPT_BASE + S_NSCRIPT)
        return 0;
    batch_of(b, &d);
    if (!batch_writes(&d, key, &m) || d.del[m] || v[9] != m || v[10] != d.nw)
        return 0;
    return make_value(&d, m, want) == len && memcmp(v, want, len) == 0 ? b : 0;
}

/* ---- pipe records, plans, the store ---- */

enum rec_kind {
    R_READY = 1, /* opened, and the store matched the model */
    R_ANNOUNCE,  /* about to call armdb_batch for b */
    R_ACK,       /* armdb_batch for b returned rc (0, or the failed check's) */
    R_SYNC,      /* armdb_sync() returned 0; b = the next batch */
    R_DONE,      /* every batch made; waiting for the kill (or closed) */
};

struct rec {
    uint32_t kind;
    int32_t rc;
    uint64_t b;
};
_Static_assert(sizeof(struct rec) == 16, "a record is one atomic pipe write");
_Static_assert(sizeof(struct rec) <= PIPE_BUF, "a record is one atomic pipe write");

/* What the child is told: written to a file the exec'd child reads. */
struct plan {
    uint64_t seed;
    uint64_t base; /* the first batch */
    uint64_t rng;  /* the child's own draws (syncs, compactions) */
    uint32_t max;  /* batches to run */
    uint32_t shards, sync_mode, interval_ms, wbuf, flags;
    double threshold;
    int32_t fd;       /* the pipe's write end */
    uint32_t script;  /* sync after every batch, no random extras */
    uint32_t close;   /* close and exit 0 when done, instead of waiting */
    uint32_t compact; /* armdb_compact() once the batches are made */
    uint64_t model[NKEYS];
    char path[PATH_MAX];
};

struct store {
    char *tmp, *path;
    uint32_t shards;
    uint32_t flags;        /* ARMDB_ORDERED or 0, at creation */
    uint64_t model[NKEYS]; /* per key: the batch whose value it holds, 0 = absent */
    int created;           /* a child has opened it: the meta file exists */
    uint32_t aborted_runs; /* of DURABLE, as last read */
};

static const char *mode_name(uint32_t m)
{
    return m == ARMDB_SYNC_ALWAYS ? "always" : m == ARMDB_SYNC_INTERVAL ? "interval" : "none";
}

/* ---- the child: run batches and report, until killed ---- */

static void child_fail(const char *what, uint64_t b, int rc)
{
    fprintf(stderr, "crash_batch child: %s (batch %" PRIu64 "): rc %d (%s; %s)\n", what, b, rc,
            armdb_strerror(rc), armdb_errmsg());
    _exit(3);
}

static void child_send(int fd, uint32_t kind, int rc, uint64_t b)
{
    struct rec r = {kind, rc, b};
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(4);
}

/* The value key holds in state s (a batch number), into out. */
static size_t state_value(uint32_t key, uint64_t s, unsigned char *out)
{
    struct batch d;
    uint32_t m = 0;
    batch_of(s, &d);
    CHECK(batch_writes(&d, key, &m) && !d.del[m]);
    return make_value(&d, m, out);
}

/* 0 if db holds state s for key, else 1 or the error. */
static int child_holds(armdb *db, uint32_t key, uint64_t s)
{
    static unsigned char buf[VAL_MAX], want[VAL_MAX];
    unsigned char k[KEY_LEN];
    size_t vl = 0;
    make_key(key, k);
    int rc = armdb_get(db, k, KEY_LEN, buf, sizeof buf, &vl);
    if (s == 0)
        return rc == ARMDB_NOTFOUND ? 0 : rc ? rc : 1;
    if (rc)
        return rc;
    size_t wl = state_value(key, s, want);
    return vl == wl && memcmp(buf, want, vl) == 0 ? 0 : 1;
}

/* The ops of batch d over a store in state cur (for its check), and what
 * armdb_batch must return; the keys and values stay valid until the next
 * call. Returns the number of ops. */
static size_t batch_ops(const struct batch *d, const uint64_t *cur, armdb_op *ops, int *want)
{
    static unsigned char vals[MAX_WRITES + 1][VAL_MAX];
    static unsigned char keys[MAX_WRITES + 1][KEY_LEN];
    size_t n = 0;
    *want = 0;
    for (uint32_t m = 0; m <= d->nw; m++) {
        if (d->check && m == d->check_at) {
            uint32_t k = d->check_key;
            armdb_op *op = &ops[n];
            make_key(k, keys[n]);
            *op = (armdb_op){ARMDB_OP_CHECK, keys[n], KEY_LEN, NULL, 0};
            if (d->check == CK_HOLDS) {
                if (cur[k]) {
                    op->vlen = state_value(k, cur[k], vals[n]);
                    op->val = vals[n];
                }
            } else if (cur[k] && (d->b & 1)) {
                *want = ARMDB_EXISTS; /* "absent", but it is there */
            } else if (cur[k]) {
                op->vlen = state_value(k, cur[k], vals[n]); /* its value, one byte off */
                vals[n][op->vlen - 1] ^= 0x40;
                op->val = vals[n];
                *want = ARMDB_CONFLICT;
            } else {
                memcpy(vals[n], "not there", 9);
                op->val = vals[n];
                op->vlen = 9;
                *want = ARMDB_NOTFOUND;
            }
            n++;
        }
        if (m == d->nw)
            break;
        make_key(d->key[m], keys[n]);
        if (d->del[m]) {
            ops[n] = (armdb_op){ARMDB_OP_DELETE, keys[n], KEY_LEN, NULL, 0};
        } else {
            size_t vl = make_value(d, m, vals[n]);
            ops[n] = (armdb_op){ARMDB_OP_PUT, keys[n], KEY_LEN, vals[n], vl};
        }
        n++;
    }
    return n;
}

static int child_main(const char *plan_path)
{
    static struct plan pl;
    armdb_op ops[MAX_WRITES + 1];
    uint64_t *cur = pl.model, live = 0;
    armdb_options o;
    armdb *db;
    size_t len;
    int rc;

    uint8_t *raw = t_read_file(plan_path, &len);
    CHECK(len == sizeof pl);
    memcpy(&pl, raw, sizeof pl);
    free(raw);
    g_seed = pl.seed;
    int fd = pl.fd;

    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = pl.shards;
    o.sync_mode = pl.sync_mode;
    o.sync_interval_ms = pl.interval_ms;
    o.write_buffer_size = pl.wbuf;
    o.max_file_size = MAX_FILE;
    o.compaction_threshold = pl.threshold;
    o.flags = ARMDB_CREATE | pl.flags;
    t_key_options(&o);
    if ((rc = armdb_open(pl.path, &o, &db)) != 0)
        child_fail("open", 0, rc);
    for (uint32_t k = 0; k < NKEYS; k++) {
        if ((rc = child_holds(db, k, cur[k])) != 0) {
            fprintf(stderr, "crash_batch child: after open, key %u is not in state %" PRIu64 "\n", k, cur[k]);
            child_fail("the store differs from what the parent found", cur[k], rc);
        }
        live += cur[k] != 0;
    }
    if (armdb_count(db) != live) {
        fprintf(stderr,
                "crash_batch child: after open, armdb_count is %" PRIu64 ", the parent found %" PRIu64 "\n",
                armdb_count(db), live);
        _exit(3);
    }
    child_send(fd, R_READY, 0, 0);

    uint64_t rng = pl.rng;
    for (uint32_t i = 0; i < pl.max; i++) {
        uint64_t b = pl.base + i;
        struct batch d;
        size_t n = 0;
        int want = 0;

        if (!pl.script) {
            if (t_rand(&rng) % 30 == 0) {
                if ((rc = armdb_sync(db)) != 0)
                    child_fail("armdb_sync", b, rc);
                child_send(fd, R_SYNC, 0, b);
            }
            if (t_rand(&rng) % 40 == 0 && (rc = armdb_compact(db)) != 0)
                child_fail("armdb_compact", b, rc);
            if (t_rand(&rng) % 10 == 0) { /* read back: acked batches are visible */
                uint32_t k = (uint32_t)(t_rand(&rng) % NKEYS);
                if ((rc = child_holds(db, k, cur[k])) != 0)
                    child_fail("get differs from the acknowledged batches", cur[k], rc);
            }
        }

        batch_of(b, &d);
        n = batch_ops(&d, cur, ops, &want);
        child_send(fd, R_ANNOUNCE, 0, b);
        rc = armdb_batch(db, ops, n);
        if (rc != want) {
            fprintf(stderr, "crash_batch child: batch %" PRIu64 " returned %d (%s; %s), expected %d (%s)\n",
                    b, rc, armdb_strerror(rc), armdb_errmsg(), want, armdb_strerror(want));
            _exit(3);
        }
        child_send(fd, R_ACK, rc, b);
        if (rc == 0)
            for (uint32_t m = 0; m < d.nw; m++)
                cur[d.key[m]] = d.del[m] ? 0 : b;
        if (pl.script) {
            if ((rc = armdb_sync(db)) != 0)
                child_fail("armdb_sync", b, rc);
            child_send(fd, R_SYNC, 0, b + 1);
        }
    }
    if (pl.compact && (rc = armdb_compact(db)) != 0)
        child_fail("armdb_compact", pl.base + pl.max, rc);
    if (pl.close) {
        if ((rc = armdb_close(db)) != 0)
            child_fail("armdb_close", pl.base + pl.max, rc);
        child_send(fd, R_DONE, 0, 0);
        _exit(0);
    }
    child_send(fd, R_DONE, 0, 0);
    for (;;)
        pause();
}

/* ---- the parent: starting a child, and its reports ---- */

struct round {
    uint64_t base; /* the first batch */
    uint32_t nann; /* batches announced */
    uint32_t nacked;
    uint32_t sync_floor; /* batches [0, sync_floor) made durable by armdb_sync */
    uint32_t max;
    uint32_t mode; /* the sync mode */
    int ready, done;
    int quiet; /* killed QUIET_US after the child stopped writing */
    int32_t rc[BATCH_CAP];
    struct batch d[BATCH_CAP];
};

static const char *g_part = "setup";
static const char *g_open_how = "";
static uint64_t g_round;
static int g_passed, g_is_child;
static pid_t g_child;
static struct round g_rd;
static const char *g_self = "/proc/self/exe";
static const char *g_store_left; /* the current store, left as it is on a failure */

static struct {
    uint64_t rounds, early_kills, acked, failed_checks, inflight_applied, lost_rounds, lost_batches, syncs;
    uint64_t quiet, key_checks, scanned, torn_bytes, files_max, aborted_runs, parent_compactions, removed;
    uint64_t gsn_behind; /* opens that found no entry as new as D or an aborted run */
    uint64_t mode_rounds[3], mode_acked[3];
} g_tot;

static void report(void)
{
    if (g_is_child)
        return;
    if (g_child > 0) {
        kill(g_child, SIGKILL);
        waitpid(g_child, NULL, 0);
    }
    if (!g_passed) {
        if (g_store_left)
            fprintf(stderr, "crash_batch: the store is left in %s\n", g_store_left);
        fprintf(stderr,
                "crash_batch: failed in '%s', round %" PRIu64 "; replay with ARMDB_SEED=%" PRIu64 "\n",
                g_part, g_round, g_seed);
    }
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void take_rec(struct store *st, const struct rec *r)
{
    struct round *rd = &g_rd;
    switch (r->kind) {
    case R_READY:
        CHECK(!rd->ready && rd->nann == 0);
        rd->ready = 1;
        st->created = 1;
        break;
    case R_ANNOUNCE:
        CHECK(rd->ready && !rd->done && rd->nann == rd->nacked && rd->nann < rd->max);
        CHECK(r->b == rd->base + rd->nann);
        batch_of(r->b, &rd->d[rd->nann]);
        rd->nann++;
        break;
    case R_ACK: {
        CHECK(rd->nann == rd->nacked + 1 && r->b == rd->base + rd->nacked);
        const struct batch *d = &rd->d[rd->nacked];
        if (d->check == CK_FAILS) {
            CHECK(r->rc == ARMDB_EXISTS || r->rc == ARMDB_CONFLICT || r->rc == ARMDB_NOTFOUND);
            g_tot.failed_checks++;
        } else {
            CHECK(r->rc == 0);
        }
        rd->rc[rd->nacked++] = r->rc;
        break;
    }
    case R_SYNC:
        CHECK(rd->ready && rd->nann == rd->nacked && r->b == rd->base + rd->nann);
        rd->sync_floor = rd->nann;
        g_tot.syncs++;
        break;
    case R_DONE:
        CHECK(rd->ready && rd->nann == rd->max && rd->nacked == rd->max);
        rd->done = 1;
        break;
    default: CHECK(!"unknown record from the child");
    }
}

/* Bytes read from the pipe, not yet a whole record. */
static uint8_t g_pbuf[4096];
static size_t g_plen;

/* Wait up to timeout_us (-1: until data or EOF) and take the whole records
 * read; *stopped is set once the child is done or stop_acks (0: none) acks
 * have come. Records already read are all taken, even past the stop: they
 * were written before the kill. Returns 0 at EOF, else 1. */
static int pump(struct store *st, int fd, int64_t timeout_us, uint32_t stop_acks, int *stopped)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    struct timespec ts, *tsp = NULL;
    if (timeout_us >= 0) {
        ts.tv_sec = timeout_us / 1000000;
        ts.tv_nsec = (long)(timeout_us % 1000000) * 1000;
        tsp = &ts;
    }
    int n = ppoll(&pfd, 1, tsp, NULL);
    if (n < 0 && errno == EINTR)
        return 1;
    CHECK(n >= 0);
    if (n == 0)
        return 1;
    ssize_t got = read(fd, g_pbuf + g_plen, sizeof g_pbuf - g_plen);
    if (got < 0 && errno == EINTR)
        return 1;
    CHECK(got >= 0);
    if (got == 0) {
        CHECK(g_plen == 0); /* records are written whole */
        return 0;
    }
    g_plen += (size_t)got;
    size_t off = 0;
    while (g_plen - off >= sizeof(struct rec)) {
        struct rec r;
        memcpy(&r, g_pbuf + off, sizeof r);
        off += sizeof r;
        take_rec(st, &r);
        if (stopped && (g_rd.done || (stop_acks && g_rd.nacked >= stop_acks)))
            *stopped = 1;
    }
    memmove(g_pbuf, g_pbuf + off, g_plen - off);
    g_plen -= off;
    return 1;
}

/* Fork, exec this program as a child running plan pl; returns the pipe's
 * read end. g_rd is reset for the round. */
static int start_child(struct store *st, struct plan *pl)
{
    int p[2];
    CHECK(pipe(p) == 0);
    memset(&g_rd, 0, sizeof g_rd);
    g_rd.base = pl->base;
    g_rd.max = pl->max;
    g_rd.mode = pl->sync_mode;
    g_plen = 0;
    pl->seed = g_seed;
    pl->fd = p[1];
    pl->shards = st->shards;
    pl->flags |= st->flags;
    memcpy(pl->model, st->model, sizeof pl->model);
    CHECK(strlen(st->path) < sizeof pl->path);
    snprintf(pl->path, sizeof pl->path, "%s", st->path);
    char *plan_path = t_path(st->tmp, "plan");
    int fd = open(plan_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, pl, sizeof *pl) == (ssize_t)sizeof *pl);
    close(fd);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        execl(g_self, "crash_batch", "--child", plan_path, (char *)NULL);
        fprintf(stderr, "crash_batch: exec %s: %s\n", g_self, strerror(errno));
        _exit(6);
    }
    free(plan_path);
    g_child = pid;
    close(p[1]);
    return p[0];
}

/* Reap the child, killed or (want_exit) ended with status 0. */
static void reap_child(int want_exit)
{
    int status;
    if (!want_exit)
        CHECK(kill(g_child, SIGKILL) == 0);
    CHECK(waitpid(g_child, &status, 0) == g_child);
    g_child = 0;
    if (want_exit ? !WIFEXITED(status) || WEXITSTATUS(status) != 0
                  : !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "crash_batch: child ended with status 0x%x\n", status);
        CHECK(!"the child ended as planned");
    }
}

/* ---- the parent: what the store holds ---- */

struct found {
    int present;
    uint64_t b; /* the batch of its value */
    size_t len;
    unsigned char *val;
};

static struct found g_found[NKEYS];
static unsigned char g_buf[VAL_MAX];

static void found_free(void)
{
    for (uint32_t k = 0; k < NKEYS; k++) {
        free(g_found[k].val);
        g_found[k] = (struct found){0};
    }
}

static void describe_found(uint32_t k)
{
    const struct found *f = &g_found[k];
    if (!f->present)
        fprintf(stderr, "  key %u: absent\n", k);
    else
        fprintf(stderr, "  key %u: the value of batch %" PRIu64 " (%zu bytes)\n", k, f->b, f->len);
}

/* Every key by get, into g_found: each value must be one ever made. */
static void read_keys(armdb *db)
{
    for (uint32_t k = 0; k < NKEYS; k++) {
        unsigned char key[KEY_LEN];
        size_t vl = 0;
        make_key(k, key);
        int rc = armdb_get(db, key, KEY_LEN, g_buf, sizeof g_buf, &vl);
        if (rc == ARMDB_NOTFOUND)
            continue;
        CHECK_OK(rc);
        struct found *f = &g_found[k];
        f->present = 1;
        f->len = vl;
        f->val = malloc(vl ? vl : 1);
        CHECK(f->val);
        memcpy(f->val, g_buf, vl);
        f->b = value_batch(k, g_buf, vl);
        if (!f->b) {
            fprintf(
                stderr,
                "crash_batch: key %u holds %zu bytes that are no value ever written (header: batch %" PRIu64
                ")\n",
                k, vl, vl >= 8 ? t_le64(g_buf) : 0);
            CHECK(f->b != 0);
        }
    }
    g_tot.key_checks += NKEYS;
}

/* A full scan and the count agree with g_found (an ordered store's scan
 * in ascending key order). */
static void check_scan(armdb *db, int ordered)
{
    static uint8_t seen_key[NKEYS];
    unsigned char prev[KEY_LEN];
    uint64_t live = 0, seen = 0;
    armdb_iter *it;
    for (uint32_t k = 0; k < NKEYS; k++)
        live += g_found[k].present;
    memset(seen_key, 0, sizeof seen_key);
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it));
    for (;;) {
        const void *kp, *vp;
        size_t kl, vl;
        int rc = armdb_iter_next(it, &kp, &kl, &vp, &vl);
        if (rc == ARMDB_NOTFOUND)
            break;
        CHECK_OK(rc);
        CHECK(kl == KEY_LEN);
        int idx = key_index(kp);
        CHECK(idx >= 0);
        CHECK(!seen_key[idx]);
        CHECK(!ordered || seen == 0 || memcmp(prev, kp, KEY_LEN) < 0);
        memcpy(prev, kp, KEY_LEN);
        seen_key[idx] = 1;
        if (!g_found[idx].present || vl != g_found[idx].len ||
            (vl && memcmp(vp, g_found[idx].val, vl) != 0)) {
            describe_found((uint32_t)idx);
            fprintf(stderr, "crash_batch: the scan shows key %d with %zu other bytes than its get\n", idx,
                    vl);
            CHECK(!"scan and get agree");
        }
        seen++;
    }
    armdb_iter_close(it);
    if (seen != live || armdb_count(db) != live) {
        fprintf(stderr,
                "crash_batch: gets find %" PRIu64 " keys, the scan %" PRIu64 ", armdb_count %" PRIu64 "\n",
                live, seen, armdb_count(db));
        CHECK(!"scan, count and gets agree");
    }
    g_tot.scanned += seen;
}

/* n of the DURABLE file (aborted runs), 0 if there is none; *d = D. */
static uint32_t durable_runs(const char *store, uint64_t *d)
{
    char *p = t_path(store, "DURABLE");
    uint32_t n = 0;
    *d = 0;
    if (access(p, F_OK) == 0) {
        size_t len;
        uint8_t *buf = t_read_file(p, &len);
        CHECK(len >= 40 && memcmp(buf, "ARMDBDU2", 8) == 0);
        *d = t_le64(buf + 8);
        n = t_le32(buf + 16);
        CHECK(len == 40 + 16ull * n);
        free(buf);
    }
    free(p);
    return n;
}

/* DURABLE's D and aborted runs, for a failure's report. */
static void describe_durable(const char *store)
{
    char *p = t_path(store, "DURABLE");
    if (access(p, F_OK) == 0) {
        size_t len;
        uint8_t *buf = t_read_file(p, &len);
        uint32_t n = len >= 40 ? t_le32(buf + 16) : 0;
        fprintf(stderr, "  DURABLE: D = %" PRIu64 ", %u aborted runs", len >= 16 ? t_le64(buf + 8) : 0, n);
        for (uint32_t i = 0; i < n && 48 + 16 * i <= len && i < 16; i++)
            fprintf(stderr, " [%" PRIu64 ", %" PRIu64 "]", t_le64(buf + 32 + 16 * i),
                    t_le64(buf + 40 + 16 * i));
        fprintf(stderr, "\n");
        free(buf);
    } else {
        fprintf(stderr, "  no DURABLE file\n");
    }
    free(p);
}

/* At the last open_check: D and the last GSN of the aborted runs in
 * DURABLE before the open, and the store's highest GSN found by the open. */
static uint64_t g_open_d, g_open_runs_top, g_open_gsn;

static armdb *open_check(const struct store *st, int writer)
{
    armdb_options o;
    armdb_stat s;
    armdb *db = NULL;
    g_open_d = g_open_runs_top = 0;
    char *dp = t_path(st->path, "DURABLE");
    if (access(dp, F_OK) == 0) {
        size_t len;
        uint8_t *buf = t_read_file(dp, &len);
        CHECK(len >= 32);
        g_open_d = t_le64(buf + 8);
        for (uint32_t i = 0; i < t_le32(buf + 16) && 40 + 16 * i <= len; i++)
            if (t_le64(buf + 32 + 16 * i) > g_open_runs_top)
                g_open_runs_top = t_le64(buf + 32 + 16 * i);
        free(buf);
    }
    free(dp);
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = st->shards;
    o.max_file_size = MAX_FILE;
    o.sync_mode = ARMDB_SYNC_NONE;
    o.flags = writer ? ARMDB_NO_AUTO_COMPACT : ARMDB_RDONLY;
    t_key_options(&o);
    int rc = armdb_open(st->path, &o, &db);
    if (rc == -ENOENT && !st->created)
        return NULL;
    CHECK_OK(rc);
    CHECK_OK(armdb_stats(db, &s));
    CHECK(s.shards == st->shards && s.key_len == KEY_LEN);
    if (s.corrupt_entries != 0) {
        fprintf(stderr, "crash_batch: %" PRIu64 " entries counted corrupt after a kill -9\n",
                s.corrupt_entries);
        CHECK(s.corrupt_entries == 0);
    }
    g_tot.torn_bytes += s.torn_bytes;
    g_open_gsn = s.gsn;
    if (s.gsn < g_open_d || s.gsn < g_open_runs_top)
        g_tot.gsn_behind++;
    if (s.files > g_tot.files_max)
        g_tot.files_max = s.files;
    return db;
}

/* ---- the parent: atomicity and durability of a round ---- */

static void describe_round(const struct store *st)
{
    const struct round *rd = &g_rd;
    fprintf(stderr,
            "crash_batch: round %" PRIu64 ", %u shards, sync %s: batches %" PRIu64
            "..: %u announced, %u acked, sync floor %u%s\n",
            g_round, st->shards, mode_name(rd->mode), rd->base, rd->nann, rd->nacked, rd->sync_floor,
            rd->quiet ? ", killed after a quiet second" : "");
    fprintf(stderr,
            "  reopened %s; before it, DURABLE had D = %" PRIu64 ", aborted runs up to %" PRIu64
            "; the newest entry it found: GSN %" PRIu64 "\n",
            g_open_how, g_open_d, g_open_runs_top, g_open_gsn);
}

static void describe_batch(const struct store *st, uint32_t i, const uint8_t *in_s)
{
    const struct round *rd = &g_rd;
    const struct batch *d = &rd->d[i];
    fprintf(stderr, "  batch %" PRIu64 " (%s%s%s):", d->b,
            i < rd->nacked ? (rd->rc[i] ? "acked, check failed" : "acked") : "in flight",
            in_s ? (in_s[i] ? ", in S" : ", not in S") : "",
            d->check == CK_FAILS   ? ", a failing check"
            : d->check == CK_HOLDS ? ", a check"
                                   : "");
    for (uint32_t m = 0; m < d->nw; m++)
        fprintf(stderr, " %s %u", d->del[m] ? "del" : "put", d->key[m]);
    fprintf(stderr, "\n");
    for (uint32_t m = 0; m < d->nw; m++) {
        uint32_t k = d->key[m];
        fprintf(stderr, "    key %u before the round: %s%" PRIu64 "; now ", k,
                st->model[k] ? "batch " : "absent ", st->model[k]);
        if (g_found[k].present)
            fprintf(stderr, "the value of batch %" PRIu64 "\n", g_found[k].b);
        else
            fprintf(stderr, "absent\n");
    }
}

/* The newest batch of S (in_s) that writes key k, or -1. */
static int newest_writer(uint32_t k, const uint8_t *in_s)
{
    for (uint32_t i = g_rd.nann; i-- > 0;)
        if (in_s[i] && batch_writes(&g_rd.d[i], k, NULL))
            return (int)i;
    return -1;
}

static void check_round(struct store *st)
{
    struct round *rd = &g_rd;
    static uint8_t in_s[BATCH_CAP];
    uint32_t n = rd->nann, m = 0;

    /* 1. Every value: the model's, or a put of a batch announced this round
     * whose check did not fail. */
    for (uint32_t k = 0; k < NKEYS; k++) {
        const struct found *f = &g_found[k];
        if (!f->present || f->b == st->model[k])
            continue;
        if (f->b >= rd->base && f->b < rd->base + n && rd->d[f->b - rd->base].check != CK_FAILS)
            continue;
        describe_round(st);
        describe_found(k);
        if (f->b >= rd->base && f->b < rd->base + n) {
            describe_batch(st, (uint32_t)(f->b - rd->base), NULL);
            fprintf(stderr, "crash_batch: key %u holds a value of a batch whose check failed\n", k);
        } else {
            fprintf(stderr,
                    "crash_batch: key %u holds a value of batch %" PRIu64
                    ", neither the one it held before the round (%" PRIu64 ") nor announced this round\n",
                    k, f->b, st->model[k]);
        }
        describe_durable(st->path);
        CHECK(!"every value is the model's or an announced batch's");
    }

    /* 2. The largest S that may explain the store: not the failed batches,
     * not a batch a key shows an older value than (it was not applied)... */
    for (uint32_t i = 0; i < n; i++) {
        const struct batch *d = &rd->d[i];
        in_s[i] = d->check != CK_FAILS;
        for (m = 0; m < d->nw && in_s[i]; m++) {
            const struct found *f = &g_found[d->key[m]];
            if (f->present && f->b < d->b)
                in_s[i] = 0;
        }
    }
    /* ... nor the newest put of a key found absent, repeatedly. */
    for (int changed = 1; changed;) {
        changed = 0;
        for (uint32_t k = 0; k < NKEYS; k++) {
            if (g_found[k].present)
                continue;
            int i = newest_writer(k, in_s);
            if (i >= 0 && batch_writes(&rd->d[i], k, &m) && !rd->d[i].del[m]) {
                in_s[i] = 0;
                changed = 1;
            }
        }
    }
    /* The store must be exactly what S gives. */
    for (uint32_t k = 0; k < NKEYS; k++) {
        int i = newest_writer(k, in_s);
        uint64_t want = st->model[k];
        if (i >= 0) {
            batch_writes(&rd->d[i], k, &m);
            want = rd->d[i].del[m] ? 0 : rd->d[i].b;
        }
        uint64_t got = g_found[k].present ? g_found[k].b : 0;
        if (got == want)
            continue;
        describe_round(st);
        fprintf(stderr, "crash_batch: no set of whole batches gives key %u %s", k,
                got ? "the value of batch " : "absent");
        if (got)
            fprintf(stderr, "%" PRIu64, got);
        fprintf(stderr, " (the largest candidate gives %s%" PRIu64 "); the batches that write it:\n",
                want ? "batch " : "absent ", want);
        uint32_t shown = 0;
        for (uint32_t j = 0; j < n; j++)
            if (batch_writes(&rd->d[j], k, NULL) && shown++ < 8)
                describe_batch(st, j, in_s);
        fprintf(stderr, "crash_batch: a batch is torn (some of its writes visible, others not), or a key "
                        "lost or regained a value on its own\n");
        describe_durable(st->path);
        CHECK(!"every batch is applied whole or not at all");
    }

    /* 3. What must have survived. */
    uint32_t required = rd->sync_floor;
    if (rd->mode == ARMDB_SYNC_ALWAYS || rd->quiet)
        required = rd->nacked > required ? rd->nacked : required;
    uint32_t lost = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (rd->d[i].check == CK_FAILS || in_s[i])
            continue;
        if (i < required) {
            describe_round(st);
            describe_batch(st, i, in_s);
            fprintf(stderr,
                    "crash_batch: batch %" PRIu64
                    " was acknowledged as durable (%s) and is not in the store\n",
                    rd->d[i].b,
                    i < rd->sync_floor ? "armdb_sync returned after it"
                    : rd->quiet        ? "acked, then a quiet second in mode interval"
                                       : "acked in sync mode always");
            describe_durable(st->path);
            CHECK(!"durable batches survive");
        }
        if (i < rd->nacked)
            lost++;
        g_tot.removed++;
    }
    if (lost) {
        g_tot.lost_rounds++;
        g_tot.lost_batches += lost;
    }
    if (rd->nann > rd->nacked && rd->d[rd->nacked].check != CK_FAILS && in_s[rd->nacked])
        g_tot.inflight_applied++;

    for (uint32_t k = 0; k < NKEYS; k++)
        st->model[k] = g_found[k].present ? g_found[k].b : 0;
}

static void check_store(struct store *st, uint64_t *rng)
{
    int writer = t_rand(rng) % 3 == 0, compact = writer && t_rand(rng) % 2;
    uint64_t d;
    g_open_how = compact ? "as a writer that compacted" : writer ? "as a writer" : "read-only";
    armdb *db = open_check(st, writer);
    if (!db) {
        CHECK(g_rd.nann == 0); /* killed before the store was created */
        return;
    }
    read_keys(db);
    check_scan(db, st->flags & ARMDB_ORDERED);
    if (compact) {
        /* Compaction of the recovered store: nothing changes. */
        static struct found before[NKEYS];
        memcpy(before, g_found, sizeof before);
        memset(g_found, 0, sizeof g_found);
        CHECK_OK(armdb_compact(db));
        read_keys(db);
        for (uint32_t k = 0; k < NKEYS; k++) {
            if (g_found[k].present != before[k].present || g_found[k].b != before[k].b) {
                describe_round(st);
                fprintf(stderr,
                        "crash_batch: armdb_compact by the parent changed key %u from %s%" PRIu64 " to:\n", k,
                        before[k].present ? "batch " : "absent ", before[k].b);
                describe_found(k);
                CHECK(!"compaction changes no key");
            }
            free(before[k].val);
        }
        check_scan(db, st->flags & ARMDB_ORDERED);
        g_tot.parent_compactions++;
    }
    CHECK_OK(armdb_close(db));
    st->aborted_runs = durable_runs(st->path, &d);
    check_round(st);
    found_free();
}

/* ---- the parent: one kill round ---- */

static void run_round(struct store *st, uint64_t *rng, uint64_t *next_b)
{
    static const uint32_t wbufs[] = {65536, 131072, 1u << 20};
    static struct plan pl;
    uint64_t r = t_rand(rng) % 100;
    memset(&pl, 0, sizeof pl);
    pl.sync_mode = r < 40 ? ARMDB_SYNC_ALWAYS : r < 75 ? ARMDB_SYNC_INTERVAL : ARMDB_SYNC_NONE;
    pl.interval_ms = 1 + (uint32_t)(t_rand(rng) % 10);
    pl.wbuf = wbufs[t_rand(rng) % 3];
    pl.threshold = t_rand(rng) % 2 ? 0.05 : 0;
    pl.rng = t_rand(rng);
    pl.base = *next_b;
    pl.max = BATCH_CAP;
    /* Kill plan: after a number of acks, or a delay from the fork (which
     * often lands in recovery) or from the end of the open; now and then in
     * mode interval, well after the child stopped writing. */
    uint64_t plan = t_rand(rng) % 10;
    int interval = pl.sync_mode == ARMDB_SYNC_INTERVAL;
    uint32_t stop_acks = 0;
    int64_t delay_us = -1;
    int from_fork = 0, stopped = 0, quiet = 0;
    if (interval && t_rand(rng) % 30 == 0) {
        quiet = 1;
        pl.max = 1 + (uint32_t)(t_rand(rng) % 100);
    } else if (plan < 5) {
        static const uint32_t spans[] = {4, 40, BATCH_CAP + 10};
        stop_acks = 1 + (uint32_t)(t_rand(rng) % spans[t_rand(rng) % 3]);
    } else if (plan < 7) {
        from_fork = 1;
        delay_us = (int64_t)(t_rand(rng) % 40000);
    } else {
        delay_us = (int64_t)(t_rand(rng) % (pl.sync_mode == ARMDB_SYNC_ALWAYS ? 40000 : 10000));
    }

    int fd = start_child(st, &pl);
    int64_t start = now_us(), t0 = start;
    int armed = from_fork || delay_us < 0;
    for (;;) {
        int64_t now = now_us(), wait = -1;
        CHECK(now - start < ROUND_LIMIT_US);
        if (!armed && g_rd.ready) {
            armed = 1;
            t0 = now;
        }
        if (armed && delay_us >= 0) {
            wait = t0 + delay_us - now;
            if (wait <= 0)
                break;
        }
        if (wait < 0 || wait > 100000)
            wait = 100000;
        if (!pump(st, fd, wait, stop_acks, &stopped)) {
            reap_child(1);
            CHECK(!"the child was killed, not ended by itself");
        }
        if (stopped || g_rd.done)
            break;
    }
    if (quiet && g_rd.done) {
        /* Every acked batch has seen a barrier since: all must survive. */
        struct timespec ts = {QUIET_US / 1000000, 0};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        g_rd.quiet = 1;
        g_tot.quiet++;
    }
    reap_child(0);
    /* Records written before the kill count: acked is acked. */
    while (pump(st, fd, -1, 0, NULL))
        ;
    close(fd);

    uint32_t mi = pl.sync_mode == ARMDB_SYNC_ALWAYS ? 0 : pl.sync_mode == ARMDB_SYNC_INTERVAL ? 1 : 2;
    g_tot.mode_rounds[mi]++;
    g_tot.mode_acked[mi] += g_rd.nacked;
    if (!g_rd.ready)
        g_tot.early_kills++;
    g_tot.rounds++;
    g_tot.acked += g_rd.nacked;
    check_store(st, rng);
    *next_b = g_rd.base + g_rd.nann;
}

static void store_start(struct store *st, uint32_t shards, uint32_t flags)
{
    st->tmp = t_tmpdir("crash-batch");
    st->path = t_path(st->tmp, "db");
    st->shards = shards;
    st->flags = flags;
    g_store_left = st->path;
    memset(st->model, 0, sizeof st->model);
    st->created = 0;
    st->aborted_runs = 0;
}

static void store_end(struct store *st)
{
    g_store_left = NULL;
    g_tot.aborted_runs += st->aborted_runs;
    t_rmtree(st->tmp);
    free(st->path);
    free(st->tmp);
    st->tmp = st->path = NULL;
}

/* ---- the deterministic part: a batch torn on purpose ---- */

/* Run script batches [first, first + count) in a fresh child, syncing after
 * each; then close cleanly (closed) or be killed. */
static void run_script(struct store *st, uint32_t first, uint32_t count, int closed, int compact)
{
    static struct plan pl;
    memset(&pl, 0, sizeof pl);
    pl.sync_mode = ARMDB_SYNC_NONE;
    pl.wbuf = 1u << 20;
    pl.flags = ARMDB_NO_AUTO_COMPACT;
    pl.base = SCRIPT_BASE + first;
    pl.max = count;
    pl.script = 1;
    pl.close = (uint32_t)closed;
    pl.compact = (uint32_t)compact;
    int fd = start_child(st, &pl);
    int64_t start = now_us();
    while (!g_rd.done) {
        CHECK(now_us() - start < ROUND_LIMIT_US);
        if (!pump(st, fd, 100000, 0, NULL))
            break;
    }
    CHECK(g_rd.done && g_rd.sync_floor == count);
    reap_child(closed);
    while (pump(st, fd, -1, 0, NULL))
        ;
    close(fd);
    for (uint32_t i = 0; i < count; i++) {
        const struct batch *d = &g_rd.d[i];
        for (uint32_t m = 0; m < d->nw; m++)
            st->model[d->key[m]] = d->del[m] ? 0 : d->b;
    }
}

/* The store holds exactly st->model, opened read-only or as a writer. */
static void expect_model(const struct store *st, int writer, int compact, const char *when)
{
    armdb *db = open_check(st, writer);
    CHECK(db != NULL);
    read_keys(db);
    for (uint32_t k = 0; k < NKEYS; k++) {
        uint64_t got = g_found[k].present ? g_found[k].b : 0;
        if (got != st->model[k]) {
            fprintf(stderr, "crash_batch: %s, %s: key %u holds %s%" PRIu64 ", expected %s%" PRIu64 "\n",
                    g_part, when, k, got ? "batch " : "absent ", got & ~SCRIPT_BASE,
                    st->model[k] ? "batch " : "absent ", st->model[k] & ~SCRIPT_BASE);
            for (uint32_t j = 0; j < NKEYS; j++)
                if (g_found[j].present || st->model[j])
                    fprintf(stderr, "  key %u: %s%" PRIu64 " (expected %" PRIu64 ")\n", j,
                            g_found[j].present ? "script batch " : "absent ", g_found[j].b & ~SCRIPT_BASE,
                            st->model[j] & ~SCRIPT_BASE);
            describe_durable(st->path);
            CHECK(!"the store holds the whole batches only");
        }
    }
    check_scan(db, st->flags & ARMDB_ORDERED);
    if (compact) {
        CHECK_OK(armdb_compact(db));
        found_free();
        read_keys(db);
        for (uint32_t k = 0; k < NKEYS; k++)
            CHECK((g_found[k].present ? g_found[k].b : 0) == st->model[k]);
        check_scan(db, st->flags & ARMDB_ORDERED);
    }
    CHECK_OK(armdb_close(db));
    found_free();
}

/* Where the value of member m of script batch sb is on disk: the one data
 * file that holds it, and the value's offset in it. */
static char *find_member(const struct store *st, uint32_t sb, uint32_t m, uint32_t *shard, size_t *off,
                         size_t *vlen)
{
    static unsigned char want[VAL_MAX];
    struct batch d;
    char *hit = NULL;
    batch_of(SCRIPT_BASE + sb, &d);
    *vlen = make_value(&d, m, want);
    for (uint32_t s = 0; s < st->shards; s++) {
        char sub[16];
        snprintf(sub, sizeof sub, "%03x", s);
        char *dir = t_path(st->path, sub);
        DIR *dh = opendir(dir);
        struct dirent *e;
        CHECK(dh != NULL);
        while ((e = readdir(dh))) {
            if (t_file_id(e->d_name, "data") < 0)
                continue;
            char *p = t_path(dir, e->d_name);
            size_t len;
            uint8_t *buf = t_read_file(p, &len);
            uint8_t *at = memmem(buf, len, want, *vlen);
            if (at) {
                CHECK(!hit); /* one copy: no compaction ran */
                CHECK(memmem(at + 1, len - (size_t)(at - buf) - 1, want, *vlen) == NULL);
                hit = strdup(p);
                *shard = s;
                *off = (size_t)(at - buf);
            }
            free(buf);
            free(p);
        }
        closedir(dh);
        free(dir);
    }
    CHECK(hit != NULL);
    return hit;
}

/* Cut the data file holding member `tear` of T inside its value: that
 * member and whatever the shard wrote after it (later members of T) are a
 * torn tail. */
static void tear_member(const struct store *st, uint32_t tear)
{
    uint32_t shard = 0, shards_seen = 0, mask = 0;
    size_t off = 0, vlen = 0;
    for (uint32_t m = 0; m < g_script[S_T].n; m++) {
        uint32_t s;
        size_t o, l;
        free(find_member(st, S_T, m, &s, &o, &l));
        if (!(mask & (1u << s)))
            shards_seen++;
        mask |= 1u << s;
    }
    CHECK(shards_seen >= 2); /* the batch spans shards */
    char *p = find_member(st, S_T, tear, &shard, &off, &vlen);
    CHECK(truncate(p, (off_t)(off + vlen / 2)) == 0);
    free(p);
}

/* The shard key `key` goes to in a store of `shards` shards: a probe
 * store holding only that key has data in that shard alone. */
static uint32_t probe_shard(const struct store *st, uint32_t key)
{
    char *dir = t_path(st->tmp, "probe");
    unsigned char k[KEY_LEN];
    uint32_t found = UINT32_MAX;
    t_rmtree(dir);
    armdb *db = t_open_store(dir, KEY_LEN, 0, st->shards, 0, MAX_FILE, ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT);
    make_key(key, k);
    CHECK_OK(armdb_put(db, k, KEY_LEN, "probe", 5));
    CHECK_OK(armdb_close(db));
    for (uint32_t s = 0; s < st->shards; s++) {
        char sub[16];
        snprintf(sub, sizeof sub, "%03x", s);
        char *sdir = t_path(dir, sub);
        DIR *dh = opendir(sdir);
        struct dirent *e;
        uint64_t bytes = 0;
        CHECK(dh != NULL);
        while ((e = readdir(dh))) {
            struct stat sb;
            if (t_file_id(e->d_name, "data") < 0)
                continue;
            char *p = t_path(sdir, e->d_name);
            CHECK(stat(p, &sb) == 0);
            bytes += (uint64_t)sb.st_size;
            free(p);
        }
        closedir(dh);
        free(sdir);
        if (bytes) {
            CHECK(found == UINT32_MAX);
            found = s;
        }
    }
    CHECK(found != UINT32_MAX);
    t_rmtree(dir);
    free(dir);
    return found;
}

/* tear_member for encrypted stores: cut the data file holding member
 * `tear` of T at the start of the sealed page that holds the member's
 * entry (where a torn write of sealed pages ends), so that member and
 * whatever its shard wrote after it are a torn tail. */
static void tear_member_sealed(const struct store *st, uint32_t tear)
{
    static unsigned char val[VAL_MAX];
    uint32_t shard[MAX_WRITES], shards_seen = 0, mask = 0, id = 0;
    struct batch d;
    batch_of(SCRIPT_BASE + S_T, &d);
    for (uint32_t m = 0; m < d.nw; m++) {
        shard[m] = probe_shard(st, d.key[m]);
        if (!(mask & (1u << shard[m])))
            shards_seen++;
        mask |= 1u << shard[m];
    }
    CHECK(shards_seen >= 2); /* the batch spans shards */
    /* T's writer opened a fresh data file in each shard and was killed:
     * the shard's newest file, without a hint. */
    char sub[16];
    snprintf(sub, sizeof sub, "%03x", shard[tear]);
    char *sdir = t_path(st->path, sub);
    DIR *dh = opendir(sdir);
    struct dirent *e;
    CHECK(dh != NULL);
    while ((e = readdir(dh))) {
        long i = t_file_id(e->d_name, "data");
        if (i > (long)id)
            id = (uint32_t)i;
    }
    closedir(dh);
    free(sdir);
    CHECK(id > 0);
    char *hint = t_file_path(st->path, shard[tear], id, "hint");
    CHECK(access(hint, F_OK) != 0);
    free(hint);
    char *p = t_file_path(st->path, shard[tear], id, "data");
    struct stat sb;
    CHECK(stat(p, &sb) == 0);
    /* It holds T's members of the shard, in member (GSN) order, laid out
     * as src/entry.c says, and the barrier's padding to a whole page. */
    uint64_t pos = 0, at = UINT64_MAX;
    for (uint32_t m = 0; m < d.nw; m++) {
        if (shard[m] != shard[tear])
            continue;
        if (4096 - pos % 4096 < 16)
            pos = (pos / 4096 + 1) * 4096;
        if (m == tear)
            at = pos;
        pos += (16 + KEY_LEN + make_value(&d, m, val) + 7) & ~(uint64_t)7;
    }
    CHECK(at != UINT64_MAX);
    CHECK((uint64_t)sb.st_size == (pos + 4095) / 4096 * 4096);
    uint64_t cut = at / 4096 * 4096;
    CHECK(truncate(p, (off_t)cut) == 0);
    printf("crash_batch: %s (encrypted store): %03x/%08u.data cut from %" PRIu64 " to %" PRIu64
           " bytes, the start of the page that holds the member's entry (at %" PRIu64 ")\n",
           g_part, shard[tear], id, (uint64_t)sb.st_size, cut, at);
    free(p);
}

enum script_kind {
    SC_TORN,       /* A, then T over half of A's keys, each synced; killed */
    SC_TOMBSTONES, /* first every key deleted and compacted away */
    SC_FOREIGN_D,  /* first A compacted by a process that wrote another store */
};

/* Advance this process's GSNs far past the store's: write another store. */
static void write_other_store(const struct store *st)
{
    char *dir = t_path(st->tmp, "other");
    armdb *db = t_open_store(dir, KEY_LEN, 0, 2, 0, MAX_FILE, ARMDB_CREATE);
    unsigned char k[KEY_LEN] = {0};
    for (uint32_t i = 0; i < 1000; i++) {
        memcpy(k, &i, sizeof i);
        CHECK_OK(armdb_put(db, k, KEY_LEN, "x", 1));
    }
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(dir);
}

/*
 * A batch torn on purpose: T (keys 3..8, over 4 shards) is written and
 * synced, the child killed, and the data file holding member `tear` of T
 * cut inside its value. Every open must then find no trace of T; a writer
 * records it as torn, a compaction (in a process of its own) drops its
 * members, and batches a fresh process writes later over the same keys (N
 * closed, N2 killed) must be whole.
 */
static void script_case(const char *name, enum script_kind kind, uint32_t tear)
{
    struct store st;
    uint64_t d;
    g_part = name;
    store_start(&st, 4, 0);
    if (kind == SC_TOMBSTONES) {
        /* Every key deleted and the tombstones compacted away: the store
         * holds no entry, while D is past every GSN it ever took. */
        run_script(&st, S_A, 1, 1, 0);
        run_script(&st, S_X, 1, 1, 1);
        run_script(&st, 0, 0, 1, 1);
        expect_model(&st, 0, 0, "after deleting every key and compacting");
        (void)durable_runs(st.path, &d);
        CHECK(d > 0);
    } else {
        run_script(&st, S_A, 1, 0, 0);
    }
    if (kind == SC_FOREIGN_D) {
        /* A's members are above D (its writer was killed); a compaction by
         * this process, whose GSNs went on in another store, moves D up. */
        write_other_store(&st);
        expect_model(&st, 1, 1, "A compacted by a process that wrote another store");
    }
    uint64_t before_t[NKEYS];
    memcpy(before_t, st.model, sizeof before_t);
    run_script(&st, S_T, 1, 0, 0);
    expect_model(&st, 0, 0, "T intact, read-only");
    if (g_enc)
        tear_member_sealed(&st, tear); /* no plaintext to find the value in */
    else
        tear_member(&st, tear);
    memcpy(st.model, before_t, sizeof before_t);
    expect_model(&st, 0, 0, "T torn, read-only");
    expect_model(&st, 1, 0, "T torn, first writer");
    CHECK(durable_runs(st.path, &d) >= 1); /* the writer recorded T as torn */
    run_script(&st, 0, 0, 1, 1);
    expect_model(&st, 0, 0, "T torn, then compacted");
    /* A fresh process writes N over the same keys, and closes: whole. */
    run_script(&st, S_N, 1, 1, 0);
    expect_model(&st, 0, 0, "N written after T was found torn, closed");
    /* And once more, killed after armdb_sync: whole. */
    run_script(&st, S_N2, 1, 0, 0);
    expect_model(&st, 0, 0, "N2 written after N, killed");
    expect_model(&st, 1, 0, "N2 written after N, killed, writer");
    store_end(&st);
}

/*
 * A batch member above D is copied by compaction even when dead (its
 * batch's check at open needs it). If its key was deleted in the same file,
 * the tombstone must be copied too, or the key comes back at the next open.
 * D stays below the member when the pass's checkpoint fails to write
 * DURABLE (here, by an injected fault); a background pass gets there by
 * timing, compacting files sealed after its checkpoint.
 */
static void pinned_member_case(void)
{
    struct store st;
    struct batch d;
    armdb_op ops[MAX_WRITES + 1];
    int want;
    g_part = "a dead batch member kept by compaction, its key deleted in the same file";
    store_start(&st, 1, 0);
    armdb *db = t_open_store(st.path, KEY_LEN, 0, 1, 0, MAX_FILE, ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT);
    st.created = 1;
    static const uint32_t steps[] = {S_A, S_D};
    for (int i = 0; i < 2; i++) {
        batch_of(SCRIPT_BASE + steps[i], &d);
        size_t n = batch_ops(&d, st.model, ops, &want);
        CHECK(want == 0);
        CHECK_OK(armdb_batch(db, ops, n));
        for (uint32_t m = 0; m < d.nw; m++)
            st.model[d.key[m]] = d.del[m] ? 0 : d.b;
    }
    armdb_fault_arm(FAULT_RENAME, 1, EIO, 0); /* the checkpoint's DURABLE */
    CHECK_OK(armdb_compact(db));
    CHECK(armdb_fault_fired() == 1);
    armdb_fault_reset();
    read_keys(db);
    for (uint32_t k = 0; k < NKEYS; k++)
        CHECK((g_found[k].present ? g_found[k].b : 0) == st.model[k]);
    found_free();
    CHECK_OK(armdb_close(db));
    expect_model(&st, 0, 0, "reopened after the compaction");
    store_end(&st);
}

static void run_scripts(void)
{
    script_case("torn batch, its first member cut", SC_TORN, 0);
    script_case("torn batch, a middle member cut", SC_TORN, 2);
    script_case("torn batch, its last member cut", SC_TORN, 5);
    script_case("torn batch after every tombstone was compacted away", SC_TOMBSTONES, 5);
    script_case("torn batch after another store's GSNs moved D", SC_FOREIGN_D, 5);
    pinned_member_case();
    printf("crash_batch: 5 batches torn on purpose: none applied, later batches whole; a deleted key stays "
           "deleted when compaction keeps its dead batch member\n");
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0) {
        g_is_child = 1;
        return child_main(argv[2]);
    }
    g_seed = t_env_u64("ARMDB_SEED", 5381);
    g_enc = t_env_u64("ARMDB_TEST_ENCRYPT", 0) != 0;
    uint64_t rounds = t_env_u64("ARMDB_CRASH_ROUNDS", DEFAULT_ROUNDS);
    uint64_t rng = g_seed, next_b = 1;
    static const uint32_t shard_cycle[] = {4, 8, 4, 1};
    struct store st;
    int64_t t0 = now_us();
    atexit(report);
    signal(SIGPIPE, SIG_IGN);
    if (access(g_self, X_OK) != 0) {
        fprintf(stderr, "crash_batch: %s is not available: skipped\n", g_self);
        return T_SKIP;
    }

    const char *part = getenv("ARMDB_CRASH_PART");
    if (!part || strcmp(part, "kill") != 0)
        run_scripts();
    if (part && strcmp(part, "torn") == 0)
        rounds = 0;

    g_part = "kill rounds";
    store_start(&st, shard_cycle[0], 0);
    for (uint64_t r = 0, nstore = 0; r < rounds; r++) {
        if (r && r % STORE_ROUNDS == 0) {
            store_end(&st);
            nstore++;
            store_start(&st, shard_cycle[nstore % 4], nstore % 3 == 2 ? ARMDB_ORDERED : 0);
        }
        g_round++;
        run_round(&st, &rng, &next_b);
    }
    store_end(&st);

    if (rounds)
        printf("crash_batch: %" PRIu64 " kill -9 rounds (%" PRIu64
               " before the open returned; sync always %" PRIu64 ", interval %" PRIu64 ", none %" PRIu64
               "), %" PRIu64 " batches acked (%" PRIu64 ", %" PRIu64 ", %" PRIu64 "), %" PRIu64
               " of them refused by a check; %" PRIu64 " key checks, %" PRIu64 " keys scanned, %" PRIu64
               " syncs, %" PRIu64 " quiet kills, %" PRIu64
               " parent compactions; in-flight batch found applied %" PRIu64
               " times; acked batches lost (interval, none) in %" PRIu64 " rounds (%" PRIu64
               " batches); %" PRIu64 " announced batches not applied; %" PRIu64
               " torn batches recorded in DURABLE; %" PRIu64
               " opens found no entry as new as D or an aborted run; %" PRIu64
               " torn bytes at open; up to %" PRIu64 " files; %.1f s, seed %" PRIu64 "\n",
               g_tot.rounds, g_tot.early_kills, g_tot.mode_rounds[0], g_tot.mode_rounds[1],
               g_tot.mode_rounds[2], g_tot.acked, g_tot.mode_acked[0], g_tot.mode_acked[1],
               g_tot.mode_acked[2], g_tot.failed_checks, g_tot.key_checks, g_tot.scanned, g_tot.syncs,
               g_tot.quiet, g_tot.parent_compactions, g_tot.inflight_applied, g_tot.lost_rounds,
               g_tot.lost_batches, g_tot.removed, g_tot.aborted_runs, g_tot.gsn_behind, g_tot.torn_bytes,
               g_tot.files_max, (double)(now_us() - t0) / 1e6, g_seed);
    g_passed = 1;
    return 0;
}
