/*
 * shared.c - several processes on one store (ARMDB_SHARED).
 *
 * - refusals: a shared store and a single writer exclude each other with
 *   ARMDB_LOCKED either way; ARMDB_SHARED with ARMDB_RDONLY, ARMDB_REPLICA
 *   or a key is ARMDB_INVAL; feeds and checkpoints on a shared handle are
 *   refused by name; a read-only open sits beside shared writers.
 * - visibility: a write acknowledged in one process is read at once by
 *   another (handed over a pipe, key by key, with values across file
 *   rotations and deletes); compare-and-set increments from three
 *   processes add up exactly; a batch over two shards is seen whole or
 *   not at all by a reader in another process; counts agree.
 * - kill: writer processes are killed over and over while they put,
 *   delete and write batches: half of the kills by SIGKILL at a random
 *   moment, half inside a write (a fault that writes half of the bytes
 *   and kills the process there, with its shard's lock held). After each
 *   kill the parent's own handle (which stays open throughout) finds every
 *   acknowledged write, the one announced but unacknowledged write as
 *   either state, each batch whole or absent, and nothing else; the
 *   repairs are counted. Compaction runs in whatever process the
 *   background picks, and by armdb_compact in the parent, so kills land
 *   in it too. At the end a fresh process attaches and checks all keys,
 *   and after every process closed the store opens as a single writer
 *   with every file hinted and nothing torn or corrupt, and checks again.
 * - compact: a process compacts while another writes and reads; the
 *   reader's values stay right, it drops the removed files, and both see
 *   the same set of files.
 * - behind: a process stopped while the others rotate more files than the
 *   region keeps events for loads those shards again from their files on
 *   its next calls, and reads every value right, old and new.
 */
#include "test.h"

#include "fault.h"

#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define KEY_LEN 16
#define SHARDS 4
#define MAX_FILE 65536
#define SLOTS 3
#define SLOT_KEYS 150
#define NKEYS (SLOTS * SLOT_KEYS)
#define VAL_MAX 2000
#define REGION_EVENTS 256 /* events the region keeps per shard (SHM_EVENTS) */

static char *g_dir, *g_store;

static void key_of(uint32_t i, uint8_t *k)
{
    memset(k, 0, KEY_LEN);
    memcpy(k, "key-", 4);
    memcpy(k + 4, &i, 4);
}

/* The value of key i at state seq: seq, then bytes of (i, seq). */
static size_t val_of(uint32_t i, uint64_t seq, uint8_t *v)
{
    size_t n = 8 + t_mix(i, seq) % VAL_MAX;
    memcpy(v, &seq, 8);
    t_fill(t_mix(seq, i), v + 8, n - 8);
    return n;
}

/* Key i's state: its seq, 0 if absent; exits on a value that is no state
 * of the key's. */
static uint64_t state_of(armdb *db, uint32_t i)
{
    uint8_t k[KEY_LEN], v[8 + VAL_MAX], want[8 + VAL_MAX];
    size_t vlen;
    key_of(i, k);
    int rc = armdb_get(db, k, KEY_LEN, v, sizeof v, &vlen);
    if (rc == ARMDB_NOTFOUND)
        return 0;
    CHECK_OK(rc);
    CHECK(vlen >= 8);
    uint64_t seq;
    memcpy(&seq, v, 8);
    size_t n = val_of(i, seq, want);
    if (vlen != n || memcmp(v, want, n) != 0) {
        fprintf(stderr, "key %u: value of %zu bytes is not state %llu's\n", i, vlen, (unsigned long long)seq);
        exit(1);
    }
    return seq;
}

static armdb *open_shared(uint32_t extra)
{
    armdb_options o;
    armdb *db = NULL;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = SHARDS;
    o.max_file_size = MAX_FILE;
    o.flags = ARMDB_CREATE | ARMDB_SHARED | extra;
    CHECK_OK(armdb_open(g_store, &o, &db));
    return db;
}

/* fork() with no handle of this process open: a handle's threads would
 * be copied in the middle of whatever they do (a sanitizer's allocator
 * lock held by one of them deadlocks the child). *p is closed first;
 * the caller opens it again where it needs it. */
static pid_t fork_bare(armdb **p)
{
    if (*p) {
        CHECK_OK(armdb_close(*p));
        *p = NULL;
    }
    pid_t pid = fork();
    CHECK(pid >= 0);
    return pid;
}

static void put_state(armdb *db, uint32_t i, uint64_t seq)
{
    uint8_t k[KEY_LEN], v[8 + VAL_MAX];
    key_of(i, k);
    size_t n = val_of(i, seq, v);
    CHECK_OK(armdb_put(db, k, KEY_LEN, v, n));
}

static void fresh_store(const char *tag)
{
    if (g_dir)
        t_rmtree(g_dir);
    free(g_dir);
    free(g_store);
    g_dir = t_tmpdir(tag);
    g_store = t_path(g_dir, "db");
}

static void wait_ok(pid_t pid)
{
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "child %d failed (status 0x%x)\n", (int)pid, st);
        exit(1);
    }
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- refusals ---- */

static void test_refusals(void)
{
    fresh_store("shared-refuse");
    armdb *a = open_shared(0);
    armdb_options o;
    armdb *b = NULL;
    armdb_options_init(&o);
    CHECK_RC(armdb_open(g_store, &o, &b), ARMDB_LOCKED); /* a single writer */
    CHECK(strstr(armdb_errmsg(), "locked") != NULL);
    o.flags = ARMDB_RDONLY;
    CHECK_OK(armdb_open(g_store, &o, &b)); /* readers coexist */
    CHECK_OK(armdb_close(b));
    o.flags = ARMDB_SHARED | ARMDB_RDONLY;
    CHECK_RC(armdb_open(g_store, &o, &b), ARMDB_INVAL);
    o.flags = ARMDB_SHARED | ARMDB_REPLICA;
    CHECK_RC(armdb_open(g_store, &o, &b), ARMDB_INVAL);
    static const unsigned char key[32] = "a key for a store never created";
    o.flags = ARMDB_SHARED;
    o.encryption_key = key;
    CHECK_RC(armdb_open(g_store, &o, &b), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "encrypted") != NULL);
    armdb_changes *c;
    CHECK_RC(armdb_changes_open(a, 0, 0, &c), ARMDB_INVAL);
    CHECK(strstr(armdb_errmsg(), "change feeds") != NULL);
    char *dest = t_path(g_dir, "cp");
    uint64_t gsn;
    CHECK_RC(armdb_checkpoint_run(a, dest, 0, &gsn), ARMDB_INVAL);
    free(dest);
    armdb_stat st;
    CHECK_OK(armdb_stats(a, &st));
    CHECK(st.shared == 1 && st.direct_io == 0);
    CHECK_OK(armdb_close(a));
    /* Now the single writer holds it: a shared open is refused. */
    armdb_options_init(&o);
    CHECK_OK(armdb_open(g_store, &o, &b));
    armdb_options_init(&o);
    o.flags = ARMDB_SHARED;
    CHECK_RC(armdb_open(g_store, &o, &a), ARMDB_LOCKED);
    CHECK(strstr(armdb_errmsg(), "not in shared mode") != NULL);
    CHECK_OK(armdb_close(b));
    printf("refusals: ok\n");
}

/* ---- visibility ---- */

#define HANDOVER 600

static void test_visibility(void)
{
    fresh_store("shared-vis");
    armdb *p = open_shared(ARMDB_ORDERED); /* (the others open it as it is) */
    int fds[2], acks[2];
    CHECK(pipe(fds) == 0 && pipe(acks) == 0);
    pid_t w = fork_bare(&p);
    if (w == 0) {
        close(fds[0]);
        close(acks[1]);
        armdb *db = open_shared(0);
        for (uint32_t i = 0; i < HANDOVER; i++) {
            put_state(db, i, 1000 + i);
            if (i % 5 == 4) { /* and a delete of an earlier key */
                uint8_t k[KEY_LEN];
                key_of(i - 2, k);
                CHECK_OK(armdb_delete(db, k, KEY_LEN));
            }
            CHECK(write(fds[1], &i, 4) == 4);
            char b;
            CHECK(read(acks[0], &b, 1) == 1); /* the reader saw it */
        }
        CHECK_OK(armdb_close(db));
        _exit(0);
    }
    close(fds[1]);
    pid_t r = fork_bare(&p);
    if (r == 0) {
        close(acks[0]);
        armdb *db = open_shared(0);
        uint32_t i, n = 0;
        while (read(fds[0], &i, 4) == 4) {
            /* Acknowledged in the writer before it told us: here at once. */
            uint64_t got = state_of(db, i);
            CHECK(got == 1000 + i);
            if (i % 5 == 4)
                CHECK(state_of(db, i - 2) == 0);
            char b = 1;
            CHECK(write(acks[1], &b, 1) == 1);
            n++;
        }
        CHECK(n == HANDOVER);
        /* Pages of the active file that the head has passed are final: the
         * block cache keeps them, and a second pass reads from it. */
        for (int pass = 0; pass < 2; pass++)
            for (i = 0; i < HANDOVER; i++)
                CHECK(state_of(db, i) == (i % 5 == 2 && i + 2 < HANDOVER ? 0 : 1000 + i));
        armdb_stat st;
        CHECK_OK(armdb_stats(db, &st));
        CHECK(st.cache_hits > 0);
        CHECK(st.rotations == 0 && st.shared_applied >= HANDOVER);
        CHECK_OK(armdb_close(db));
        _exit(0);
    }
    close(fds[0]);
    close(acks[0]);
    close(acks[1]);
    wait_ok(w);
    wait_ok(r);
    p = open_shared(0);
    armdb_stat st;
    CHECK_OK(armdb_stats(p, &st));
    CHECK(st.files > SHARDS); /* the writer's files rotated */
    CHECK(armdb_count(p) == HANDOVER - HANDOVER / 5);

    /* Compare-and-set increments from three processes add up. */
    enum { INCS = 300 };
    uint8_t ck[KEY_LEN];
    memset(ck, 0xcc, KEY_LEN);
    uint64_t zero = 0;
    CHECK_OK(armdb_put(p, ck, KEY_LEN, &zero, 8));
    pid_t kids[3];
    for (int c = 0; c < 3; c++) {
        if ((kids[c] = fork_bare(&p)) == 0) {
            armdb *db = open_shared(0);
            for (int n = 0; n < INCS;) {
                uint64_t cur, next;
                size_t vl;
                CHECK_OK(armdb_get(db, ck, KEY_LEN, &cur, 8, &vl));
                next = cur + 1;
                int rc = armdb_cas(db, ck, KEY_LEN, &cur, 8, &next, 8);
                if (rc == ARMDB_CONFLICT)
                    continue;
                CHECK_OK(rc);
                n++;
            }
            CHECK_OK(armdb_close(db));
            _exit(0);
        }
    }
    for (int c = 0; c < 3; c++)
        wait_ok(kids[c]);
    p = open_shared(0);
    uint64_t total;
    size_t vl;
    CHECK_OK(armdb_get(p, ck, KEY_LEN, &total, 8, &vl));
    CHECK(total == 3 * INCS);

    /* A batch over two shards, read by another process: whole or not. */
    uint8_t ka[KEY_LEN], kb[KEY_LEN];
    uint32_t ia = 5000, ib = 5001;
    key_of(ia, ka);
    key_of(ib, kb);
    int go[2];
    CHECK(pipe(go) == 0);
    pid_t bw = fork_bare(&p);
    if (bw == 0) {
        armdb *db = open_shared(0);
        char b;
        CHECK(read(go[0], &b, 1) == 1); /* the reader reads by now */
        for (uint64_t s = 1; s <= 400; s++) {
            if (s > 1)
                usleep(1000); /* so that the reader sees many states, whatever the load */
            uint8_t va[8 + VAL_MAX], vb[8 + VAL_MAX];
            size_t na = val_of(ia, s, va), nb = val_of(ib, s, vb);
            armdb_op ops[2] = {{.type = ARMDB_OP_PUT, .key = ka, .klen = KEY_LEN, .val = va, .vlen = na},
                               {.type = ARMDB_OP_PUT, .key = kb, .klen = KEY_LEN, .val = vb, .vlen = nb}};
            CHECK_OK(armdb_batch(db, ops, 2));
        }
        CHECK_OK(armdb_close(db));
        _exit(0);
    }
    p = open_shared(0);
    char b = 1;
    CHECK(write(go[1], &b, 1) == 1);
    uint64_t seen = 0, changes = 0, t0 = now_us();
    while (seen < 400 && now_us() - t0 < 60000000u) {
        /* b first: a may only be as new or newer. */
        uint64_t sb = state_of(p, ib), sa = state_of(p, ia);
        CHECK(sa >= sb);
        changes += sb > seen;
        if (sb > seen)
            seen = sb;
    }
    CHECK(seen == 400 && changes > 1);
    wait_ok(bw);
    CHECK(state_of(p, ia) == 400 && state_of(p, ib) == 400);
    /* The ordered index follows the others' writes: a scan (and a
     * snapshot) finds every key, in order, with its value. */
    for (int snap = 0; snap < 2; snap++) {
        armdb_iter *it;
        CHECK_OK(armdb_iter_open(p, NULL, 0, NULL, 0, snap ? ARMDB_ITER_SNAPSHOT : 0, &it));
        const void *k, *v;
        size_t kl, vlen;
        uint64_t n = 0;
        uint8_t last[KEY_LEN] = {0};
        while (armdb_iter_next(it, &k, &kl, &v, &vlen) == 0) {
            CHECK(kl == KEY_LEN && (n == 0 || memcmp(last, k, KEY_LEN) < 0));
            memcpy(last, k, KEY_LEN);
            n++;
        }
        armdb_iter_close(it);
        CHECK(n == armdb_count(p) && n == HANDOVER - HANDOVER / 5 + 3);
    }
    CHECK_OK(armdb_close(p));
    printf("visibility: ok (%llu batch states seen)\n", (unsigned long long)changes);
}

/* ---- kill ---- */

enum { R_PUT = 1, R_DEL, R_BATCH, R_ACK };
struct rec {
    uint32_t kind, key, key2, pad;
    uint64_t seq;
};

struct kstate {
    uint64_t acked;   /* state acknowledged last (0: absent) */
    uint64_t pending; /* announced after it, not acknowledged (UINT64_MAX: none) */
};
static struct kstate model[NKEYS];

/* A writer of slot s: keys [s * SLOT_KEYS, (s + 1) * SLOT_KEYS), states
 * seq0, seq0 + SLOTS, ... (so slots never share a state number). */
static void writer(int fd, uint32_t slot, uint64_t seq0, uint64_t rng, uint64_t kill_nth)
{
    armdb *db = open_shared(0);
    if (kill_nth)
        armdb_fault_arm(FAULT_WRITE, kill_nth, ARMDB_FAULT_KILL, 0);
    uint64_t seq = seq0;
    for (int op = 0; op < 5000; op++, seq += SLOTS) {
        uint32_t a = slot * SLOT_KEYS + (uint32_t)(t_rand(&rng) % SLOT_KEYS);
        uint32_t b = slot * SLOT_KEYS + (uint32_t)(t_rand(&rng) % SLOT_KEYS);
        unsigned dice = (unsigned)(t_rand(&rng) % 100);
        struct rec r = {.key = a, .key2 = b, .seq = seq};
        uint8_t k[KEY_LEN], k2[KEY_LEN], v[8 + VAL_MAX], v2[8 + VAL_MAX];
        key_of(a, k);
        key_of(b, k2);
        int rc;
        if (dice < 15) {
            r.kind = R_DEL;
            CHECK(write(fd, &r, sizeof r) == sizeof r);
            rc = armdb_delete(db, k, KEY_LEN);
            if (rc == ARMDB_NOTFOUND)
                rc = 0;
        } else if (dice < 30 && a != b) {
            r.kind = R_BATCH;
            CHECK(write(fd, &r, sizeof r) == sizeof r);
            size_t na = val_of(a, seq, v), nb = val_of(b, seq, v2);
            armdb_op ops[2] = {{.type = ARMDB_OP_PUT, .key = k, .klen = KEY_LEN, .val = v, .vlen = na},
                               {.type = ARMDB_OP_PUT, .key = k2, .klen = KEY_LEN, .val = v2, .vlen = nb}};
            rc = armdb_batch(db, ops, 2);
        } else {
            r.kind = R_PUT;
            CHECK(write(fd, &r, sizeof r) == sizeof r);
            size_t n = val_of(a, seq, v);
            rc = armdb_put(db, k, KEY_LEN, v, n);
        }
        CHECK_OK(rc);
        r.kind = R_ACK;
        CHECK(write(fd, &r, sizeof r) == sizeof r);
    }
    pause(); /* to be killed */
    _exit(0);
}

/* Apply what a dead writer reported; its last announced op stays pending. */
static void drain(int fd, uint64_t *next_seq)
{
    struct rec r, last = {0};
    bool open_op = false;
    while (read(fd, &r, sizeof r) == sizeof r) {
        if (r.kind == R_ACK) {
            uint64_t st = last.kind == R_DEL ? 0 : last.seq;
            model[last.key].acked = st;
            model[last.key].pending = UINT64_MAX;
            if (last.kind == R_BATCH) {
                model[last.key2].acked = st;
                model[last.key2].pending = UINT64_MAX;
            }
            open_op = false;
        } else {
            last = r;
            open_op = true;
        }
        if (r.seq + SLOTS > *next_seq)
            *next_seq = r.seq + SLOTS;
    }
    if (open_op) {
        model[last.key].pending = last.kind == R_DEL ? 0 : last.seq;
        if (last.kind == R_BATCH)
            model[last.key2].pending = last.seq;
    }
}

/* Every key is in its acknowledged or its pending state; a pending batch
 * is whole or absent. Pending states found become acknowledged. */
static void check_model(armdb *db, uint32_t lo, uint32_t hi)
{
    for (uint32_t i = lo; i < hi; i++) {
        uint64_t s = state_of(db, i);
        struct kstate *m = &model[i];
        if (s != m->acked && s != m->pending) {
            fprintf(stderr, "key %u: state %llu, acknowledged %llu, pending %llu\n", i, (unsigned long long)s,
                    (unsigned long long)m->acked, (unsigned long long)m->pending);
            exit(1);
        }
    }
    for (uint32_t i = lo; i < hi; i++) {
        struct kstate *m = &model[i];
        if (m->pending == UINT64_MAX)
            continue;
        uint64_t s = state_of(db, i);
        /* A batch's other key (same pending seq) agrees. */
        for (uint32_t j = lo; j < hi && m->pending; j++)
            if (j != i && model[j].pending == m->pending)
                CHECK((state_of(db, j) == m->pending) == (s == m->pending));
    }
    for (uint32_t i = lo; i < hi; i++) {
        if (model[i].pending != UINT64_MAX)
            model[i].acked = state_of(db, i);
        model[i].pending = UINT64_MAX;
    }
}

static void test_kill(uint64_t seed, int rounds)
{
    fresh_store("shared-kill");
    memset(model, 0, sizeof model);
    for (uint32_t i = 0; i < NKEYS; i++)
        model[i].pending = UINT64_MAX;
    armdb *p = open_shared(0);
    uint64_t rng = seed, next_seq[SLOTS];
    pid_t pid[SLOTS];
    bool armed[SLOTS];
    int rfd[SLOTS];
    for (uint32_t s = 0; s < SLOTS; s++)
        next_seq[s] = 1 + s;
    int in_write = 0, fault_kills = 0;
    uint64_t compactions = 0;
    for (int round = 0; round < rounds; round++) {
        for (uint32_t s = 0; s < SLOTS; s++) {
            int fds[2];
            CHECK(pipe(fds) == 0);
            /* Half the writers carry a fault that kills them in a write. */
            uint64_t nth = t_rand(&rng) % 2 ? 1 + t_rand(&rng) % 60 : 0;
            armed[s] = nth != 0;
            uint64_t wseed = t_rand(&rng);
            if ((pid[s] = fork_bare(&p)) == 0) {
                close(fds[0]);
                writer(fds[1], s, next_seq[s], wseed, nth);
            }
            close(fds[1]);
            rfd[s] = fds[0];
        }
        p = open_shared(0);
        if (round % 5 == 2)
            CHECK_OK(armdb_compact(p)); /* beside the writers */
        uint64_t until = now_us() + 5000 + t_rand(&rng) % 40000;
        while (now_us() < until)
            usleep(1000);
        for (uint32_t s = 0; s < SLOTS; s++) {
            int st;
            /* An armed writer dies at its fault (it writes until then). */
            bool dead = false;
            for (int t = 0; t < (armed[s] ? 3000 : 1) && !dead; t++)
                if (!(dead = waitpid(pid[s], &st, WNOHANG) == pid[s]) && armed[s])
                    usleep(1000);
            if (!dead) {
                kill(pid[s], SIGKILL);
                CHECK(waitpid(pid[s], &st, 0) == pid[s]);
            }
            CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL); /* no writer fails */
            fault_kills += dead;
            drain(rfd[s], &next_seq[s]);
            close(rfd[s]);
        }
        check_model(p, 0, NKEYS);
        armdb_stat st;
        CHECK_OK(armdb_stats(p, &st));
        in_write += (int)st.shared_repairs; /* (this round's region: the last close removes it) */
        compactions += st.compactions;
    }
    /* A fresh process attaches and finds the same. */
    pid_t c = fork_bare(&p);
    if (c == 0) {
        armdb *db = open_shared(0);
        for (uint32_t i = 0; i < NKEYS; i++)
            CHECK(state_of(db, i) == model[i].acked);
        CHECK_OK(armdb_close(db));
        _exit(0);
    }
    wait_ok(c);
    /* The last one out sealed the files: a single writer opens them all by
     * their hints, and nothing is torn or damaged. */
    armdb_options o;
    armdb_options_init(&o);
    armdb *db;
    CHECK_OK(armdb_open(g_store, &o, &db));
    armdb_stat s2;
    CHECK_OK(armdb_stats(db, &s2));
    for (uint32_t i = 0; i < NKEYS; i++)
        CHECK(state_of(db, i) == model[i].acked);
    CHECK(s2.corrupt_entries == 0);
    CHECK_OK(armdb_close(db));
    printf(
        "kill: ok (%d rounds, %d writers died in a write, %d repairs, %llu compactions in the parent, %llu "
        "files scanned at the reopen, %llu torn bytes cut)\n",
        rounds, fault_kills, in_write, (unsigned long long)compactions, (unsigned long long)s2.files_scanned,
        (unsigned long long)s2.torn_bytes);
    CHECK(fault_kills > 0 && in_write > 0);
}

/* ---- compact ---- */

static void test_compact(void)
{
    fresh_store("shared-compact");
    armdb *p = open_shared(ARMDB_NO_AUTO_COMPACT);
    for (uint32_t r = 1; r <= 8; r++)
        for (uint32_t i = 0; i < 300; i++)
            put_state(p, i, r * 1000 + i);
    int go[2], done[2];
    CHECK(pipe(go) == 0 && pipe(done) == 0);
    pid_t c = fork_bare(&p);
    if (c == 0) {
        armdb *db = open_shared(ARMDB_NO_AUTO_COMPACT);
        for (uint32_t i = 0; i < 300; i++)
            CHECK(state_of(db, i) == 8000 + i);
        char b = 1;
        CHECK(write(done[1], &b, 1) == 1);
        CHECK(read(go[0], &b, 1) == 1); /* the parent compacted meanwhile */
        for (uint32_t i = 0; i < 300; i++)
            CHECK(state_of(db, i) == 8000 + i);
        put_state(db, 7, 99);
        armdb_stat st;
        CHECK_OK(armdb_stats(db, &st));
        CHECK(write(done[1], &st.files, 8) == 8);
        CHECK_OK(armdb_close(db));
        _exit(0);
    }
    p = open_shared(ARMDB_NO_AUTO_COMPACT);
    char b;
    CHECK(read(done[0], &b, 1) == 1);
    armdb_stat before, after;
    CHECK_OK(armdb_stats(p, &before));
    CHECK_OK(armdb_compact(p));
    CHECK_OK(armdb_stats(p, &after));
    CHECK(after.compactions > 0 && after.files < before.files);
    CHECK(write(go[1], &b, 1) == 1);
    uint64_t child_files;
    CHECK(read(done[0], &child_files, 8) == 8);
    wait_ok(c);
    CHECK(state_of(p, 7) == 99);
    CHECK_OK(armdb_stats(p, &after));
    CHECK(child_files == after.files);
    /* The removed files are gone from the disk. */
    uint64_t on_disk = 0;
    for (unsigned s = 0; s < SHARDS; s++) {
        char sub[8];
        snprintf(sub, sizeof sub, "%03x", s);
        char *path = t_path(g_store, sub);
        DIR *d = opendir(path);
        CHECK(d);
        struct dirent *e;
        while ((e = readdir(d)))
            on_disk += t_file_id(e->d_name, "data") > 0;
        closedir(d);
        free(path);
    }
    CHECK(on_disk == after.files);
    CHECK_OK(armdb_close(p));
    printf("compact: ok (%llu files before, %llu after)\n", (unsigned long long)before.files,
           (unsigned long long)after.files);
}

/* ---- behind ---- */

static void test_behind(void)
{
    fresh_store("shared-behind");
    armdb *p = open_shared(ARMDB_NO_AUTO_COMPACT);
    put_state(p, 1, 1);
    int ready[2], go[2];
    CHECK(pipe(ready) == 0 && pipe(go) == 0);
    pid_t c = fork_bare(&p);
    if (c == 0) {
        armdb *db = open_shared(ARMDB_NO_AUTO_COMPACT);
        CHECK(state_of(db, 1) == 1);
        char b = 1;
        CHECK(write(ready[1], &b, 1) == 1);
        CHECK(read(go[0], &b, 1) == 1);
        /* The others rotated past what the region remembers meanwhile:
         * every key reads right all the same. */
        uint32_t last;
        CHECK(read(go[0], &last, 4) == 4);
        for (uint32_t j = 100; j < 2100; j++) {
            uint64_t want = 0;
            for (uint32_t i = 100; i < last; i++) /* the parent's last write of key j */
                if (i % 2000 + 100 == j)
                    want = i;
            CHECK(state_of(db, j) == want);
        }
        CHECK(state_of(db, 1) == 2);
        armdb_stat st;
        CHECK_OK(armdb_stats(db, &st));
        CHECK(st.shared_reloads > 0);
        CHECK_OK(armdb_close(db));
        _exit(0);
    }
    p = open_shared(ARMDB_NO_AUTO_COMPACT);
    char b;
    CHECK(read(ready[0], &b, 1) == 1);
    kill(c, SIGSTOP);
    armdb_stat st;
    uint32_t i = 100;
    do {
        put_state(p, i % 2000 + 100, i);
        i++;
        CHECK_OK(armdb_stats(p, &st));
    } while (st.rotations < REGION_EVENTS * SHARDS * 3 / 2); /* one shard surely past */
    put_state(p, 1, 2);
    kill(c, SIGCONT);
    CHECK(write(go[1], &b, 1) == 1 && write(go[1], &i, 4) == 4);
    wait_ok(c);
    CHECK_OK(armdb_close(p));
    printf("behind: ok\n");
}

int main(void)
{
    uint64_t seed = t_env_u64("ARMDB_SEED", (uint64_t)time(NULL));
    int rounds = (int)t_env_u64("ARMDB_SHARED_ROUNDS", 30);
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("seed %llu\n", (unsigned long long)seed);
    signal(SIGPIPE, SIG_IGN);
    test_refusals();
    test_visibility();
    test_compact();
    test_kill(seed, rounds);
    test_behind();
    t_rmtree(g_dir);
    free(g_dir);
    free(g_store);
    return 0;
}
