/*
 * crash_kill.c - kill -9 at a random moment: the store recovers exactly what
 * the durability contract promises, and nothing it never held.
 *
 * Each round forks a child that opens the store, checks that it holds what
 * the parent found there after the previous round, then writes (puts,
 * overwrites, compare-and-sets and deletes over several shards, values of
 * 0 .. 50000 bytes whose bytes derive from (key, sequence number), files
 * rotated at 64 KiB, write buffers of 64 KiB .. 1 MiB) and reports over a
 * pipe, in 16-byte records, each operation before it makes it and again
 * after it returned 0. The parent SIGKILLs the child after a random number
 * of acknowledgements, or after a random delay (from the fork, so that kills
 * land in recovery too, or from the end of the open), drains the pipe (acks
 * written before the kill count), reopens the store (read-only, or as a
 * writer that cuts torn tails and writes hints) and checks every key, a
 * full scan and the count against its model:
 *
 * - sync always, 4 shards: every acknowledged operation is there with its
 *   exact value (a delete as an absent key); the one operation announced but
 *   not acknowledged (the child may die between its return and its ack) may
 *   or may not be; nothing else is.
 * - sync interval (2-10 ms), 1 shard: the store equals the model after the
 *   first P operations of the round, for some P (what survives is a prefix
 *   of the writes, with no holes), and P covers every operation before the
 *   last completed armdb_sync().
 * - sync interval, 4 shards (the shard of a key is the engine's business):
 *   each key holds one of the states it went through this round, no older
 *   than its state at the last completed armdb_sync().
 * - sync interval, now and then: the child stops writing and is killed a
 *   second later, when a background barrier must have made every acked
 *   operation durable.
 *
 * Compaction runs all along: the background thread's (the default
 * threshold, over 64 KiB files) and armdb_compact() now and then, so kills
 * land in every step of it too; none of the checks above changes.
 *
 * No entry is ever counted corrupt: a kill leaves at most a torn tail. The
 * model then becomes what was found, and the next round continues on the
 * same store, so recovery of recovered stores, many files and their hints
 * are exercised; a fresh store is started every STORE_ROUNDS rounds.
 *
 * Replay: ARMDB_SEED=<seed printed on failure> gives the same operations and
 * kill plans (where a kill lands still depends on timing). ARMDB_CRASH_ROUNDS
 * sets the number of rounds: half sync always, a quarter each interval case.
 */
#include "test.h"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define KEY_LEN 24
#define NKEYS 160
#define HOT_KEYS 12
#define VAL_MAX 50000
#define OPS_CAP 400      /* a child that gets this far waits to be killed */
#define QUIET_US 1000000 /* more than enough for an interval barrier to pass */
#define STORE_ROUNDS 30  /* rounds on one store before a fresh one */
#define MAX_FILE 65536
#define ROUND_LIMIT_US (60 * 1000000LL) /* a child this slow is stuck */
#define DEFAULT_ROUNDS 240

/* Records on the pipe, child to parent. */
enum rec_kind {
    R_READY = 1,    /* opened, and the store matched the model */
    R_PUT,          /* about to put key = seq */
    R_CAS,          /* about to cas key from its current value to seq */
    R_DEL,          /* about to delete key */
    R_ACK,          /* the announced operation returned 0 */
    R_ACK_NOTFOUND, /* the announced delete returned ARMDB_NOTFOUND */
    R_SYNC,         /* armdb_sync() returned 0; seq = next operation's */
    R_DONE,         /* all the round's operations made; waiting for the kill */
};

struct rec {
    uint32_t kind;
    uint32_t key;
    uint64_t seq;
};
_Static_assert(sizeof(struct rec) == 16, "a record is one atomic pipe write");
_Static_assert(sizeof(struct rec) <= PIPE_BUF, "a record is one atomic pipe write");

enum check_kind {
    CHECK_ACKED,   /* sync always: acked ops durable, the in-flight one maybe */
    CHECK_PREFIX,  /* one shard, interval: a prefix of the round's ops */
    CHECK_PER_KEY, /* several shards, interval: per key, a state it had */
};

struct phase {
    const char *name;
    uint32_t sync_mode;
    uint32_t shards;
    enum check_kind check;
};

static const struct phase g_phases[] = {
    {"sync always, 4 shards", ARMDB_SYNC_ALWAYS, 4, CHECK_ACKED},
    {"sync interval, 1 shard", ARMDB_SYNC_INTERVAL, 1, CHECK_PREFIX},
    {"sync interval, 4 shards", ARMDB_SYNC_INTERVAL, 4, CHECK_PER_KEY},
};

/* A key's state is the sequence number of the value it holds, 0 = absent. */
struct store {
    char *tmp, *path;
    const struct phase *ph;
    uint64_t model[NKEYS];
    uint64_t next_seq;
    int created; /* a child has opened it: the meta file exists */
};

struct op {
    uint32_t kind;
    uint32_t key;
    uint64_t seq;
    int acked;
};

struct round {
    uint64_t base; /* seq of the round's first operation */
    uint32_t nops; /* operations announced */
    uint32_t nacked;
    uint32_t sync_floor; /* operations [0, sync_floor) made durable by armdb_sync */
    uint32_t max_ops;    /* the child stops after these and waits */
    int ready, done;
    int quiet; /* killed QUIET_US after the child stopped writing */
    struct op ops[OPS_CAP];
};

/* What the parent found in the store after a kill. */
struct found {
    int present;
    size_t len;
    unsigned char *val;
};

static uint64_t g_seed;
static const char *g_part = "setup";
static uint64_t g_round; /* rounds started, over all phases */
static int g_passed;
static pid_t g_child;
static struct round g_rd;
static struct found g_found[NKEYS];
static unsigned char g_want[VAL_MAX], g_buf[VAL_MAX];

static struct {
    uint64_t rounds, acked, key_checks, scanned, early_kills, inflight_applied;
    uint64_t lossy_rounds, lost_ops, keys_behind, syncs, torn_bytes, files_max, quiet_rounds;
} g_tot;

static void report(void)
{
    if (g_child > 0) {
        kill(g_child, SIGKILL);
        waitpid(g_child, NULL, 0);
    }
    if (!g_passed)
        fprintf(stderr, "crash_kill: failed in '%s', round %" PRIu64 "; replay with ARMDB_SEED=%" PRIu64 "\n",
                g_part, g_round, g_seed);
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Key idx: its number, then bytes that depend on it only (so a scan can
 * tell a key of ours from garbage). */
static void make_key(uint32_t idx, unsigned char *k)
{
    uint64_t s = idx * 0x2545f4914f6cdd1dull + 7;
    k[0] = (unsigned char)idx;
    k[1] = (unsigned char)(idx >> 8);
    k[2] = (unsigned char)(idx >> 16);
    k[3] = (unsigned char)(idx >> 24);
    for (int i = 4; i < KEY_LEN; i++)
        k[i] = (unsigned char)t_rand(&s);
}

/* Index of key k, or -1 if it is none of ours. */
static int key_index(const unsigned char *k)
{
    unsigned char want[KEY_LEN];
    uint32_t idx = t_le32(k);
    if (idx >= NKEYS)
        return -1;
    make_key(idx, want);
    return memcmp(k, want, KEY_LEN) == 0 ? (int)idx : -1;
}

/*
 * The value of key at version seq: its length and bytes derive from both, so
 * another version's or another key's value never passes for it. Mostly
 * short, some spanning pages, a few near the largest a 64 KiB write buffer
 * takes; the first 12 bytes (as many as fit) are the key and seq.
 */
static size_t make_value(uint32_t key, uint64_t seq, unsigned char *out)
{
    uint64_t s = g_seed ^ (seq * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)key << 40);
    uint64_t r = t_rand(&s) % 1000;
    size_t len;
    if (r < 40)
        len = 0;
    else if (r < 550)
        len = 1 + (size_t)(t_rand(&s) % 100);
    else if (r < 955)
        len = 100 + (size_t)(t_rand(&s) % 1400);
    else if (r < 995)
        len = 1500 + (size_t)(t_rand(&s) % 18500);
    else
        len = 20000 + (size_t)(t_rand(&s) % (VAL_MAX - 20000 + 1));
    uint64_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (i < 4) {
            out[i] = (unsigned char)(key >> (8 * i));
        } else if (i < 12) {
            out[i] = (unsigned char)(seq >> (8 * (i - 4)));
        } else {
            if ((i - 12) % 8 == 0)
                w = t_rand(&s);
            out[i] = (unsigned char)(w >> (8 * ((i - 12) % 8)));
        }
    }
    return len;
}

static uint32_t pick_key(uint64_t *rng)
{
    if (t_rand(rng) % 2)
        return (uint32_t)(t_rand(rng) % HOT_KEYS);
    return (uint32_t)(t_rand(rng) % NKEYS);
}

static void store_options(const struct store *st, armdb_options *o)
{
    armdb_options_init(o);
    o->key_len = KEY_LEN;
    o->shards = st->ph->shards;
    o->sync_mode = st->ph->sync_mode;
    o->max_file_size = MAX_FILE;
}

/* ---- the child: write and report, until killed ---- */

/* The child never returns into the test or runs exit handlers. */
static void child_fail(const char *what, uint32_t key, uint64_t seq, int rc)
{
    if (rc == 1)
        fprintf(stderr, "crash_kill child: %s (key %u, seq %" PRIu64 "): wrong value\n", what, key, seq);
    else
        fprintf(stderr, "crash_kill child: %s (key %u, seq %" PRIu64 "): rc %d (%s; %s)\n", what, key, seq,
                rc, armdb_strerror(rc), armdb_errmsg());
    _exit(3);
}

static void child_send(int fd, uint32_t kind, uint32_t key, uint64_t seq)
{
    struct rec r = {kind, key, seq};
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(4);
}

/* 0 if db holds state seq for key (0 = absent), else 1 (or the error). */
static int child_holds(armdb *db, uint32_t key, uint64_t seq)
{
    unsigned char k[KEY_LEN];
    size_t vl = 0, wl;
    make_key(key, k);
    int rc = armdb_get(db, k, KEY_LEN, g_buf, sizeof g_buf, &vl);
    if (seq == 0)
        return rc == ARMDB_NOTFOUND ? 0 : rc ? rc : 1;
    if (rc)
        return rc;
    wl = make_value(key, seq, g_want);
    return vl == wl && memcmp(g_buf, g_want, vl) == 0 ? 0 : 1;
}

/* Inherits the parent's model, which is what the store holds. */
static void child_run(struct store *st, int fd, uint64_t rng, uint32_t wbuf, uint32_t interval_ms,
                      uint32_t max_ops)
{
    armdb_options o;
    armdb *db;
    uint64_t live = 0;
    int rc, syncs = st->ph->sync_mode == ARMDB_SYNC_INTERVAL;

    store_options(st, &o);
    o.flags = ARMDB_CREATE;
    o.write_buffer_size = wbuf;
    o.sync_interval_ms = interval_ms;
    t_key_options(&o);
    if ((rc = armdb_open(st->path, &o, &db)) != 0)
        child_fail("open", 0, 0, rc);
    for (uint32_t k = 0; k < NKEYS; k++) {
        if ((rc = child_holds(db, k, st->model[k])) != 0)
            child_fail("after open, the store differs from what the parent found", k, st->model[k], rc);
        live += st->model[k] != 0;
    }
    if (armdb_count(db) != live) {
        fprintf(stderr,
                "crash_kill child: after open, armdb_count is %" PRIu64 ", the parent found %" PRIu64 "\n",
                armdb_count(db), live);
        _exit(3);
    }
    child_send(fd, R_READY, 0, 0);

    for (uint32_t i = 0; i < max_ops; i++) {
        uint64_t seq = st->next_seq + i;
        uint32_t key = pick_key(&rng);
        uint64_t r = t_rand(&rng) % 100;
        static unsigned char v[VAL_MAX], e[VAL_MAX];
        unsigned char k[KEY_LEN];
        size_t vl, el;

        if (syncs && t_rand(&rng) % 50 == 0) {
            if ((rc = armdb_sync(db)) != 0)
                child_fail("armdb_sync", 0, seq, rc);
            child_send(fd, R_SYNC, 0, seq);
        }
        if (t_rand(&rng) % 40 == 0) { /* compaction, besides the background one */
            if ((rc = armdb_compact(db)) != 0)
                child_fail("armdb_compact", 0, seq, rc);
        }
        if (t_rand(&rng) % 20 == 0) { /* read back one key: writes are visible */
            uint32_t rk = pick_key(&rng);
            if ((rc = child_holds(db, rk, st->model[rk])) != 0)
                child_fail("get differs from the acknowledged writes", rk, st->model[rk], rc);
        }
        make_key(key, k);
        if (r < 60) {
            vl = make_value(key, seq, v);
            child_send(fd, R_PUT, key, seq);
            if ((rc = armdb_put(db, k, KEY_LEN, v, vl)) != 0)
                child_fail("put", key, seq, rc);
            child_send(fd, R_ACK, key, seq);
            st->model[key] = seq;
        } else if (r < 70) {
            vl = make_value(key, seq, v);
            el = st->model[key] ? make_value(key, st->model[key], e) : 0;
            child_send(fd, R_CAS, key, seq);
            rc = armdb_cas(db, k, KEY_LEN, st->model[key] ? e : NULL, el, v, vl);
            if (rc != 0)
                child_fail("cas from the current value", key, seq, rc);
            child_send(fd, R_ACK, key, seq);
            st->model[key] = seq;
        } else {
            child_send(fd, R_DEL, key, seq);
            rc = armdb_delete(db, k, KEY_LEN);
            if (rc != (st->model[key] ? 0 : ARMDB_NOTFOUND))
                child_fail(st->model[key] ? "delete of a live key" : "delete of an absent key", key, seq, rc);
            child_send(fd, rc ? R_ACK_NOTFOUND : R_ACK, key, seq);
            st->model[key] = 0;
        }
    }
    child_send(fd, R_DONE, 0, 0);
    for (;;)
        pause();
}

/* ---- the parent: the round's bookkeeping ---- */

static void take_rec(struct store *st, const struct rec *r)
{
    struct round *rd = &g_rd;
    switch (r->kind) {
    case R_READY:
        CHECK(!rd->ready && rd->nops == 0);
        rd->ready = 1;
        st->created = 1;
        break;
    case R_PUT:
    case R_CAS:
    case R_DEL:
        CHECK(rd->ready && rd->nops == rd->nacked && rd->nops < rd->max_ops);
        CHECK(r->seq == rd->base + rd->nops && r->key < NKEYS);
        rd->ops[rd->nops++] = (struct op){r->kind, r->key, r->seq, 0};
        break;
    case R_ACK:
    case R_ACK_NOTFOUND:
        CHECK(rd->nops == rd->nacked + 1);
        CHECK(r->seq == rd->ops[rd->nacked].seq && r->key == rd->ops[rd->nacked].key);
        CHECK(r->kind == R_ACK || rd->ops[rd->nacked].kind == R_DEL);
        rd->ops[rd->nacked++].acked = 1;
        break;
    case R_SYNC:
        CHECK(rd->ready && rd->nops == rd->nacked && r->seq == rd->base + rd->nops);
        rd->sync_floor = rd->nops;
        g_tot.syncs++;
        break;
    case R_DONE:
        CHECK(rd->ready && rd->nops == rd->max_ops && rd->nacked == rd->max_ops);
        rd->done = 1;
        break;
    default: CHECK(!"unknown record from the child");
    }
}

/* Bytes read from the pipe, not yet a whole record. */
static uint8_t g_pbuf[4096];
static size_t g_plen;

/* Wait up to timeout_us (-1: until data or EOF) and feed the whole records
 * read to take_rec; *stopped is set once the child is done or stop_acks
 * (0: none) acks have come. Records already read are all taken, even past
 * the stop: they were written before the kill. Returns 0 at EOF, else 1. */
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

/* ---- the parent: what the store holds after the kill ---- */

/* Does key hold state seq (0 = absent) in what was found? */
static int found_is(uint32_t key, uint64_t seq)
{
    const struct found *f = &g_found[key];
    if (seq == 0)
        return !f->present;
    if (!f->present)
        return 0;
    size_t wl = make_value(key, seq, g_want);
    return f->len == wl && memcmp(f->val, g_want, wl) == 0;
}

static void describe_found(uint32_t key)
{
    const struct found *f = &g_found[key];
    if (!f->present) {
        fprintf(stderr, "  key %u: absent\n", key);
        return;
    }
    uint64_t seq = 0;
    uint32_t owner = 0;
    for (size_t i = 0; i < 12 && i < f->len; i++) {
        if (i < 4)
            owner |= (uint32_t)f->val[i] << (8 * i);
        else
            seq |= (uint64_t)f->val[i] << (8 * (i - 4));
    }
    int intact = f->len >= 12 && owner < NKEYS && seq > 0 && (f->len == make_value(owner, seq, g_want)) &&
                 memcmp(f->val, g_want, f->len) == 0;
    fprintf(stderr, "  key %u: %zu bytes, %s (header says key %u seq %" PRIu64 ")\n", key, f->len,
            intact ? "an intact value" : "not a value ever written", owner, seq);
}

static const char *kind_name(uint32_t kind)
{
    return kind == R_PUT ? "put" : kind == R_CAS ? "cas" : "delete";
}

static void describe_round(const struct store *st)
{
    fprintf(stderr, "crash_kill: %s, round %" PRIu64 ": %u ops announced, %u acked, sync floor %u%s\n",
            st->ph->name, g_round, g_rd.nops, g_rd.nacked, g_rd.sync_floor,
            g_rd.quiet ? ", killed after a quiet second (every acked op is due)" : "");
}

static void describe_key(const struct store *st, uint32_t key)
{
    const struct round *rd = &g_rd;
    fprintf(stderr, "  key %u before the round: seq %" PRIu64 "\n", key, st->model[key]);
    for (uint32_t i = 0; i < rd->nops; i++)
        if (rd->ops[i].key == key)
            fprintf(stderr, "  op %u: %s seq %" PRIu64 "%s\n", i, kind_name(rd->ops[i].kind), rd->ops[i].seq,
                    rd->ops[i].acked ? " (acked)" : " (in flight)");
    describe_found(key);
}

static uint64_t op_result(const struct op *op) { return op->kind == R_DEL ? 0 : op->seq; }

/*
 * Per key: the state found must be one the key had at or after the last
 * operation on it before `floor` (its state before the round if none), up to
 * the last announced one. The model takes the latest state that matches.
 */
static void check_per_key(struct store *st, uint32_t floor)
{
    static uint64_t cur[NKEYS], pick[NKEYS], acked[NKEYS];
    static int ok[NKEYS];
    uint64_t behind = 0;
    for (uint32_t k = 0; k < NKEYS; k++) {
        cur[k] = acked[k] = pick[k] = st->model[k];
        ok[k] = found_is(k, cur[k]);
    }
    for (uint32_t i = 0; i < g_rd.nops; i++) {
        const struct op *op = &g_rd.ops[i];
        uint32_t k = op->key;
        cur[k] = op_result(op);
        if (op->acked)
            acked[k] = cur[k];
        if (found_is(k, cur[k])) {
            ok[k] = 1;
            pick[k] = cur[k];
            if (!op->acked)
                g_tot.inflight_applied++;
        } else if (i < floor) {
            ok[k] = 0; /* older states are gone: this op was made durable */
        }
    }
    for (uint32_t k = 0; k < NKEYS; k++) {
        if (!ok[k]) {
            describe_round(st);
            describe_key(st, k);
            fprintf(stderr, "crash_kill: key %u holds no state it may hold after this crash\n", k);
            CHECK(ok[k]);
        }
    }
    for (uint32_t k = 0; k < NKEYS; k++) {
        behind += pick[k] != acked[k] && pick[k] != cur[k];
        st->model[k] = pick[k];
    }
    if (behind) {
        g_tot.lossy_rounds++;
        g_tot.keys_behind += behind;
    }
}

/*
 * One write sequence: the store equals the model after the round's first P
 * operations for some P >= floor. Counts mismatching keys while applying the
 * ops one by one; the model becomes the state of the largest such P.
 */
static void check_prefix(struct store *st, uint32_t floor)
{
    static uint64_t cur[NKEYS];
    int64_t best = -1;
    uint32_t bad = 0, closest = 0, closest_bad = UINT32_MAX;
    for (uint32_t k = 0; k < NKEYS; k++) {
        cur[k] = st->model[k];
        bad += !found_is(k, cur[k]);
    }
    for (uint32_t i = 0;; i++) {
        if (i >= floor && bad == 0)
            best = i;
        if (i >= floor && bad <= closest_bad) {
            closest = i;
            closest_bad = bad;
        }
        if (i == g_rd.nops)
            break;
        const struct op *op = &g_rd.ops[i];
        uint32_t k = op->key;
        bad -= !found_is(k, cur[k]);
        cur[k] = op_result(op);
        bad += !found_is(k, cur[k]);
    }
    if (best < 0) {
        /* Show how the store differs from the closest allowed prefix. */
        uint32_t shown = 0;
        describe_round(st);
        fprintf(stderr, "  closest prefix: the first %u ops, %u keys differ\n", closest, closest_bad);
        for (uint32_t k = 0; k < NKEYS; k++)
            cur[k] = st->model[k];
        for (uint32_t i = 0; i < closest; i++)
            cur[g_rd.ops[i].key] = op_result(&g_rd.ops[i]);
        for (uint32_t k = 0; k < NKEYS && shown < 4; k++)
            if (!found_is(k, cur[k])) {
                describe_key(st, k);
                shown++;
            }
        fprintf(stderr, "crash_kill: the store is no prefix of the round's writes of at least %u ops\n",
                floor);
        CHECK(best >= 0);
    }
    if ((uint32_t)best < g_rd.nacked) {
        g_tot.lossy_rounds++;
        g_tot.lost_ops += g_rd.nacked - (uint64_t)best;
    }
    if ((uint32_t)best == g_rd.nops && g_rd.nops > g_rd.nacked)
        g_tot.inflight_applied++;
    for (uint32_t i = 0; i < (uint32_t)best; i++)
        st->model[g_rd.ops[i].key] = op_result(&g_rd.ops[i]);
}

static void found_free(void)
{
    for (uint32_t k = 0; k < NKEYS; k++) {
        free(g_found[k].val);
        g_found[k] = (struct found){0};
    }
}

static void check_store(struct store *st, uint64_t *rng)
{
    armdb_options o;
    armdb_stat s;
    armdb_iter *it;
    armdb *db;
    uint64_t live = 0, seen = 0;
    static uint8_t seen_key[NKEYS];
    int writer = t_rand(rng) % 3 == 0, rc;

    store_options(st, &o);
    o.flags = writer ? 0 : ARMDB_RDONLY;
    t_key_options(&o);
    rc = armdb_open(st->path, &o, &db);
    if (rc == -ENOENT && !st->created) {
        /* Killed before the store was created: nothing to find. */
        CHECK(g_rd.nops == 0);
        return;
    }
    CHECK_OK(rc);
    CHECK_OK(armdb_stats(db, &s));
    CHECK(s.shards == st->ph->shards && s.key_len == KEY_LEN);
    if (s.corrupt_entries != 0) {
        fprintf(stderr, "crash_kill: %" PRIu64 " entries counted corrupt after a kill -9\n",
                s.corrupt_entries);
        CHECK(s.corrupt_entries == 0);
    }
    g_tot.torn_bytes += s.torn_bytes;
    if (s.files > g_tot.files_max)
        g_tot.files_max = s.files;

    for (uint32_t k = 0; k < NKEYS; k++) {
        unsigned char key[KEY_LEN];
        size_t vl = 0;
        make_key(k, key);
        rc = armdb_get(db, key, KEY_LEN, g_buf, sizeof g_buf, &vl);
        if (rc == ARMDB_NOTFOUND)
            continue;
        CHECK_OK(rc);
        CHECK(vl <= VAL_MAX);
        g_found[k].present = 1;
        g_found[k].len = vl;
        g_found[k].val = malloc(vl ? vl : 1);
        CHECK(g_found[k].val);
        memcpy(g_found[k].val, g_buf, vl);
        live++;
    }
    g_tot.key_checks += NKEYS;

    /* A full scan agrees with the gets: our keys only, each once. */
    memset(seen_key, 0, sizeof seen_key);
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it));
    for (;;) {
        const void *kp, *vp;
        size_t kl, vl;
        rc = armdb_iter_next(it, &kp, &kl, &vp, &vl);
        if (rc == ARMDB_NOTFOUND)
            break;
        CHECK_OK(rc);
        CHECK(kl == KEY_LEN);
        int idx = key_index(kp);
        CHECK(idx >= 0);
        CHECK(!seen_key[idx]);
        seen_key[idx] = 1;
        CHECK(g_found[idx].present && vl == g_found[idx].len);
        CHECK(vl == 0 || memcmp(vp, g_found[idx].val, vl) == 0);
        seen++;
    }
    armdb_iter_close(it);
    CHECK(seen == live);
    CHECK(armdb_count(db) == live);
    g_tot.scanned += seen;

    switch (st->ph->check) {
    case CHECK_ACKED: check_per_key(st, g_rd.nacked); break;
    case CHECK_PREFIX: check_prefix(st, g_rd.quiet ? g_rd.nacked : g_rd.sync_floor); break;
    case CHECK_PER_KEY: check_per_key(st, g_rd.quiet ? g_rd.nacked : g_rd.sync_floor); break;
    }
    CHECK_OK(armdb_close(db));
    found_free();
}

/* ---- the parent: one round ---- */

static void run_round(struct store *st, uint64_t *rng)
{
    static const uint32_t wbufs[] = {65536, 131072, 1u << 20};
    uint32_t wbuf = wbufs[t_rand(rng) % 3];
    uint32_t interval_ms = 2 + (uint32_t)(t_rand(rng) % 9);
    uint64_t child_rng = t_rand(rng);
    /* Kill plan: after a number of acks, or a delay from the fork (which
     * often lands in recovery) or from the end of the open; now and then in
     * mode interval, well after the child stopped writing. */
    uint64_t plan = t_rand(rng) % 10;
    int interval = st->ph->sync_mode == ARMDB_SYNC_INTERVAL;
    uint32_t stop_acks = 0, max_ops = OPS_CAP;
    int64_t delay_us = -1;
    int from_fork = 0, stopped = 0, quiet = 0, status;
    if (interval && t_rand(rng) % 25 == 0) {
        quiet = 1;
        max_ops = 1 + (uint32_t)(t_rand(rng) % 200);
    } else if (plan < 5) {
        static const uint32_t spans[] = {4, 40, OPS_CAP + 10};
        stop_acks = 1 + (uint32_t)(t_rand(rng) % spans[t_rand(rng) % 3]);
    } else if (plan < 7) {
        from_fork = 1;
        delay_us = (int64_t)(t_rand(rng) % 30000);
    } else {
        delay_us = (int64_t)(t_rand(rng) % (interval ? 8000 : 40000));
    }

    memset(&g_rd, 0, sizeof g_rd);
    g_rd.base = st->next_seq;
    g_rd.max_ops = max_ops;
    g_plen = 0;
    int p[2];
    CHECK(pipe(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        child_run(st, p[1], child_rng, wbuf, interval_ms, max_ops);
        _exit(5);
    }
    g_child = pid;
    close(p[1]);

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
        if (!pump(st, p[0], wait, stop_acks, &stopped)) {
            /* EOF before the kill: the child ended on its own. */
            CHECK(waitpid(pid, &status, 0) == pid);
            g_child = 0;
            fprintf(stderr, "crash_kill: child ended by itself, status 0x%x\n", status);
            CHECK(!"the child was killed");
        }
        if (stopped || g_rd.done)
            break;
    }
    if (quiet && g_rd.done) {
        /* Every acked write has seen a barrier since: all must survive. */
        struct timespec ts = {0, 0};
        int64_t us = QUIET_US + (int64_t)interval_ms * 1000;
        ts.tv_sec = us / 1000000;
        ts.tv_nsec = (long)(us % 1000000) * 1000;
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        g_rd.quiet = 1;
        g_tot.quiet_rounds++;
    }
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(waitpid(pid, &status, 0) == pid);
    g_child = 0;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "crash_kill: child ended with status 0x%x before the kill\n", status);
        CHECK(!"the child was killed");
    }
    /* Records written before the kill count: acked is acked. */
    while (pump(st, p[0], -1, 0, NULL))
        ;
    close(p[0]);

    if (!g_rd.ready)
        g_tot.early_kills++;
    g_tot.rounds++;
    g_tot.acked += g_rd.nacked;
    check_store(st, rng);
    st->next_seq = g_rd.base + g_rd.nops;
}

static void store_start(struct store *st, const struct phase *ph)
{
    st->tmp = t_tmpdir("crash-kill");
    st->path = t_path(st->tmp, "db");
    st->ph = ph;
    memset(st->model, 0, sizeof st->model);
    st->next_seq = 1;
    st->created = 0;
}

static void store_end(struct store *st)
{
    t_rmtree(st->tmp);
    free(st->path);
    free(st->tmp);
    st->tmp = st->path = NULL;
}

static void run_phase(const struct phase *ph, uint64_t rounds, uint64_t *rng)
{
    struct store st;
    uint64_t acked0 = g_tot.acked, lossy0 = g_tot.lossy_rounds;
    int64_t t0 = now_us();
    g_part = ph->name;
    store_start(&st, ph);
    for (uint64_t r = 0; r < rounds; r++) {
        if (r && r % STORE_ROUNDS == 0) {
            store_end(&st);
            store_start(&st, ph);
        }
        g_round++;
        run_round(&st, rng);
    }
    store_end(&st);
    printf("crash_kill: %s: %" PRIu64 " rounds, %" PRIu64 " ops acked, acked writes lost in %" PRIu64
           " rounds, %.1f s\n",
           ph->name, rounds, g_tot.acked - acked0, g_tot.lossy_rounds - lossy0,
           (double)(now_us() - t0) / 1e6);
}

int main(void)
{
    g_seed = t_env_u64("ARMDB_SEED", 5381);
    uint64_t rounds = t_env_u64("ARMDB_CRASH_ROUNDS", DEFAULT_ROUNDS);
    uint64_t rng = g_seed;
    int64_t t0 = now_us();
    atexit(report);
    signal(SIGPIPE, SIG_IGN);

    if (rounds < 4)
        rounds = 4;
    run_phase(&g_phases[0], rounds / 2, &rng);
    run_phase(&g_phases[1], rounds / 4, &rng);
    run_phase(&g_phases[2], rounds - rounds / 2 - rounds / 4, &rng);

    printf("crash_kill: %" PRIu64 " kill -9 rounds (%" PRIu64 " before the open returned), %" PRIu64
           " ops acked, %" PRIu64 " key checks, %" PRIu64 " keys scanned, %" PRIu64 " syncs, %" PRIu64
           " quiet kills; in-flight op found applied %" PRIu64
           " times; acked writes lost (sync interval) in %" PRIu64 " rounds (%" PRIu64
           " ops of one shard, %" PRIu64 " keys of four); %" PRIu64 " torn bytes at open; up to %" PRIu64
           " files; %.1f s, seed %" PRIu64 "\n",
           g_tot.rounds, g_tot.early_kills, g_tot.acked, g_tot.key_checks, g_tot.scanned, g_tot.syncs,
           g_tot.quiet_rounds, g_tot.inflight_applied, g_tot.lossy_rounds, g_tot.lost_ops, g_tot.keys_behind,
           g_tot.torn_bytes, g_tot.files_max, (double)(now_us() - t0) / 1e6, g_seed);
    g_passed = 1;
    return 0;
}
